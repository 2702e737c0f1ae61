"""Three ``chatscale serve`` instances on Redis behind HAProxy, for the multi-instance tests
and the h3 benchmark. Loopback only; every process is stopped at the end."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.server.helpers import free_port
from tests.server.procs import ServeProcess

SECRET = "multi-instance-test-secret-0123456789abcdef"

HAPROXY_CFG = """
global
    maxconn 8000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-keep-alive 5s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
frontend chat
    bind 127.0.0.1:{port}
    default_backend chatscale
backend chatscale
    balance {balance}
    option httpchk GET /readyz
    http-check expect status 200
    timeout check 2s
    default-server inter 500ms fall 2 rise 2
{servers}
"""


def haproxy_path() -> str | None:
    """The haproxy binary, if installed."""
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


class Rig:
    """``instances`` servers sharing one Redis (and prefix), and HAProxy in front."""

    def __init__(
        self,
        redis_uri: str,
        workdir: Path,
        env: dict[str, str],
        instances: int = 3,
        balance: str = "roundrobin",
    ) -> None:
        self.workdir = workdir
        self.balance = balance
        self.env = {
            "USE_REDIS": "true",
            "REDIS_URI": redis_uri,
            "REDIS_KEY_PREFIX": f"rig{uuid.uuid4().hex[:8]}",
            "SESSION_SECRET": SECRET,
            "STREAM_LEASE_TTL": "1500",
            "STREAM_DRAIN_TIMEOUT": "5",
            "CHAT_RATE_LIMIT": "1000/minute",
            "CHAT_CONCURRENCY_LIMIT": "0",
            "SESSION_CREATE_LIMIT": "100000/minute",
            # Conversations on Redis unless the test passes a DATABASE_URL (PostgreSQL).
            "DATABASE_URL": "",
            **env,
        }
        self.servers = [ServeProcess(self.env, workdir / f"serve{i}.log") for i in range(instances)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._haproxy: subprocess.Popen[bytes] | None = None

    def start(self) -> Rig:
        """Start every instance, then HAProxy; wait until a request passes through."""
        try:
            self._start()
        except BaseException:
            self.stop()  # never leave processes behind
            raise
        return self

    def _start(self) -> None:
        for server in self.servers:
            server.start(wait=False)
        for server in self.servers:
            server.wait_ready()
        servers = "\n".join(
            f"    server s{i} 127.0.0.1:{s.port} check" for i, s in enumerate(self.servers)
        )
        config = self.workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CFG.format(port=self.port, servers=servers, balance=self.balance))
        binary = haproxy_path()
        assert binary is not None
        with (self.workdir / "haproxy.log").open("ab") as log:
            self._haproxy = subprocess.Popen(
                [binary, "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("haproxy did not come up: " + (self.workdir / "haproxy.log").read_text())

    def by_instance(self, instance_id: str) -> ServeProcess:
        """The process whose /readyz reports ``instance_id``."""
        for server in self.servers:
            try:
                found = httpx.get(f"{server.url}/readyz", timeout=2).json().get("instance")
            except httpx.HTTPError:
                continue
            if found == instance_id:
                return server
        raise LookupError(instance_id)

    def stop(self) -> None:
        """Stop HAProxy and every instance."""
        if self._haproxy is not None and self._haproxy.poll() is None:
            self._haproxy.terminate()
            try:
                self._haproxy.wait(5)
            except subprocess.TimeoutExpired:
                self._haproxy.kill()
                self._haproxy.wait(5)
        for server in self.servers:
            server.kill()
