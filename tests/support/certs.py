"""Throwaway certificates made with the openssl CLI, and a TLS miniircd on loopback.

Keys are EC P-256 (fast to make); everything is written inside the given directory and lives
for two days, by shelling out to /usr/bin/openssl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tests.support.ircservers import _MINIIRCD_BOOT, HOST, RunningServer, _launch, free_port

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
_NEW_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertPair:
    cert: Path  # PEM certificate
    key: Path  # PEM private key (unencrypted)

    @cached_property
    def der(self) -> bytes:
        return _openssl("x509", "-in", str(self.cert), "-outform", "DER")

    @cached_property
    def sha256(self) -> str:
        """openssl's own SHA-256 fingerprint, as lowercase hex without colons."""
        out = _openssl("x509", "-in", str(self.cert), "-noout", "-fingerprint", "-sha256")
        return out.decode().strip().partition("=")[2].replace(":", "").lower()


def _openssl(*args: str, cwd: Path | None = None) -> bytes:
    result = subprocess.run(
        [OPENSSL, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr.decode()}")
    return result.stdout


def make_ca(directory: Path, name: str = "ca") -> CertPair:
    """A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign)."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *_NEW_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
        "-days", "2", "-subj", f"/CN=relaybot test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def make_cert(
    directory: Path,
    name: str,
    *,
    ca: CertPair | None = None,
    san: str = f"IP:{HOST}",
    usage: str = "serverAuth",
    common_name: str | None = None,
) -> CertPair:
    """A leaf certificate for `san`, signed by `ca`, or self-signed when ca is None.

    usage is the extendedKeyUsage ("serverAuth" or "clientAuth").
    """
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.pem", directory / f"{name}.key")
    subject = f"/CN={common_name or name}"
    extensions = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
        f"subjectAltName={san}",
    ]
    if ca is None:
        add = [arg for ext in extensions for arg in ("-addext", ext)]
        _openssl(
            "req", "-x509", *_NEW_KEY, "-keyout", str(pair.key), "-out", str(pair.cert),
            "-days", "2", "-subj", subject, *add,
        )  # fmt: skip
        return pair
    csr = directory / f"{name}.csr"
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(
        "\n".join([*extensions, "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]) + "\n"
    )
    _openssl("req", "-new", *_NEW_KEY, "-keyout", str(pair.key), "-out", str(csr),
             "-subj", subject)  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext_file), "-out", str(pair.cert),
    )  # fmt: skip
    return pair


def encrypt_key(pair: CertPair, target: Path, password: str = "secret") -> Path:
    """A copy of pair's private key, encrypted with AES-256 under `password`."""
    _openssl("pkey", "-in", str(pair.key), "-aes256", "-passout", f"pass:{password}",
             "-out", str(target))  # fmt: skip
    return target


def start_miniircd_tls(
    workdir: Path, cert: Path, key: Path, *, port: int | None = None
) -> RunningServer:
    """Start miniircd with TLS on 127.0.0.1 using the given PEM certificate and key.

    miniircd loads the certificate in Server.__init__, before it switches user, so files
    readable only by the current user are fine. It does each TLS handshake blocking, inside its
    single-threaded accept loop, and never asks for a client certificate.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        sys.executable, "-c", _MINIIRCD_BOOT, "--listen", HOST, "--ports", str(port),
        "--verbose", "--log-file", str(workdir / "miniircd.log"),
        "--pid-file", str(workdir / "miniircd.pid"),
        "--ssl-cert-file", str(cert), "--ssl-key-file", str(key),
    ]  # fmt: skip
    if os.getuid() == 0 or os.getgid() == 0:
        argv += ["--setuid", "root"]
    return _launch("miniircd-tls", argv, workdir, port, [workdir / "miniircd.log"])
