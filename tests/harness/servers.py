"""Real ``redis-server`` / sentinel processes on free loopback ports.

Plain Python (no pytest dependency) so that it can also be used from scripts:

    with tempfile.TemporaryDirectory() as tmp:
        server = start_standalone(Path(tmp))
        try:
            print(server.url())
        finally:
            server.stop()

Every process is started in its own session (so a Ctrl-C in the terminal does
not kill it behind the harness's back), is registered for an ``atexit`` kill,
and — when started from the main thread on Linux — gets a parent-death signal
so that it does not outlive a crashed or SIGKILLed test run.

Only 127.0.0.1 is ever bound or connected to.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from .tls import TLSFiles

__all__ = [
    "CLUSTER_SLOTS",
    "LOOPBACK",
    "AclRedisServer",
    "ClusterHandle",
    "HarnessError",
    "RedisServer",
    "SentinelHandle",
    "ToolMissingError",
    "acl_password_rule",
    "app_acl_rules",
    "free_port",
    "iter_logs",
    "kill_all_children",
    "missing_tools",
    "start_acl_server",
    "start_cluster",
    "start_sentinel",
    "start_standalone",
    "stop_all",
]

LOOPBACK = "127.0.0.1"
CLUSTER_SLOTS = 16384
#: Offset of the cluster bus port from the client port (fixed in Redis).
CLUSTER_BUS_OFFSET = 10000

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 15.0
CLUSTER_CREATE_TIMEOUT_S = 60.0
TOPOLOGY_TIMEOUT_S = 30.0
#: How long one ``SENTINEL FAILOVER`` is waited for before the harness asks whether Sentinel
#: gave it up (its failover-timeout, 5 s here, plus the switch's own seconds).
_FAILOVER_ATTEMPT_S = 12.0
_POLL_S = 0.05
_START_ATTEMPTS = 4

Directive = tuple[str, ...]


class HarnessError(RuntimeError):
    """A server or topology could not be started, or did not converge in time."""


class ToolMissingError(HarnessError):
    """A required executable (redis-server, redis-cli, openssl) is not on PATH."""


def missing_tools(*names: str) -> list[str]:
    """Names among ``names`` that are not found on PATH."""
    return [name for name in names if shutil.which(name) is None]


def _exe(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{name} is not installed (not found on PATH)")
    return path


# --------------------------------------------------------------------------
# Child process bookkeeping
# --------------------------------------------------------------------------

_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def kill_all_children() -> None:
    """SIGKILL every process this harness started that is still running.

    Registered with ``atexit``; safe to call at any time.
    """
    with _children_lock:
        procs = list(_children.values())
        _children.clear()
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)


atexit.register(kill_all_children)


def _forget(proc: subprocess.Popen[bytes]) -> None:
    with _children_lock:
        _children.pop(proc.pid, None)


_pdeathsig_prefix_cache: list[list[str]] = []


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when available (util-linux, Linux only)."""
    if not _pdeathsig_prefix_cache:
        prefix: list[str] = []
        setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
        if setpriv is not None:
            try:
                helptext = subprocess.run(
                    [setpriv, "--help"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                helptext = ""
            if "--pdeathsig" in helptext:
                prefix = [setpriv, "--pdeathsig", "KILL", "--"]
        _pdeathsig_prefix_cache.append(prefix)
    return _pdeathsig_prefix_cache[0]


def _spawn(
    argv: list[str], cwd: Path, output: Path, setpriv_options: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a registered child; ``setpriv_options`` (e.g. ``--reuid``) run it
    as another user, in the same ``setpriv`` as the parent-death signal: a change of user
    after it would clear that signal."""
    # The parent-death signal fires when the *thread* that forked exits, so it
    # is only safe for processes started from the main thread.
    prefix = _pdeathsig_prefix() if threading.current_thread() is threading.main_thread() else []
    if setpriv_options:
        prefix = (
            [*prefix[:-1], *setpriv_options, "--"]
            if prefix
            else [_exe("setpriv"), *setpriv_options, "--"]
        )
    with output.open("ab") as out:
        proc = subprocess.Popen(
            [*prefix, *argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with _children_lock:
        _children[proc.pid] = proc
    return proc


# --------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------

_reserved_ports: set[int] = set()
_ports_lock = threading.Lock()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # redis-server sets SO_REUSEADDR too; without it a port in TIME_WAIT
        # would be reported busy although redis could bind it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(*, cluster_bus: bool = False) -> int:
    """A currently free TCP port on 127.0.0.1 not handed out before by this
    process.  With ``cluster_bus=True`` the port + 10000 is free as well.

    There is an unavoidable race between this check and the server binding
    the port; the start functions retry with new ports when it is lost.
    """
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        wanted = [port]
        if cluster_bus:
            if port + CLUSTER_BUS_OFFSET > 65535:
                continue
            wanted.append(port + CLUSTER_BUS_OFFSET)
        with _ports_lock:
            if any(p in _reserved_ports for p in wanted):
                continue
            if not all(_port_is_free(p) for p in wanted[1:]):
                continue
            _reserved_ports.update(wanted)
        return port
    raise HarnessError("could not find a free loopback port")


# --------------------------------------------------------------------------
# Config rendering
# --------------------------------------------------------------------------


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_./:@+,|~&*%<>=" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _render(directives: Iterable[Directive]) -> str:
    return "".join(" ".join(_quote(part) for part in d) + "\n" for d in directives)


def _common_directives(directory: Path, password: str | None) -> list[Directive]:
    directives: list[Directive] = [
        ("bind", LOOPBACK),
        ("daemonize", "no"),
        ("dir", str(directory)),
        ("logfile", str(directory / "redis.log")),
        # Protected mode only restricts a password-less server; everything is
        # on loopback anyway, so it is simply off exactly in that case.
        ("protected-mode", "yes" if password else "no"),
    ]
    if password:
        directives.append(("requirepass", password))
    return directives


def _data_directives(directory: Path, password: str | None) -> list[Directive]:
    directives = _common_directives(directory, password)
    directives += [
        ("save", ""),
        ("appendonly", "no"),
        # Default is 5 s: a full sync would wait that long for more replicas.
        ("repl-diskless-sync-delay", "0"),
    ]
    if password:
        directives.append(("masterauth", password))
    return directives


def _parse_info_text(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            result[key.strip()] = value.strip()
    return result


# --------------------------------------------------------------------------
# One server process
# --------------------------------------------------------------------------


@dataclass(eq=False)
class RedisServer:
    """One ``redis-server`` process (data node or, with ``sentinel=True``, a
    Sentinel).

    ``port`` is the port clients use: the TLS port when ``tls`` is set.
    ``password`` (with ``username``, ``None`` meaning the default user) is the
    identity the harness itself uses for :meth:`cli`, :meth:`client` and
    readiness checks, and the default credentials of :meth:`url`.
    """

    host: str
    port: int
    dir: Path
    password: str | None = None
    tls: TLSFiles | None = None
    username: str | None = None
    #: An additional plain-TCP port when TLS is enabled but not exclusive.
    plain_port: int | None = None
    sentinel: bool = False
    name: str = "redis"
    directives: list[Directive] = field(default_factory=list, repr=False)
    extra_args: tuple[str, ...] = ()
    tls_auth_clients: str = "optional"
    cluster_bus: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)
    _out_offset: int = field(default=0, init=False, repr=False)

    # -- paths and state ---------------------------------------------------

    @property
    def config_path(self) -> Path:
        """The config file; Sentinel and CONFIG REWRITE update it in place."""
        return self.dir / ("sentinel.conf" if self.sentinel else "redis.conf")

    @property
    def log_path(self) -> Path:
        """The server's own log file (``logfile`` directive)."""
        return self.dir / "redis.log"

    @property
    def output_path(self) -> Path:
        """stdout/stderr of the process (early fatal errors land here)."""
        return self.dir / "stdout.log"

    @property
    def running(self) -> bool:
        """True while the process exists and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, else ``None``."""
        return self.process.pid if self.running and self.process else None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` for clients."""
        return (self.host, self.port)

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of this run's log and stdout/stderr."""
        parts: list[str] = []
        for path, offset in (
            (self.log_path, self._log_offset),
            (self.output_path, self._out_offset),
        ):
            try:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    text = fh.read().decode(errors="replace")
            except OSError:
                continue
            tail = text.strip().splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts) or "(no log output)"

    # -- configuration -----------------------------------------------------

    def render_config(self) -> str:
        """The config file content for the current ports and settings."""
        directives: list[Directive] = []
        if self.tls is not None:
            directives += [
                ("port", str(self.plain_port or 0)),
                ("tls-port", str(self.port)),
                ("tls-cert-file", str(self.tls.server_cert)),
                ("tls-key-file", str(self.tls.server_key)),
                ("tls-ca-cert-file", str(self.tls.ca_cert)),
                ("tls-auth-clients", self.tls_auth_clients),
            ]
        else:
            directives.append(("port", str(self.port)))
        return _render([*directives, *self.directives])

    def write_config(self) -> None:
        """(Re)write the config file, discarding any rewrite by the server."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())

    def reassign_ports(self) -> None:
        """Pick new free ports and rewrite the config (after a lost port race)."""
        self.port = free_port(cluster_bus=self.cluster_bus)
        if self.plain_port is not None:
            self.plain_port = free_port()
        self.write_config()

    # -- lifecycle ---------------------------------------------------------

    def launch(self) -> None:
        """Spawn the process without waiting for readiness (see :meth:`start`).

        The config file is written on the first launch only, so that a restart
        keeps what Sentinel or CONFIG REWRITE recorded (e.g. a new master).
        """
        if self.running:
            return
        if self.process is not None:  # exited on its own: reap it
            self.process.wait()
            _forget(self.process)
            self.process = None
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_config()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._out_offset = self.output_path.stat().st_size if self.output_path.exists() else 0
        argv = [_exe("redis-server"), str(self.config_path)]
        if self.sentinel:
            argv.append("--sentinel")
        argv += list(self.extra_args)
        self.process = _spawn(argv, self.dir, self.output_path)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll PING until it answers; raise :class:`HarnessError` (with the log
        tail) if the process exits or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            proc = self.process
            if proc is None:
                raise HarnessError(f"{self.name} was never launched")
            code = proc.poll()
            if code is not None:
                _forget(proc)
                self.process = None
                raise HarnessError(
                    f"{self.name} (port {self.port}) exited with code {code} "
                    f"during start-up:\n{self.log_tail()}"
                )
            try:
                with self.client(socket_timeout=1.0) as client:
                    if client.ping():
                        return
            except (RedisError, OSError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                self.kill()
                raise HarnessError(
                    f"{self.name} (port {self.port}) did not answer PING within "
                    f"{timeout:.0f}s (last error: {last_error!r}):\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def lost_port_race(self) -> bool:
        """True if the last start failed because a port was already taken."""
        return "Address already in use" in self.log_tail(lines=200)

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start the process (same port and config as before) and wait until it
        answers PING.  A no-op while it is running."""
        for attempt in range(_START_ATTEMPTS):
            self.launch()
            try:
                self.wait_ready(timeout)
                return
            except HarnessError:
                # On restart the port must stay the same: another socket can
                # briefly hold it (e.g. as an ephemeral client port), so wait.
                if attempt + 1 < _START_ATTEMPTS and self.lost_port_race():
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful stop (SIGTERM: with no save points configured nothing is
        written), falling back to SIGKILL after ``timeout`` seconds."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        _forget(proc)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the process (simulates a crash) and reap it."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        _forget(proc)
        self.process = None

    def restart(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Stop (if running) and start again on the same port and config."""
        self.stop()
        self.start(timeout)

    # -- clients -----------------------------------------------------------

    def connection_kwargs(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        client_cert: bool = True,
    ) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis``:
        host, port, credentials (default: the harness identity) and TLS
        settings (with the mTLS client certificate unless ``client_cert`` is
        false)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": username if username is not None else self.username,
            "password": password if password is not None else self.password,
        }
        if self.tls is not None:
            kwargs.update(self.tls.redis_kwargs(client_cert=client_cert))
        return kwargs

    def client(self, **overrides: Any) -> redis.Redis:
        """A synchronous redis-py client with the harness identity, string
        responses, short timeouts and no retries.  Close it after use."""
        kwargs = self.connection_kwargs()
        kwargs.update(
            decode_responses=True,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        kwargs.update(overrides)
        return redis.Redis(**kwargs)

    def async_client(self, **overrides: Any) -> redis.asyncio.Redis:
        """Like :meth:`client` but a ``redis.asyncio.Redis`` (default protocol)."""
        kwargs = self.connection_kwargs()
        kwargs.update(
            decode_responses=True,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            retry=AsyncRetry(NoBackoff(), 0),
        )
        kwargs.update(overrides)
        return redis.asyncio.Redis(**kwargs)

    def url(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        auth: bool = True,
        tls_params: bool = False,
        client_cert: bool = False,
    ) -> str:
        """``redis://`` (or ``rediss://`` with TLS) URL of this server.

        Credentials default to the harness identity; ``auth=False`` leaves them
        out unless given explicitly.  ``tls_params`` appends the CA (and with
        ``client_cert`` the client certificate) as query parameters that
        redis-py's ``from_url`` understands.
        """
        user = username if username is not None else (self.username if auth else None)
        secret = password if password is not None else (self.password if auth else None)
        userinfo = ""
        if user or secret:
            userinfo = quote(user or "", safe="")
            if secret:
                userinfo += ":" + quote(secret, safe="")
            userinfo += "@"
        scheme = "rediss" if self.tls is not None else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"{scheme}://{userinfo}{host}:{self.port}/{db}"
        if tls_params and self.tls is not None:
            url += "?" + urlencode(self.tls.url_query(client_cert=client_cert))
        return url

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT_S, check: bool = True) -> str:
        """Run ``redis-cli`` against this server (auth and TLS handled) and
        return its stdout.  Note that redis-cli exits 0 on error *replies*
        (the output then starts with ``ERR``/``WRONGPASS``...)."""
        argv = [_exe("redis-cli"), "-h", self.host, "-p", str(self.port)]
        if self.tls is not None:
            argv += [
                "--tls",
                "--cacert",
                str(self.tls.ca_cert),
                "--cert",
                str(self.tls.client_cert),
                "--key",
                str(self.tls.client_key),
            ]
        if self.username is not None:
            argv += ["--user", self.username, "--pass", self.password or ""]
        elif self.password:
            argv += ["-a", self.password]
        argv += ["--no-auth-warning", *args]
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"redis-cli {' '.join(args)} timed out") from exc
        if check and result.returncode != 0:
            raise HarnessError(
                f"redis-cli {' '.join(args)} against {self.name} failed "
                f"({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout

    def info(self, section: str = "default") -> dict[str, str]:
        """``INFO <section>`` as a flat ``{field: string value}`` dict."""
        with self.client() as client:
            parsed = client.info(section)
        return {str(key): str(value) for key, value in parsed.items()}

    def role(self) -> str:
        """``master``, ``slave`` or ``sentinel`` according to ROLE."""
        with self.client() as client:
            reply = client.execute_command("ROLE")
        return str(reply[0])


def stop_all(servers: Iterable[RedisServer], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop several servers concurrently: SIGTERM all, then reap each
    (SIGKILL for those not gone within ``timeout``)."""
    servers = list(servers)
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            with contextlib.suppress(OSError):
                server.process.terminate()
    deadline = time.monotonic() + timeout
    for server in servers:
        server.stop(timeout=max(0.1, deadline - time.monotonic()))


def _start_all(servers: Sequence[RedisServer], timeout: float = READY_TIMEOUT_S) -> None:
    """First start of fresh servers: launch them all, then wait for each; a
    server that lost the race for its port gets new ports and is retried."""
    pending = list(servers)
    try:
        for attempt in range(_START_ATTEMPTS):
            for server in pending:
                server.launch()
            lost: list[RedisServer] = []
            errors: list[str] = []
            for server in pending:
                try:
                    server.wait_ready(timeout)
                except HarnessError as exc:
                    if server.lost_port_race():
                        lost.append(server)
                    else:
                        errors.append(str(exc))
            if errors:
                raise HarnessError("\n\n".join(errors))
            if not lost:
                return
            if attempt + 1 == _START_ATTEMPTS:
                raise HarnessError(
                    "lost the race for a free port repeatedly: " + ", ".join(s.name for s in lost)
                )
            for server in lost:
                server.reassign_ports()
            pending = lost
    except BaseException:
        stop_all(servers)
        raise


def _wait(
    what: str,
    check: Callable[[], str | None],
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Poll ``check()`` (returning ``None`` when satisfied, else a reason)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problem = check()
        except (RedisError, OSError) as exc:
            problem = repr(exc)
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise HarnessError(f"{what} not reached within {timeout:.0f}s: {problem}")
        time.sleep(interval)


def _replica_problem(server: RedisServer) -> str | None:
    info = server.info("replication")
    if info.get("role") != "slave":
        return f"{server.name} role is {info.get('role')!r}, not slave"
    if info.get("master_link_status") != "up":
        return f"{server.name} master_link_status={info.get('master_link_status')}"
    if info.get("master_sync_in_progress", "0") != "0":
        return f"{server.name} is still syncing"
    return None


def _replication_problem(replica: RedisServer, masters: Iterable[RedisServer]) -> str | None:
    """Why ``replica`` has not yet applied everything its master has, if so."""
    problem = _replica_problem(replica)
    if problem:
        return problem
    port = int(replica.info("replication").get("master_port", "0"))
    master = next((m for m in masters if m.port == port), None)
    if master is None:
        return f"{replica.name} replicates from unknown :{port}"
    # Master first: its offset only grows, so a replica at or beyond it has
    # everything written before this check started.
    wanted = int(master.info("replication").get("master_repl_offset", "0"))
    have = int(replica.info("replication").get("slave_repl_offset", "-1"))
    if have < wanted:
        return f"{replica.name} at offset {have} < {master.name} at {wanted}"
    return None


def _new_password() -> str:
    return secrets.token_hex(16)


# --------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------


def acl_password_rule(password: str) -> str:
    """``#<sha256>``: an ACL password rule that survives any characters in the
    password (``>password`` would be split at spaces in an ACL file)."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def app_acl_rules(prefix: str, password: str) -> str:
    """ACL rules for an application user confined to ``<prefix>::*`` keys and
    channels: everything except the ``@dangerous`` category (FLUSHALL, KEYS,
    CONFIG, DEBUG, CLIENT KILL/LIST, ...) plus INFO, which the app may read.

    Note: a PSUBSCRIBE pattern is allowed only if it is literally one of the
    channel patterns (``&<prefix>::*``), not any pattern inside it.
    """
    return (
        f"on {acl_password_rule(password)} resetkeys ~{prefix}::* resetchannels &{prefix}::* "
        "-@all +@all -@dangerous +info +ping +cluster|info +client|setname"
    )


def _standalone_fields(
    base_dir: Path,
    *,
    password: str | None,
    acl_file_lines: list[str] | None,
    tls: TLSFiles | None,
    tls_port_only: bool,
    tls_auth_clients: str,
    extra_args: Sequence[str],
    name: str,
) -> dict[str, Any]:
    _exe("redis-server")
    directory = Path(base_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directives = _data_directives(directory, password)
    if acl_file_lines is not None:
        # requirepass and an aclfile both define the default user; the
        # aclfile is the single source of truth here.
        directives = [d for d in directives if d[0] != "requirepass"]
        lines = list(acl_file_lines)
        if password and not any(line.split()[:2] == ["user", "default"] for line in lines):
            lines.insert(0, f"user default on {acl_password_rule(password)} ~* &* +@all")
        acl_path = directory / "users.acl"
        acl_path.write_text("".join(line + "\n" for line in lines))
        directives.append(("aclfile", str(acl_path)))
    return {
        "host": LOOPBACK,
        "port": free_port(),
        "dir": directory,
        "password": password,
        "tls": tls,
        "plain_port": free_port() if tls is not None and not tls_port_only else None,
        "name": name,
        "directives": directives,
        "extra_args": tuple(extra_args),
        "tls_auth_clients": tls_auth_clients,
    }


def start_standalone(
    base_dir: Path,
    *,
    password: str | None = None,
    acl_file_lines: list[str] | None = None,
    tls: TLSFiles | None = None,
    tls_port_only: bool = True,
    tls_auth_clients: str = "optional",
    extra_args: Sequence[str] = (),
    name: str = "standalone",
    timeout: float = READY_TIMEOUT_S,
) -> RedisServer:
    """Start one ``redis-server`` in ``base_dir`` (created if needed) on a free
    loopback port and wait until it answers PING.

    ``password`` protects the default user.  ``acl_file_lines`` are written to
    an ``aclfile`` (``user <name> <rules>`` lines); if they do not define the
    default user and ``password`` is given, a default user with that password
    and all permissions is added.  With ``tls`` the server listens with TLS on ``port``
    (and, unless ``tls_port_only``, plain TCP on ``plain_port``);
    ``tls_auth_clients`` is ``optional`` (default), ``yes`` or ``no``.
    ``extra_args`` are appended to the command line (``--key value`` ...).
    """
    server = RedisServer(
        **_standalone_fields(
            base_dir,
            password=password,
            acl_file_lines=acl_file_lines,
            tls=tls,
            tls_port_only=tls_port_only,
            tls_auth_clients=tls_auth_clients,
            extra_args=extra_args,
            name=name,
        )
    )
    _start_all([server], timeout)
    return server


@dataclass(eq=False)
class AclRedisServer(RedisServer):
    """A :class:`RedisServer` whose default user has a password (the harness
    identity) plus an application user confined to ``<acl_prefix>::*``."""

    acl_user: str = "chatscale"
    acl_password: str = ""
    acl_prefix: str = "acltest"

    def acl_key(self, name: str) -> str:
        """``<acl_prefix>::<name>`` — a key (or channel) the ACL user may use."""
        return f"{self.acl_prefix}::{name}"

    def acl_url(self, *, db: int = 0) -> str:
        """URL authenticating as the ACL user."""
        return self.url(username=self.acl_user, password=self.acl_password, db=db)

    def acl_connection_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments authenticating as the ACL user."""
        return self.connection_kwargs(username=self.acl_user, password=self.acl_password)


def start_acl_server(
    base_dir: Path,
    *,
    user: str = "chatscale",
    prefix: str = "acltest",
    user_password: str | None = None,
    admin_password: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = READY_TIMEOUT_S,
) -> AclRedisServer:
    """Start a standalone server with an ``aclfile``: the default user is
    protected by ``admin_password`` (random if omitted) and ``user`` gets
    :func:`app_acl_rules` for ``prefix``."""
    admin_password = admin_password or _new_password()
    user_password = user_password or _new_password()
    lines = [
        f"user default on {acl_password_rule(admin_password)} ~* &* +@all",
        f"user {user} {app_acl_rules(prefix, user_password)}",
    ]
    server = AclRedisServer(
        **_standalone_fields(
            base_dir,
            password=admin_password,
            acl_file_lines=lines,
            tls=None,
            tls_port_only=True,
            tls_auth_clients="optional",
            extra_args=extra_args,
            name="acl",
        ),
        acl_user=user,
        acl_password=user_password,
        acl_prefix=prefix,
    )
    _start_all([server], timeout)
    return server


# --------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _NodeEntry:
    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    slots: int


def _parse_cluster_nodes(text: str) -> list[_NodeEntry]:
    entries: list[_NodeEntry] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0].split(",", 1)[0]
        slots = 0
        for item in parts[8:]:
            if item.startswith("["):  # slot being migrated/imported
                continue
            low, _, high = item.partition("-")
            slots += (int(high) if high else int(low)) - int(low) + 1
        entries.append(
            _NodeEntry(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(parts[2].split(",")),
                master_id=parts[3],
                slots=slots,
            )
        )
    return entries


@dataclass(eq=False)
class ClusterHandle:
    """A Redis Cluster started by :func:`start_cluster`.

    ``nodes`` keeps creation order; roles change with failovers, so
    :meth:`masters` and :meth:`replicas` ask the running nodes.
    """

    nodes: list[RedisServer]
    password: str | None = None
    node_timeout_ms: int = 1500

    def live_nodes(self) -> list[RedisServer]:
        """Nodes whose process is running."""
        return [node for node in self.nodes if node.running]

    def _roles(self) -> list[tuple[RedisServer, str]]:
        roles: list[tuple[RedisServer, str]] = []
        for node in self.live_nodes():
            try:
                roles.append((node, node.role()))
            except RedisError:
                continue
        return roles

    def masters(self) -> list[RedisServer]:
        """Running nodes that currently are masters (in ``nodes`` order)."""
        return [node for node, role in self._roles() if role == "master"]

    def replicas(self) -> list[RedisServer]:
        """Running nodes that currently are replicas (in ``nodes`` order)."""
        return [node for node, role in self._roles() if role == "slave"]

    def urls(self) -> list[str]:
        """``redis://`` URLs of all nodes (running or not)."""
        return [node.url() for node in self.nodes]

    def url(self) -> str:
        """URL of the first running node — a startup node for cluster clients."""
        live = self.live_nodes()
        return (live or self.nodes)[0].url()

    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every running node."""
        return [node.address for node in self.live_nodes()]

    def kill_master(self, index: int = 0) -> RedisServer:
        """SIGKILL the ``index``-th current master and return it (restart it
        later with ``.start()``; it rejoins as a replica).  Follow with
        :meth:`wait_until_ok` to wait for the failover."""
        masters = self.masters()
        if not masters:
            raise HarnessError("cluster has no running master")
        victim = masters[index]
        victim.kill()
        return victim

    def problem(self, *, masters: int | None = None, replicas: int | None = None) -> str | None:
        """``None`` when the cluster is healthy, else what is wrong.

        Healthy: every running node reports ``cluster_state:ok`` with all
        slots ok, knows every node, agrees with the others on which running
        masters own the slots, and every running replica's link is up.
        """
        live = self.live_nodes()
        if not live:
            return "no node is running"
        live_ports = {node.port for node in live}
        views: set[frozenset[str]] = set()
        n_masters = n_replicas = 0
        for node in live:
            with node.client() as client:
                info = _parse_info_text(str(client.execute_command("CLUSTER", "INFO")))
                entries = _parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
            if info.get("cluster_state") != "ok":
                return f"{node.name}: cluster_state={info.get('cluster_state')}"
            if info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
                return f"{node.name}: cluster_slots_ok={info.get('cluster_slots_ok')}"
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                return f"{node.name}: knows {info.get('cluster_known_nodes')} nodes"
            owners = [e for e in entries if e.slots > 0]
            for entry in owners:
                if entry.port not in live_ports or entry.flags & {"fail", "fail?"}:
                    return (
                        f"{node.name}: slot owner :{entry.port} is down ({','.join(entry.flags)})"
                    )
                if "master" not in entry.flags:
                    return f"{node.name}: slot owner :{entry.port} is not a master"
            for entry in entries:
                if entry.port in live_ports and entry.flags & {"fail", "handshake", "noaddr"}:
                    return f"{node.name}: sees :{entry.port} as {','.join(entry.flags)}"
            views.add(frozenset(e.node_id for e in owners))
            me = next((e for e in entries if "myself" in e.flags), None)
            if me is None:
                return f"{node.name}: no 'myself' line in CLUSTER NODES"
            if "slave" in me.flags:
                n_replicas += 1
                problem = _replica_problem(node)
                if problem:
                    return problem
            else:
                n_masters += 1
        if len(views) != 1:
            return "nodes disagree about which masters own the slots"
        if masters is not None and n_masters != masters:
            return f"{n_masters} masters, expected {masters}"
        if replicas is not None and n_replicas != replicas:
            return f"{n_replicas} replicas, expected {replicas}"
        return None

    def wait_until_ok(
        self,
        timeout: float = TOPOLOGY_TIMEOUT_S,
        *,
        masters: int | None = None,
        replicas: int | None = None,
    ) -> None:
        """Wait until :meth:`problem` reports nothing (e.g. after a failover
        or a node restart); :class:`HarnessError` after ``timeout`` s."""
        _wait(
            "cluster state ok",
            lambda: self.problem(masters=masters, replicas=replicas),
            timeout,
        )

    def wait_for_replication(self, timeout: float = 10.0) -> None:
        """Wait until every running replica has applied all writes its master
        had when this was called — e.g. before killing a master in a test
        that expects no data loss (replication is asynchronous)."""

        def check() -> str | None:
            live = self.live_nodes()
            for node in live:
                if node.role() == "slave":
                    problem = _replication_problem(node, live)
                    if problem:
                        return problem
            return None

        _wait("replicas caught up", check, timeout, interval=_POLL_S)

    def stop(self) -> None:
        """Stop every node."""
        stop_all(self.nodes)


def start_cluster(
    base_dir: Path,
    *,
    masters: int = 3,
    replicas_per_master: int = 1,
    password: str | None = None,
    node_timeout_ms: int = 1500,
    extra_args: Sequence[str] = (),
    timeout: float = TOPOLOGY_TIMEOUT_S,
) -> ClusterHandle:
    """Start ``masters * (1 + replicas_per_master)`` cluster nodes under
    ``base_dir``, join them with ``redis-cli --cluster create`` and wait until
    every node reports ``cluster_state:ok`` and every replica is in sync.

    ``node_timeout_ms`` is low so that failovers take a few seconds.
    """
    if masters < 3:
        raise ValueError("redis-cli --cluster create needs at least 3 masters")
    _exe("redis-server")
    cli = _exe("redis-cli")
    base = Path(base_dir)
    total = masters * (1 + replicas_per_master)
    nodes: list[RedisServer] = []
    for index in range(total):
        directory = base / f"node-{index}"
        directives = _data_directives(directory, password)
        directives += [
            ("cluster-enabled", "yes"),
            ("cluster-config-file", str(directory / "nodes.conf")),
            ("cluster-node-timeout", str(node_timeout_ms)),
            # Let a replica take over however long its link was down: tests
            # kill and restart nodes at will.
            ("cluster-replica-validity-factor", "0"),
        ]
        nodes.append(
            RedisServer(
                host=LOOPBACK,
                port=free_port(cluster_bus=True),
                dir=directory,
                password=password,
                name=f"cluster-node-{index}",
                directives=directives,
                extra_args=tuple(extra_args),
                cluster_bus=True,
            )
        )
    handle = ClusterHandle(nodes=nodes, password=password, node_timeout_ms=node_timeout_ms)
    try:
        _start_all(nodes)
        argv = [cli, "--cluster", "create", *(f"{n.host}:{n.port}" for n in nodes)]
        argv += ["--cluster-replicas", str(replicas_per_master), "--cluster-yes"]
        if password:
            argv += ["-a", password, "--no-auth-warning"]
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLUSTER_CREATE_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError("redis-cli --cluster create timed out") from exc
        if result.returncode != 0 or "All 16384 slots covered" not in result.stdout:
            raise HarnessError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
            )
        handle.wait_until_ok(timeout, masters=masters, replicas=masters * replicas_per_master)
    except BaseException:
        handle.stop()
        raise
    return handle


# --------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------


def _pairs(reply: Any) -> dict[str, str]:
    """A RESP2 flat ``[k, v, k, v...]`` reply as a dict."""
    items = [str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


@dataclass(eq=False)
class SentinelHandle:
    """One master, one replica and N Sentinels started by :func:`start_sentinel`.

    ``master``/``replica`` are swapped by :meth:`failover` and
    :meth:`wait_for_failover`, so they always describe the current roles.
    """

    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]
    service_name: str = "mymaster"
    password: str | None = None
    #: Further replicas with ``replica-priority 0``: never promoted, so that ``replica``
    #: stays the one a failover promotes; they follow whichever node is master.
    extra_replicas: list[RedisServer] = field(default_factory=list)

    @property
    def data_nodes(self) -> list[RedisServer]:
        """Master and replicas."""
        return [self.master, self.replica, *self.extra_replicas]

    @property
    def all_servers(self) -> list[RedisServer]:
        """Data nodes and Sentinels."""
        return [*self.data_nodes, *self.sentinels]

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every Sentinel, for ``redis.sentinel.Sentinel``."""
        return [s.address for s in self.sentinels]

    def sentinel_url(self, *, username: str | None = None, password: str | None = None) -> str:
        """``redis+sentinel://[user:pass@]h:p1,h:p2,.../<service>``.

        The password (default: the topology's) is the same for the Sentinels
        and the data nodes.
        """
        secret = password if password is not None else self.password
        userinfo = ""
        if username or secret:
            userinfo = quote(username or "", safe="")
            if secret:
                userinfo += ":" + quote(secret, safe="")
            userinfo += "@"
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{userinfo}{hosts}/{quote(self.service_name, safe='')}"

    def master_address(self) -> tuple[str, int]:
        """The master address according to the first Sentinel that answers."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                with sentinel.client() as client:
                    host, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
                    )
                return (str(host), int(port))
            except (RedisError, TypeError, ValueError):
                continue
        raise HarnessError("no Sentinel answered GET-MASTER-ADDR-BY-NAME")

    def _server_at(self, port: int) -> RedisServer | None:
        return next((s for s in self.data_nodes if s.port == port), None)

    def problem(self) -> str | None:
        """``None`` when every running Sentinel reports ``master`` as master
        with the replica attached and sees all other Sentinels, and the
        replica is in sync; else what is missing."""
        for replica in (self.replica, *self.extra_replicas):
            problem = _replica_problem(replica)
            if problem:
                return problem
        live = [s for s in self.sentinels if s.running]
        for sentinel in live:
            with sentinel.client() as client:
                state = _pairs(client.execute_command("SENTINEL", "MASTER", self.service_name))
                replicas = [
                    _pairs(r)
                    for r in client.execute_command("SENTINEL", "REPLICAS", self.service_name)
                ]
            if state.get("port") != str(self.master.port):
                return f"{sentinel.name} thinks the master is :{state.get('port')}"
            if state.get("flags") != "master":
                return f"{sentinel.name}: master flags {state.get('flags')}"
            if state.get("num-other-sentinels") != str(len(self.sentinels) - 1):
                return f"{sentinel.name} knows {state.get('num-other-sentinels')} other sentinels"
            good = [
                r
                for r in replicas
                if r.get("port") == str(self.replica.port)
                and r.get("flags") == "slave"
                and r.get("master-link-status") == "ok"
            ]
            if not good:
                return f"{sentinel.name} does not see a healthy replica yet"
        return None

    def wait_until_ready(self, timeout: float = TOPOLOGY_TIMEOUT_S) -> None:
        """Wait until :meth:`problem` reports nothing."""
        _wait("sentinel topology ready", self.problem, timeout)

    def wait_for_failover(self, timeout: float = TOPOLOGY_TIMEOUT_S) -> RedisServer:
        """Wait until every running Sentinel names the former replica as master
        and it has taken the master role (after a master crash or a
        ``SENTINEL FAILOVER``); then swap ``master``/``replica`` and return
        the new master."""
        old, new = self.master, self.replica

        def check() -> str | None:
            for sentinel in self.sentinels:
                if not sentinel.running:
                    continue
                with sentinel.client() as client:
                    _host, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
                    )
                if int(port) != new.port:
                    return f"{sentinel.name} still reports :{port}"
            role = new.role()
            return None if role == "master" else f"{new.name} role is {role}"

        _wait(f"failover from :{old.port} to :{new.port}", check, timeout)
        self.master, self.replica = new, old
        return new

    def _failover_given_up(self, sentinel: RedisServer, old: RedisServer) -> bool:
        """Whether ``sentinel`` runs no failover and still names ``old`` as master."""
        with sentinel.client() as client:
            state = _pairs(client.execute_command("SENTINEL", "MASTER", self.service_name))
        return "failover_in_progress" not in state.get("flags", "") and state.get("port") == str(
            old.port
        )

    def _ask_failover(self, sentinel: RedisServer, deadline: float) -> None:
        while True:
            try:
                with sentinel.client() as client:
                    client.execute_command("SENTINEL", "FAILOVER", self.service_name)
                return
            except ResponseError as exc:
                # NOGOODSLAVE until Sentinel has fresh INFO from the replica;
                # INPROG while a previous failover is being finished.
                if time.monotonic() >= deadline:
                    raise HarnessError(f"SENTINEL FAILOVER refused: {exc}") from exc
                time.sleep(0.2)

    def failover(
        self,
        timeout: float = TOPOLOGY_TIMEOUT_S,
        *,
        reconfigure_old_master: bool = True,
    ) -> RedisServer:
        """``SENTINEL FAILOVER`` and wait until all Sentinels report the
        promoted replica as master; return it.

        Sentinel itself turns the demoted master into a replica only ~10 s
        later; with ``reconfigure_old_master`` (default) the harness does that
        right away (REPLICAOF + CONFIG REWRITE, exactly what Sentinel would
        send) and waits until it is in sync, so the topology is whole again.
        """
        deadline = time.monotonic() + timeout
        live = [s for s in self.sentinels if s.running]
        if not live:
            raise HarnessError("no Sentinel is running")
        old = self.master
        ask = True
        while True:
            if ask:
                self._ask_failover(live[0], deadline)
            try:
                remaining = deadline - time.monotonic()
                new = self.wait_for_failover(max(1.0, min(remaining, _FAILOVER_ATTEMPT_S)))
                break
            except HarnessError:
                if time.monotonic() >= deadline:
                    raise
                # A failover Sentinel gave up on (``-failover-abort-slave-timeout``: the
                # replica did not report its promotion within failover-timeout, seen when
                # one failover followed another within seconds) is asked for again; one
                # still under way is waited for (asking again would undo it).
                ask = self._failover_given_up(live[0], old)
        if reconfigure_old_master and old.running:
            # Sentinel may be reconfiguring it at the same moment: its CLIENT KILL closes
            # this connection ("Connection closed by server"); then the role tells.
            for _ in range(3):
                try:
                    with old.client() as client:
                        client.execute_command("REPLICAOF", new.host, str(new.port))
                        client.execute_command("CONFIG", "REWRITE")
                    break
                except RedisConnectionError:
                    if old.role() == "slave":
                        break
                    time.sleep(0.1)
            _wait(
                f"{old.name} in sync with the new master",
                lambda: _replica_problem(old),
                max(1.0, deadline - time.monotonic()),
            )
        return new

    def wait_for_replication(self, timeout: float = 10.0) -> None:
        """Wait until the replica has applied all writes the master had when
        this was called (replication is asynchronous)."""
        _wait(
            "replica caught up",
            lambda: _replication_problem(self.replica, [self.master]),
            timeout,
            interval=_POLL_S,
        )

    def stop(self) -> None:
        """Stop Sentinels first (so they do not react), then the data nodes."""
        stop_all(self.sentinels)
        stop_all(self.data_nodes)


def start_sentinel(
    base_dir: Path,
    *,
    password: str | None = None,
    sentinels: int = 3,
    replicas: int = 1,
    min_replicas_to_write: int = 0,
    service_name: str = "mymaster",
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    timeout: float = TOPOLOGY_TIMEOUT_S,
) -> SentinelHandle:
    """Start a master, a replica and ``sentinels`` Sentinels (quorum 2, or 1
    with a single Sentinel) under ``base_dir`` and wait until the Sentinels
    agree on the topology.

    With ``password`` the data nodes get ``requirepass``/``masterauth`` and the
    Sentinels ``requirepass`` plus ``sentinel auth-pass`` (Sentinels then
    authenticate to each other with that same password).

    ``replicas`` > 1 adds replicas that are never promoted (``replica-priority 0``);
    ``min_replicas_to_write`` sets ``min-replicas-to-write`` (with
    ``min-replicas-max-lag 10``) on every data node: the deployment docs/deployment.md
    recommends (a master cut off from its replicas refuses writes).
    """
    if sentinels < 1:
        raise ValueError("need at least one Sentinel")
    _exe("redis-server")
    base = Path(base_dir)
    quorum = 1 if sentinels == 1 else 2
    guard: list[Directive] = []
    if min_replicas_to_write:
        guard = [
            ("min-replicas-to-write", str(min_replicas_to_write)),
            ("min-replicas-max-lag", "10"),
        ]
    master = RedisServer(
        host=LOOPBACK,
        port=free_port(),
        dir=base / "master",
        password=password,
        name="sentinel-master",
        directives=[*_data_directives(base / "master", password), *guard],
    )
    started: list[RedisServer] = [master]
    try:
        _start_all([master])
        # The replica (and then the Sentinels) need the master's final port.
        replica_dir = base / "replica"
        replica = RedisServer(
            host=LOOPBACK,
            port=free_port(),
            dir=replica_dir,
            password=password,
            name="sentinel-replica",
            directives=[
                *_data_directives(replica_dir, password),
                *guard,
                ("replicaof", master.host, str(master.port)),
            ],
        )
        extra: list[RedisServer] = []
        for index in range(1, replicas):
            extra_dir = base / f"replica-{index}"
            extra.append(
                RedisServer(
                    host=LOOPBACK,
                    port=free_port(),
                    dir=extra_dir,
                    password=password,
                    name=f"sentinel-replica-{index}",
                    directives=[
                        *_data_directives(extra_dir, password),
                        *guard,
                        ("replica-priority", "0"),
                        ("replicaof", master.host, str(master.port)),
                    ],
                )
            )
        started += [replica, *extra]
        _start_all([replica, *extra])
        # Sentinels discover replicas from the master's INFO, polled every
        # 10 s; starting them only once the replicas are attached makes the
        # very first INFO show them.
        for node in (replica, *extra):
            _wait("replica in sync", functools.partial(_replica_problem, node), timeout)
        nodes: list[RedisServer] = []
        for index in range(sentinels):
            directory = base / f"sentinel-{index}"
            directives = _common_directives(directory, password)
            directives += [
                ("sentinel", "monitor", service_name, master.host, str(master.port), str(quorum)),
                ("sentinel", "down-after-milliseconds", service_name, str(down_after_ms)),
                ("sentinel", "failover-timeout", service_name, str(failover_timeout_ms)),
                ("sentinel", "parallel-syncs", service_name, "1"),
            ]
            if password:
                directives.append(("sentinel", "auth-pass", service_name, password))
            nodes.append(
                RedisServer(
                    host=LOOPBACK,
                    port=free_port(),
                    dir=directory,
                    password=password,
                    sentinel=True,
                    name=f"sentinel-{index}",
                    directives=directives,
                )
            )
        started += nodes
        _start_all(nodes)
        handle = SentinelHandle(
            master=master,
            replica=replica,
            sentinels=nodes,
            service_name=service_name,
            password=password,
            extra_replicas=extra,
        )
        handle.wait_until_ready(timeout)
    except BaseException:
        stop_all(started)
        raise
    return handle


def iter_logs(servers: Iterable[RedisServer], lines: int = 15) -> Iterator[str]:
    """Log tails of several servers, for failure diagnostics."""
    for server in servers:
        yield f"=== {server.name} (port {server.port}) ===\n{server.log_tail(lines)}"
