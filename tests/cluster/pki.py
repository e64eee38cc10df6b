"""Certificates for the encrypted internal leg's tests (``[cluster] tls_ca``, ``tls_cert``,
``tls_key``, ``tls_crl``), made with `cryptography`: a CA (`authority`), the node certificates
it issues, its CRLs; `make_pki` for the common case of a CA and the one certificate every node
presents (for 127.0.0.1). Valid from an hour ago for two days."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
VALID = datetime.timedelta(days=2)


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass
class Authority:
    """A CA: its key, its certificate and the certificate's file."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path

    def issue(
        self, directory: Path, name: str, *, subject: str | None = None, ips: Iterable[str] = ()
    ) -> tuple[Path, Path, int]:
        """A node certificate this CA issued (common name `subject`, `name` by default; the
        `ips` as its subject alternative names): its file ``<name>.pem``, its key's file
        ``<name>.key`` (in `directory`), its serial number."""
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject or name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(NOW)
            .not_valid_after(NOW + VALID)
        )
        addresses = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if addresses:
            builder = builder.add_extension(x509.SubjectAlternativeName(addresses), critical=False)
        cert = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).sign(self.key, hashes.SHA256())
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path, serial

    def crl(self, path: Path, revoked: list[int], next_update: datetime.datetime) -> Path:
        """This CA's CRL revoking the `revoked` serial numbers, written to `path`."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(NOW)
            .next_update(next_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
            )
        path.write_bytes(
            builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        return path


def authority(directory: Path, name: str) -> Authority:
    """A new CA named ``<name> CA``, its certificate written to ``ca.pem`` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} CA"))
        .issuer_name(_name(f"{name} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(key, cert, path)


def make_pki(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate it issued (for 127.0.0.1): the CA's, the certificate's and its
    key's files."""
    ca = authority(directory, name)
    cert, key, _ = ca.issue(directory, "node", subject=f"{name} node", ips=["127.0.0.1"])
    return ca.path, cert, key


def tls_keys(files: tuple[Path, Path, Path]) -> str:
    """The ``[cluster]`` lines naming `make_pki`'s files."""
    ca, cert, key = files
    return f'tls_cert = "{cert}"\ntls_key = "{key}"\ntls_ca = "{ca}"\n'
