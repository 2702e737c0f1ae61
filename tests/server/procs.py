"""``chatscale serve`` subprocesses for tests (real processes, real signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.helpers import free_port

CHATSCALE = [str(Path(sys.executable).parent / "chatscale")]


class ServeProcess:
    """One ``chatscale serve`` on a loopback port; output goes to ``log``."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        port: int | None = None,
        args: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> None:
        self.args = args  # more options of ``chatscale serve`` (``--workers``)
        self.cwd = cwd  # the working directory (the default SQLite file goes there)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ServeProcess:
        """Start (and wait until /readyz answers 200).

        A restart on the same port can find it briefly taken as the local port of some
        short-lived outgoing loopback connection (the ephemeral range covers it): retry.
        """
        for _ in range(20):
            try:
                return self._start_once(wait)
            except RuntimeError as exc:
                if "address already in use" not in str(exc):
                    raise
                time.sleep(0.25)
        return self._start_once(wait)

    def _start_once(self, wait: bool) -> ServeProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [*CHATSCALE, "serve", "--port", str(self.port), *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()  # never leave a process behind
                raise
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until /readyz is 200 (or fail with the log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.log.read_text()[-3000:]}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Terminate (drained) or kill after a while."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
