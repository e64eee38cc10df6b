"""TLS certificates and contexts for SIP over TLS (RFC 3261 §26.2.1, RFC 5922) and the HTTPS
server.

``ensure_self_signed`` creates a self-signed EC P-256 certificate with subjectAltNames when none
exists, so a fresh install can listen on TLS at once; ``server_context`` and ``client_context``
build ``ssl.SSLContext`` objects limited to TLS 1.2+ with forward-secret AEAD cipher suites (RFC
7525 §4.2).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY_DAYS = 825
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
CRL_POLL_SECONDS = 2.0
"""How often a running node stats its ``tls_crl`` file (`MutualContexts.reload`)."""

logger = logging.getLogger(__name__)


class CertificateError(ValueError):
    """A certificate request or a certificate/key pair is invalid."""


def ensure_self_signed(
    cert_path: Path, key_path: Path, hostnames: list[str], ips: list[str]
) -> None:
    """Create a self-signed certificate and key unless both files exist (RFC 5280 §4.2.1.6).

    The key is EC P-256, written with mode 0600; the certificate is valid for 825 days and names
    every hostname as a DNS subjectAltName and every address as an IP subjectAltName. Both files
    are written atomically. If only one of the two exists, nothing is overwritten and
    ``CertificateError`` is raised.
    """
    cert_exists, key_exists = cert_path.exists(), key_path.exists()
    if cert_exists and key_exists:
        return
    if cert_exists or key_exists:
        raise CertificateError("only one of certificate and key exists")
    if not hostnames and not ips:
        raise CertificateError("a certificate needs a hostname or an IP address")
    try:
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError:
        raise CertificateError("invalid hostname or IP address for a certificate") from None
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hostnames or ips)[0][:64])])
    not_before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for SIP over TLS and HTTPS: TLS 1.2+, ECDHE with AEAD (RFC 7525 §4.2)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError):
        raise CertificateError("certificate or key cannot be loaded") from None
    return context


def client_context(verify: bool = True, cafile: Path | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2+, the peer verified against ``cafile`` or the system CAs
    (RFC 5922 §7.1); ``verify=False`` accepts any certificate (tests, self-signed peers)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    if verify:
        try:
            if cafile is None:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            else:
                context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError):
            raise CertificateError("CA file cannot be loaded") from None
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def mutual_contexts(
    cert: Path, key: Path, cafile: Path, crl: Path | None = None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The server and client contexts of a private mutual-TLS link (the cluster's internal leg):
    both present ``cert`` and require the peer's certificate to chain to ``cafile`` (RFC 5246
    §7.4.4). No host name is checked: the CA is the link's own, so holding a certificate it
    issued is what makes a peer a member (the peer's address is checked above TLS).

    With ``crl`` (a PEM CRL issued by ``cafile``, checked by `check_crl`) both contexts load it
    and verify with ``VERIFY_CRL_CHECK_LEAF`` (RFC 5280 §6.3): a peer presenting a revoked
    certificate is refused at the handshake. The CRL is read once, here."""
    if crl is not None:
        check_crl(crl, cafile)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (server, client):
        _harden(context)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError):
            raise CertificateError("certificate or key cannot be loaded") from None
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError):
            raise CertificateError("CA file cannot be loaded") from None
        if crl is not None:
            try:
                context.load_verify_locations(cafile=crl)
            except (OSError, ssl.SSLError):
                raise CertificateError("CRL cannot be loaded") from None
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        context.verify_mode = ssl.CERT_REQUIRED
    client.check_hostname = False
    client.verify_mode = ssl.CERT_REQUIRED
    return server, client


class SwappableContext(ssl.SSLContext):
    """An ``ssl.SSLContext`` whose handshakes use `current`, replaceable at any time: a listener
    bound once (``asyncio`` keeps the context it was started with) takes a new CRL for every new
    connection. Only ``wrap_bio`` and ``wrap_socket`` delegate; its own settings are unused."""

    current: ssl.SSLContext

    def __new__(cls, current: ssl.SSLContext) -> SwappableContext:
        self = super().__new__(cls, current.protocol)
        self.current = current
        return self

    def __init__(self, current: ssl.SSLContext) -> None:
        pass

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self.current.wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self.current.wrap_socket(*args, **kwargs)


