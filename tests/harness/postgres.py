"""A real PostgreSQL server for the tests: ``initdb`` into a temporary folder, ``postgres`` on a
free loopback port, its unix socket in that folder.

Uses Debian's ``postgresql`` package (its binaries live in ``/usr/lib/postgresql/<v>/bin``,
not on PATH; ``scripts/test`` installs it). PostgreSQL refuses to run as root: as root the
server runs as the ``postgres`` system user (else ``nobody``), through the same ``setpriv``
that gives it the parent-death signal, so it never outlives the test run. Its folder lives
outside pytest's (root-only) temporary directory and is removed when it stops.

Plain Python, no pytest dependency::

    server = start_postgres()
    try:
        print(server.url("chatscale"))
    finally:
        server.stop()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .servers import LOOPBACK, HarnessError, ToolMissingError, _forget, _spawn, free_port

__all__ = ["PostgresServer", "postgres_bin_dir", "start_postgres"]

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3
#: The superuser initdb creates.
USER = "chatscale"


def postgres_bin_dir() -> Path | None:
    """The folder of ``initdb``/``postgres``: PATH first, else the newest Debian version."""
    on_path = shutil.which("postgres")
    if on_path is not None:
        real = Path(on_path).resolve().parent  # /usr/local/bin may hold symlinks only
        if all((real / tool).exists() for tool in ("initdb", "pg_isready", "createdb")):
            return real
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _run_as() -> tuple[list[str], tuple[int, int] | None]:
    """``setpriv`` options and (uid, gid) to drop root to, or nothing when not root."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        options = [f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
        return options, (entry.pw_uid, entry.pw_gid)
    raise HarnessError("running as root and neither a postgres nor a nobody user exists")


@dataclass(eq=False)
class PostgresServer:
    """One ``postgres`` process; the superuser ``chatscale`` logs in with :attr:`password`."""

    dir: Path
    bin_dir: Path
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        """stdout/stderr of the server."""
        return self.dir / "postgres.log"

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """A URL for ``database`` with the superuser's credentials."""
        return f"{driver}://{USER}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- lifecycle ---------------------------------------------------------

    def init(self) -> None:
        """``initdb`` with password (SCRAM) authentication, owned by the server's user."""
        options, ids = _run_as()
        self.dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if ids is not None:
            for path in (self.dir, pwfile):
                os.chown(path, *ids)
        prefix = [shutil.which("setpriv") or "setpriv", *options, "--"] if options else []
        done = subprocess.run(
            [
                *prefix,
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise HarnessError(f"initdb failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")

    def launch(self) -> None:
        """Start ``postgres`` on a free port (without waiting)."""
        self.port = free_port()
        options, _ = _run_as()
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
            # Throw-away data: durability costs only time here.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=32MB",
        ]
        self.process = _spawn(argv, self.dir, self.log_path, options)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until ``pg_isready`` says yes; HarnessError (with the log) otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise HarnessError(f"postgres exited:\n{self.log_tail()}")
            ready = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-q",
                    "-h",
                    LOOPBACK,
                    "-p",
                    str(self.port),
                    "-t",
                    "1",
                ],
                check=False,
                timeout=10,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise HarnessError(f"postgres not ready after {timeout}s:\n{self.log_tail()}")

    def start(self) -> PostgresServer:
        """Launch and wait; a lost race for the port is retried on another one."""
        for attempt in range(_START_ATTEMPTS):
            self.launch()
            try:
                self.wait_ready()
                return self
            except HarnessError:
                self.kill()
                if attempt == _START_ATTEMPTS - 1 or "in use" not in self.log_tail():
                    raise
        raise HarnessError("unreachable")

    def kill(self) -> None:
        """SIGKILL (the backends notice their postmaster is gone and exit)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        if self.process is not None:
            _forget(self.process)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL if that takes too long; remove the folder."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.send_signal(2)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process is not None:
            _forget(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- databases ---------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (a fresh name when none is given); its URL."""
        name = name or f"t{uuid.uuid4().hex[:12]}"
        done = subprocess.run(
            [
                str(self.bin_dir / "createdb"),
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                USER,
                name,
            ],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise HarnessError(f"createdb {name} failed: {done.stderr.strip()}")
        return self.url(name)


def start_postgres(parent: Path | None = None) -> PostgresServer:
    """A running PostgreSQL in a new folder under ``parent`` (default: the system's
    temporary folder, which the unprivileged server user can reach)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ToolMissingError(
            "PostgreSQL is not installed (no postgres binary; Debian package postgresql)"
        )
    folder = Path(tempfile.mkdtemp(prefix="chatscale-pg-", dir=parent))
    server = PostgresServer(folder, bin_dir)
    try:
        server.init()
        return server.start()
    except BaseException:
        server.stop()
        raise
