"""The deployment examples in deploy/ agree with the code (no Docker engine or cluster here).

A misspelt variable in a compose file or a manifest is ignored by pydantic-settings and
silently falls back to a default, so every name is checked against the settings, every value
is loaded through them, and the probes, ports and grace periods are checked against what the
server serves. HAProxy's configuration is checked by HAProxy itself.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatscale.config import Settings, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PORT = 3080


def _known(name: str) -> bool:
    return name.lower() in Settings.model_fields


def _load_with(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_compose_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services: dict[str, Any] = compose["services"]
    instances = {n: s for n, s in services.items() if "build" in s}
    assert len(instances) >= 3
    for name, service in instances.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        unknown = [k for k in env if not _known(k)]
        assert not unknown, f"{name}: not chatscale settings: {unknown}"
        settings = _load_with(env, monkeypatch)
        assert settings.redis is not None, f"{name} must run on Redis"
        # Conversations in the compose file's PostgreSQL, with the password it sets.
        assert settings.database is not None and settings.database.dialect == "postgresql"
        database = services["postgres"]["environment"]
        assert (
            f"{database['POSTGRES_USER']}:{database['POSTGRES_PASSWORD']}@postgres:5432/"
            f"{database['POSTGRES_DB']}" in settings.database.url
        )
        # Compose waits stop_grace_period before SIGKILL: the drain must fit in it.
        grace = int(str(service["stop_grace_period"]).rstrip("s"))
        assert settings.stream_drain_timeout < grace
        assert f":{PORT}/readyz" in " ".join(service["healthcheck"]["test"])
    lb = services["lb"]
    assert "./haproxy.cfg" in lb["volumes"][0]
    for name in instances:
        assert f"server {name} {name}:{PORT}" in (DEPLOY / "haproxy.cfg").read_text()


def test_kubernetes_manifests_match_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "chatscale.yaml").read_text())]
    by_kind = {d["kind"]: d for d in docs}
    secret = by_kind["Secret"]["stringData"]
    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    unknown = [k for k in [*env, *secret] if not _known(k)]
    assert not unknown, f"not chatscale settings: {unknown}"
    settings = _load_with({**env, **secret}, monkeypatch)
    assert settings.redis is not None and settings.session_secret
    assert settings.stream_drain_timeout < pod["terminationGracePeriodSeconds"]
    assert container["ports"][0]["containerPort"] == PORT
    assert str(PORT) in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = by_kind["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    redis_docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "redis.yaml").read_text()))
    redis_service = next(d for d in redis_docs if d["kind"] == "Service")
    assert f"redis://{redis_service['metadata']['name']}:6379" == env["REDIS_URI"]


def test_dockerfile_serves_on_the_probed_port() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert '".[server]"' in text
    assert f"EXPOSE {PORT}" in text
    assert f'"chatscale", "serve", "--host", "0.0.0.0", "--port", "{PORT}"' in text


def test_haproxy_accepts_its_configuration(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (scripts/test installs Debian's haproxy)")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