class MutualContexts:
    """`mutual_contexts` that follow their CRL file: `reload` (called every `CRL_POLL_SECONDS`)
    stats the file and, when its mtime or size changed, checks it (`check_crl`) and swaps new
    contexts into `server` and `client` for every new handshake. A CRL that fails the check is
    refused and logged and the one in force stays (a typo never drops revocation)."""

    def __init__(self, cert: Path, key: Path, cafile: Path, crl: Path | None = None) -> None:
        self._files = (cert, key, cafile)
        self.crl = crl
        server, client = mutual_contexts(cert, key, cafile, crl)
        self.server = SwappableContext(server)
        self.client = SwappableContext(client)
        self._stamp = _stamp(crl) if crl is not None else None
        self.revoked: frozenset[int] = _serials(crl) if crl is not None else frozenset()
        """The serial numbers the CRL in force revokes."""

    def reload(self) -> bool:
        """Whether a new CRL was put in force (its `revoked` to be applied to open links)."""
        crl = self.crl
        if crl is None:
            return False
        stamp = _stamp(crl)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            server, client = mutual_contexts(*self._files, crl)
            revoked = _serials(crl)
        except CertificateError as exc:
            logger.error("tls_crl %s refused, the previous CRL stays in force: %s", crl, exc)
            return False
        self.server.current, self.client.current = server, client
        self.revoked = revoked
        logger.warning("tls_crl %s reloaded: %d certificates revoked", crl, len(revoked))
        return True

    def is_revoked(self, der: bytes | None) -> bool:
        """Whether the DER certificate `der` (a peer's) is revoked by the CRL in force."""
        if der is None or not self.revoked:
            return False
        try:
            return x509.load_der_x509_certificate(der).serial_number in self.revoked
        except ValueError:
            return False


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _serials(crl: Path) -> frozenset[int]:
    try:
        revocations = x509.load_pem_x509_crl(crl.read_bytes())
    except (OSError, ValueError):
        raise CertificateError("CRL cannot be loaded (a PEM CRL is expected)") from None
    return frozenset(r.serial_number for r in revocations)


def check_crl(crl: Path, cafile: Path, now: datetime.datetime | None = None) -> None:
    """Raise ``CertificateError`` unless ``crl`` is a PEM CRL signed by a CA of ``cafile`` and
    still current (its nextUpdate not past: OpenSSL refuses every peer on an expired CRL)."""
    try:
        revocations = x509.load_pem_x509_crl(crl.read_bytes())
    except (OSError, ValueError):
        raise CertificateError("CRL cannot be loaded (a PEM CRL is expected)") from None
    try:
        authorities = x509.load_pem_x509_certificates(cafile.read_bytes())
    except (OSError, ValueError):
        raise CertificateError("CA file cannot be loaded") from None
    issuers = [ca for ca in authorities if ca.subject == revocations.issuer]
    if not any(_signed_by(revocations, ca) for ca in issuers):
        raise CertificateError("CRL is not signed by the CA")
    moment = now or datetime.datetime.now(datetime.UTC)
    next_update = revocations.next_update_utc
    if next_update is not None and next_update < moment:
        raise CertificateError(f"CRL expired at {next_update.isoformat()} (every peer refused)")


def _signed_by(revocations: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    public_key = ca.public_key()
    if not isinstance(public_key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        return False
    return revocations.is_signature_valid(public_key)


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


__all__ = [
    "CRL_POLL_SECONDS",
    "CertificateError",
    "MutualContexts",
    "SwappableContext",
    "check_crl",
    "client_context",
    "ensure_self_signed",
    "mutual_contexts",
    "server_context",
]
