"""Revoking a node's certificate on the encrypted internal leg (``[cluster] tls_crl``): with a
CRL of the cluster's CA, `mutual_contexts` refuses at the handshake a peer whose certificate
is revoked, either way round, and still serves a good one; check-config refuses a CRL that is
not one, is signed by another CA, or has expired, naming ``cluster.tls_crl``.

The handshakes run over a real loopback socket pair (`socket.socketpair`), the server side in a
thread: no servers, well under a second. One test runs the internal listener itself
(`SipTransports`, its CRL polled every 0.2 s instead of 2 s) and replaces its CRL file while a
node's link is open: under a second too.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from omlmedia.cli import main
from omlmedia.config import ConfigError, load_config
from omlmedia.server import _internal_link
from sip import transport
from sip.tls import CertificateError, MutualContexts, check_crl, mutual_contexts
from sip.transport import Internal, SipTransports
from tests.cluster.pki import NOW, Authority, authority


@dataclass
class Pki:
    ca: Authority
    good: tuple[Path, Path]
    revoked: tuple[Path, Path]
    crl: Path
    directory: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("crl")
    ca = authority(directory, "cluster")
    good_cert, good_key, _ = ca.issue(directory, "good")
    bad_cert, bad_key, bad_serial = ca.issue(directory, "stolen")
    crl = ca.crl(directory / "crl.pem", [bad_serial], NOW + datetime.timedelta(days=1))
    return Pki(ca, (good_cert, good_key), (bad_cert, bad_key), crl, directory)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str | None, str | None]:
    """A TLS handshake between the two contexts over a loopback socket pair, then one byte each
    way (TLS 1.3 refuses a client's certificate after the client's Finished): each side's
    failure, None where it succeeded."""
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    errors: dict[str, str | None] = {"server": None, "client": None}

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                tls.sendall(b"s")
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors["server"] = str(exc)
            left.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right) as tls:
            tls.sendall(b"c")
            if tls.recv(1) != b"s":
                raise ConnectionError("the server closed the link")
    except (ssl.SSLError, OSError) as exc:
        errors["client"] = str(exc)
        right.close()
    thread.join(10)
    assert not thread.is_alive()
    return errors["server"], errors["client"]


def test_a_revoked_client_certificate_is_refused_at_the_handshake_and_a_good_one_served(
    pki: Pki,
) -> None:
    server, _ = mutual_contexts(*pki.good, pki.ca.path, pki.crl)
    assert server.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    _, good_client = mutual_contexts(*pki.good, pki.ca.path, pki.crl)
    assert _handshake(server, good_client) == (None, None)
    _, stolen_client = mutual_contexts(*pki.revoked, pki.ca.path)  # the thief has no CRL
    server_error, client_error = _handshake(server, stolen_client)
    assert server_error is not None and "revoked" in server_error, server_error
    assert client_error is not None


def test_a_node_presenting_a_revoked_certificate_is_refused_by_the_connecting_node(
    pki: Pki,
) -> None:
    stolen_server, _ = mutual_contexts(*pki.revoked, pki.ca.path)
    _, client = mutual_contexts(*pki.good, pki.ca.path, pki.crl)
    _, client_error = _handshake(stolen_server, client)
    assert client_error is not None and "revoked" in client_error, client_error


def test_without_a_crl_the_revoked_certificate_is_still_served(pki: Pki) -> None:
    # What tls_crl changes: the same certificate, no CRL loaded, is a member.
    server, _ = mutual_contexts(*pki.good, pki.ca.path)
    _, stolen_client = mutual_contexts(*pki.revoked, pki.ca.path)
    assert _handshake(server, stolen_client) == (None, None)


def test_check_crl_refuses_junk_another_cas_crl_and_an_expired_one(pki: Pki) -> None:
    check_crl(pki.crl, pki.ca.path)
    junk = pki.directory / "junk.pem"
    junk.write_text("not a CRL\n")
    other = authority(pki.directory / "other", "cluster")  # same name, another key
    foreign = other.crl(pki.directory / "foreign.pem", [], NOW + datetime.timedelta(days=1))
    expired = pki.ca.crl(pki.directory / "expired.pem", [], NOW + datetime.timedelta(minutes=1))
    cases = {
        junk: "CRL cannot be loaded",
        pki.directory / "missing.pem": "CRL cannot be loaded",
        foreign: "CRL is not signed by the CA",
        expired: "CRL expired at",
    }
    for path, message in cases.items():
        with pytest.raises(CertificateError, match=message):
            check_crl(path, pki.ca.path)
        with pytest.raises(CertificateError, match=message):
            mutual_contexts(*pki.good, pki.ca.path, path)


CONFIG = """
[cluster]
redis_url = "redis://127.0.0.1:6379/0"
node = "a"
secret_file = "{secret}"
nodes = {{ a = {{ sip = "127.0.0.1:5071" }}, b = {{ sip = "127.0.0.1:5072" }} }}
tls_cert = "{cert}"
tls_key = "{key}"
tls_ca = "{ca}"
{crl}
"""


def _config(pki: Pki, tmp_path: Path, crl: str) -> Path:
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    secret.chmod(0o600)
    path = tmp_path / "omlmedia.toml"
    cert, key = pki.good
    path.write_text(CONFIG.format(secret=secret, cert=cert, key=key, ca=pki.ca.path, crl=crl))
    return path


def test_the_configuration_takes_tls_crl_and_names_it_when_it_is_bad(
    pki: Pki, tmp_path: Path
) -> None:
    config = load_config(_config(pki, tmp_path, f'tls_crl = "{pki.crl}"'))
    assert config.cluster.tls_crl == pki.crl
    assert load_config(_config(pki, tmp_path, "")).cluster.tls_crl is None
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    for line in (f'tls_crl = "{junk}"', 'tls_crl = "missing.pem"'):
        with pytest.raises(ConfigError) as raised:
            load_config(_config(pki, tmp_path, line))
        assert any(e.startswith("cluster.tls_crl: ") for e in raised.value.errors), raised.value
    alone = _config(pki, tmp_path, "").read_text().split("tls_cert")[0]
    (tmp_path / "alone.toml").write_text(alone + f'tls_crl = "{pki.crl}"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "alone.toml")
    assert "cluster.tls_crl: a CRL of tls_ca: needs tls_cert, tls_key and tls_ca" in str(
        raised.value
    )


def test_check_config_names_cluster_tls_crl_for_another_cas_crl(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(_config(pki, tmp_path, f'tls_crl = "{pki.crl}"'))]) == 0
    other = authority(tmp_path / "other", "cluster")
    foreign = other.crl(tmp_path / "foreign.pem", [], NOW + datetime.timedelta(days=1))
    capsys.readouterr()
    assert main(["check-config", str(_config(pki, tmp_path, f'tls_crl = "{foreign}"'))]) != 0
    assert "cluster.tls_crl: CRL is not signed by the CA" in capsys.readouterr().err


def test_the_servers_internal_link_refuses_a_revoked_node_with_tls_crl(
    pki: Pki, tmp_path: Path
) -> None:
    config = load_config(_config(pki, tmp_path, f'tls_crl = "{pki.crl}"'))
    link = _internal_link(config.cluster)
    assert link is not None
    _, stolen_client = mutual_contexts(*pki.revoked, pki.ca.path)
    server_error, _ = _handshake(link.server_context, stolen_client)
    assert server_error is not None and "revoked" in server_error, server_error
    stolen_server, _ = mutual_contexts(*pki.revoked, pki.ca.path)
    _, client_error = _handshake(stolen_server, link.client_context)
    assert client_error is not None and "revoked" in client_error, client_error
    _, good_client = mutual_contexts(*pki.good, pki.ca.path)
    assert _handshake(link.server_context, good_client) == (None, None)


def _replace(path: Path, data: bytes) -> None:
    """Write `path` as an operator's tool would: a new file renamed over the old."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


