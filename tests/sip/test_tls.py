"""Self-signed certificates and TLS contexts (RFC 5280 §4.2.1.6, RFC 7525 §4.2)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import stat
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sip.tls import CertificateError, client_context, ensure_self_signed, server_context

HOST = "127.0.0.1"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    ensure_self_signed(cert, key, ["sip.example.com", "localhost"], [HOST, "::1"])
    return cert, key


def load(cert: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.read_bytes())


def test_generated_certificate_names_every_hostname_and_ip(pair: tuple[Path, Path]) -> None:
    names = load(pair[0]).extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert names.get_values_for_type(x509.DNSName) == ["sip.example.com", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(HOST),
        ipaddress.ip_address("::1"),
    ]


def test_private_key_written_with_mode_0600_and_certificate_public(
    pair: tuple[Path, Path],
) -> None:
    cert, key = pair

    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(path.name for path in key.parent.iterdir()) == ["cert.pem", "key.pem"]


def test_certificate_is_self_signed_ec_p256_valid_825_days(pair: tuple[Path, Path]) -> None:
    certificate = load(pair[0])
    public_key = certificate.public_key()
    now = datetime.datetime.now(datetime.UTC)

    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert certificate.issuer == certificate.subject
    certificate.verify_directly_issued_by(certificate)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=825)
    assert certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc


def test_existing_certificate_and_key_are_kept(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    before = cert.read_bytes(), key.read_bytes()

    ensure_self_signed(cert, key, ["other.example.com"], [])

    assert (cert.read_bytes(), key.read_bytes()) == before


def test_lone_key_is_never_overwritten(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(b"precious")

    with pytest.raises(CertificateError, match=r"^only one of certificate and key exists$"):
        ensure_self_signed(tmp_path / "cert.pem", key, ["localhost"], [])

    assert key.read_bytes() == b"precious"
    assert not (tmp_path / "cert.pem").exists()


@pytest.mark.parametrize(
    ("hostnames", "ips", "message"),
    [
        ([], [], r"^a certificate needs a hostname or an IP address$"),
        (["localhost"], ["300.1.1.1"], r"^invalid hostname or IP address for a certificate$"),
    ],
)
def test_bad_certificate_request_raises_fixed_error_and_writes_nothing(
    tmp_path: Path, hostnames: list[str], ips: list[str], message: str
) -> None:
    with pytest.raises(CertificateError, match=message):
        ensure_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", hostnames, ips)

    assert list(tmp_path.iterdir()) == []


def test_unloadable_files_raise_certificate_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")

    with pytest.raises(CertificateError, match=r"^certificate or key cannot be loaded$"):
        server_context(garbage, garbage)
    with pytest.raises(CertificateError, match=r"^certificate or key cannot be loaded$"):
        server_context(tmp_path / "missing.pem", tmp_path / "missing.key")
    with pytest.raises(CertificateError, match=r"^CA file cannot be loaded$"):
        client_context(cafile=garbage)


def test_contexts_require_tls12_or_later(pair: tuple[Path, Path]) -> None:
    server, client = server_context(*pair), client_context(cafile=pair[0])

    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    tls12 = {cipher["name"] for cipher in server.get_ciphers() if cipher["protocol"] == "TLSv1.2"}
    assert tls12 and all(name.startswith("ECDHE-") for name in tls12)
    assert all("GCM" in name or "CHACHA20" in name for name in tls12)


async def handshake(
    pair: tuple[Path, Path], client: ssl.SSLContext, server_hostname: str
) -> tuple[bytes, str | None, str]:
    """Echo five bytes through a TLS server built on ``server_context``."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, HOST, 0, ssl=server_context(*pair))
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, ssl=client, server_hostname=server_hostname), 20
        )
        writer.write(b"hello")
        echoed = await asyncio.wait_for(reader.readexactly(5), 20)
        ssl_object = writer.get_extra_info("ssl_object")
        writer.close()
        return echoed, ssl_object.version(), ssl_object.cipher()[0]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("server_hostname", [HOST, "sip.example.com"])
async def test_client_verifies_generated_certificate_by_ip_and_name(
    pair: tuple[Path, Path], server_hostname: str
) -> None:
    echoed, version, _ = await handshake(pair, client_context(cafile=pair[0]), server_hostname)

    assert echoed == b"hello"
    assert version == "TLSv1.3"


async def test_tls12_handshake_negotiates_ecdhe_aead(pair: tuple[Path, Path]) -> None:
    client = client_context(cafile=pair[0])
    client.maximum_version = ssl.TLSVersion.TLSv1_2

    echoed, version, cipher = await handshake(pair, client, HOST)

    assert echoed == b"hello"
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-ECDSA-") and ("GCM" in cipher or "CHACHA20" in cipher)


async def test_client_rejects_name_missing_from_certificate_unless_unverified(
    pair: tuple[Path, Path],
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(pair, client_context(cafile=pair[0]), "evil.example.com")

    echoed, _, _ = await handshake(pair, client_context(verify=False), "evil.example.com")
    assert echoed == b"hello"


def memory_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """Run a TLS handshake between two contexts through memory BIOs; raise the server's error."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname=HOST)
    for _ in range(10):
        for side in (client_side, server_side):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                if side is server_side:
                    raise
        server_in.write(client_out.read())
        client_in.write(server_out.read())


def test_server_refuses_tls11_client(pair: tuple[Path, Path]) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = ssl.TLSVersion.TLSv1_1
        client.maximum_version = ssl.TLSVersion.TLSv1_1

    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        memory_handshake(server_context(*pair), client)
    memory_handshake(server_context(*pair), client_context(cafile=pair[0]))
