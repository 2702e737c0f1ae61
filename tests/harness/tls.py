"""Throw-away TLS material for tests, generated with the ``openssl`` CLI.

Everything is created at test time in a temporary folder: nothing secret is
committed and nothing depends on the machine's trust store.  Keys are ECDSA
P-256 because they are generated in milliseconds (RSA-2048 takes noticeably
longer on a small CI machine).
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TLSError", "TLSFiles", "make_host_cert", "make_tls", "openssl_available"]

_OPENSSL_TIMEOUT_S = 30.0

# A private config file keeps the result independent of the system's
# openssl.cnf (whose default extensions differ between distributions).
_OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no

[ dn ]
CN = placeholder

[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
# clientAuth too: redis-server presents this certificate when it connects
# out (replication, cluster bus) unless tls-client-cert-file is set.
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


class TLSError(RuntimeError):
    """Certificate generation failed (``openssl`` missing or erroring)."""


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a generated test PKI.

    ``ca_*`` is the CA that signed ``server_*`` and ``client_*``.
    ``other_ca_*`` is an unrelated CA (for "wrong CA" tests) and
    ``other_client_*`` a client certificate signed by it, which a server
    trusting only ``ca_cert`` must reject.
    """

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_ca_key: Path
    other_client_cert: Path
    other_client_key: Path
    dir: Path

    def redis_kwargs(
        self, *, client_cert: bool = False, ca_cert: Path | None = None
    ) -> dict[str, object]:
        """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis``.

        ``client_cert=True`` adds the mTLS client certificate; ``ca_cert``
        overrides the trusted CA (e.g. ``other_ca_cert`` to provoke a
        verification failure).
        """
        kwargs: dict[str, object] = {
            "ssl": True,
            "ssl_ca_certs": str(ca_cert or self.ca_cert),
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
        }
        if client_cert:
            kwargs["ssl_certfile"] = str(self.client_cert)
            kwargs["ssl_keyfile"] = str(self.client_key)
        return kwargs

    def url_query(self, *, client_cert: bool = False) -> dict[str, str]:
        """The same settings as URL query parameters (redis-py passes unknown
        query parameters through as keyword arguments)."""
        query = {"ssl_ca_certs": str(self.ca_cert), "ssl_cert_reqs": "required"}
        if client_cert:
            query["ssl_certfile"] = str(self.client_cert)
            query["ssl_keyfile"] = str(self.client_key)
        return query

    def client_context(
        self, *, client_cert: bool = False, ca_cert: Path | None = None
    ) -> ssl.SSLContext:
        """A verifying client ``ssl.SSLContext`` trusting ``ca_cert`` (default:
        the test CA), optionally presenting the client certificate."""
        context = ssl.create_default_context(cafile=str(ca_cert or self.ca_cert))
        if client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def openssl_available() -> bool:
    """True when the ``openssl`` executable is on PATH."""
    return shutil.which("openssl") is not None


def _run_openssl(args: list[str], cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise TLSError("the openssl executable is not on PATH")
    try:
        result = subprocess.run(
            [exe, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_OPENSSL_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TLSError(f"openssl {args[0]} timed out") from exc
    if result.returncode != 0:
        raise TLSError(
            f"openssl {' '.join(args)} failed ({result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )


def _new_key_args(key: Path) -> list[str]:
    return [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
    ]


def _make_ca(directory: Path, cnf: Path, name: str, days: int) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _run_openssl(
        [
            "req",
            "-x509",
            "-new",
            *_new_key_args(key),
            "-out",
            str(cert),
            "-days",
            str(days),
            "-config",
            str(cnf),
            "-extensions",
            "ca_ext",
            "-subj",
            f"/O=chatscale tests/CN=chatscale test {name}",
        ],
        directory,
    )
    return cert, key


def _make_leaf(
    directory: Path,
    cnf: Path,
    name: str,
    common_name: str,
    extensions: str,
    ca: tuple[Path, Path],
    days: int,
) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    _run_openssl(
        [
            "req",
            "-new",
            *_new_key_args(key),
            "-out",
            str(csr),
            "-config",
            str(cnf),
            "-subj",
            f"/O=chatscale tests/CN={common_name}",
        ],
        directory,
    )
    _run_openssl(
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca[0]),
            "-CAkey",
            str(ca[1]),
            "-set_serial",
            f"0x{secrets.token_hex(16)}",
            "-days",
            str(days),
            "-extfile",
            str(cnf),
            "-extensions",
            extensions,
            "-out",
            str(cert),
        ],
        directory,
    )
    csr.unlink()
    return cert, key


def make_tls(base_dir: Path, *, days: int = 7) -> TLSFiles:
    """Generate a CA, a server certificate (SAN ``IP:127.0.0.1``, ``IP:::1``,
    ``DNS:localhost``), an mTLS client certificate and an unrelated second CA
    with its own client certificate, all under ``base_dir``.

    Raises :class:`TLSError` when ``openssl`` is missing or fails.
    """
    directory = Path(base_dir)
    directory.mkdir(parents=True, exist_ok=True)
    cnf = directory / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)

    ca = _make_ca(directory, cnf, "ca", days)
    server = _make_leaf(directory, cnf, "server", "localhost", "server_ext", ca, days)
    client = _make_leaf(directory, cnf, "client", "chatscale-test-client", "client_ext", ca, days)
    other_ca = _make_ca(directory, cnf, "other-ca", days)
    other_client = _make_leaf(
        directory,
        cnf,
        "other-client",
        "chatscale-untrusted-client",
        "client_ext",
        other_ca,
        days,
    )
    for key in (ca[1], server[1], client[1], other_ca[1], other_client[1]):
        key.chmod(0o600)
    return TLSFiles(
        ca_cert=ca[0],
        ca_key=ca[1],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca_cert=other_ca[0],
        other_ca_key=other_ca[1],
        other_client_cert=other_client[0],
        other_client_key=other_client[1],
        dir=directory,
    )


def make_host_cert(tls: TLSFiles, name: str, *, days: int = 7) -> tuple[Path, Path]:
    """A server certificate signed by ``tls``'s CA and valid for the DNS name ``name``
    only (no IP address, no ``localhost``): what a managed service's node presents.

    Returns ``(certificate, key)`` under ``tls.dir``.
    """
    cnf = tls.dir / f"openssl-{name}.cnf"
    section = (
        "\n[ host_ext ]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth, clientAuth\n"
        f"subjectAltName = DNS:{name}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    cnf.write_text(_OPENSSL_CNF + section)
    cert, key = _make_leaf(
        tls.dir, cnf, f"host-{name}", name, "host_ext", (tls.ca_cert, tls.ca_key), days
    )
    key.chmod(0o600)
    return cert, key