async def _refused(port: int, client: ssl.SSLContext) -> bool:
    """Whether the listener at `port` ends a handshake from `client` (TLS 1.3: the client's
    certificate is checked after the client's Finished, so the refusal is an EOF or an alert)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    except (ssl.SSLError, OSError):
        return True
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except TimeoutError:  # an OSError too: first
        return False
    except (ssl.SSLError, OSError):
        return True
    finally:
        writer.close()


async def _until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    """Poll `condition` until true; the seconds it took (fails after `within`)."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, "not within the deadline"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_running_node_applies_a_new_crl_to_new_and_open_links_and_keeps_it_over_junk(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(transport, "CRL_POLL_SECONDS", 0.2)  # the fixed 2 s, shortened
    crl = pki.ca.crl(tmp_path / "crl.pem", [], NOW + datetime.timedelta(days=1))
    contexts = MutualContexts(*pki.good, pki.ca.path, crl)
    transports = SipTransports()
    await transports.start(
        host="127.0.0.1",
        internal=Internal(0, contexts.server, contexts.client, frozenset(), contexts),
    )
    port = transports.local_endpoint("internal").port
    _, stolen = mutual_contexts(*pki.revoked, pki.ca.path)
    _, good = mutual_contexts(*pki.good, pki.ca.path)

    async def members(count: int) -> bool:
        return transports.connection_count == count

    try:
        # Node X is a member: its link is open.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=stolen)
        await _until(lambda: members(1))
        revoking = pki.ca.crl(tmp_path / "revoking.pem", [_serial(pki.revoked[0])], NOW + DAY)
        _replace(crl, revoking.read_bytes())

        async def closed() -> bool:
            return reader.at_eof() or (await _read(reader)) == b""

        took = await _until(closed)
        assert "its certificate is revoked" in caplog.text
        assert took < 2.0, took
        assert await _refused(port, stolen)
        stolen_server, _ = mutual_contexts(*pki.revoked, pki.ca.path)
        _, client_error = await asyncio.to_thread(_handshake, stolen_server, contexts.client)
        assert client_error is not None and "revoked" in client_error, client_error
        writer.close()

        # A junk CRL is refused, logged, and the revocation stays in force.
        _replace(crl, b"-----BEGIN X509 CRL-----\ntypo\n-----END X509 CRL-----\n")

        async def logged() -> bool:
            return "previous CRL stays in force" in caplog.text

        await _until(logged)
        assert contexts.revoked == {_serial(pki.revoked[0])}
        assert await _refused(port, stolen)
        # A good node is still a member: the listener counts its link once its handshake is done.
        _, good_writer = await asyncio.open_connection("127.0.0.1", port, ssl=good)
        await _until(lambda: members(1))
        good_writer.close()
    finally:
        await transports.close()


DAY = datetime.timedelta(days=1)


def _serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


async def _read(reader: asyncio.StreamReader) -> bytes | None:
    """One byte, b"" at the end of the link (an abort or an alert too), None if nothing yet."""
    try:
        return await asyncio.wait_for(reader.read(1), 0.05)
    except TimeoutError:
        return None
    except (ssl.SSLError, OSError):
        return b""
