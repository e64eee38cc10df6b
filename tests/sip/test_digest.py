"""Tests for sip.digest: RFC 7616 / RFC 2617 / RFC 2069 vectors, server checks, client answers."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.digest import (
    AuthReason,
    DigestClient,
    DigestError,
    DigestServer,
    ha1,
    parse_auth_params,
    parse_challenge,
)

# RFC 7616 §3.9.1
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

REALM = "omlmedia"
SECRET = b"s" * 32
USERS = {"alice": "wonderland", "bob": "builder"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    if password is None:
        return None
    return ha1(username, realm, password, algorithm)


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def answer(challenges: list[str], user: str = "alice", method: str = "INVITE") -> str:
    client = DigestClient(user, USERS.get(user, "nope"))
    return client.authorize(challenges, method, "sip:bob@example.com")


def test_rfc7616_md5_example_response_matches_rfc() -> None:
    client = DigestClient("Mufasa", "Circle of Life")
    value = client.authorize(
        rfc7616_challenge("MD5"), "GET", "/dir/index.html", cnonce=RFC7616_CNONCE
    )
    params = parse_auth_params(value)[1]
    assert params["response"] == RFC7616_MD5
    assert params["nc"] == "00000001"
    assert params["qop"] == "auth"
    assert params["opaque"] == RFC7616_OPAQUE
    assert params["algorithm"] == "MD5"


def test_rfc7616_sha256_example_response_matches_rfc() -> None:
    client = DigestClient("Mufasa", "Circle of Life")
    value = client.authorize(
        rfc7616_challenge("SHA-256"), "GET", "/dir/index.html", cnonce=RFC7616_CNONCE
    )
    params = parse_auth_params(value)[1]
    assert params["response"] == RFC7616_SHA256
    assert params["algorithm"] == "SHA-256"


def test_rfc2617_example_response_matches_rfc() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = DigestClient("Mufasa", "Circle Of Life").authorize(
        challenge, "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    assert parse_auth_params(value)[1]["response"] == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_no_qop_example_response_matches_errata() -> None:
    # RFC 2069 §2.4 prints e966c932...; its erratum gives the correct value checked here.
    challenge = 'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'
    value = DigestClient("Mufasa", "CircleOfLife").authorize(challenge, "GET", "/dir/index.html")
    params = parse_auth_params(value)[1]
    assert params["response"] == "1949323746fe6a43ef61f9606e7febea"
    assert "qop" not in params and "nc" not in params and "cnonce" not in params


def test_ha1_is_hash_of_user_realm_password() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5") == (
        "939e7578ed9e3c518a452acee763bce9"
    )
    assert len(ha1("a", "b", "c")) == 64
    with pytest.raises(DigestError, match="Digest algorithm is not supported"):
        ha1("a", "b", "c", "SHA-1")


def test_challenge_offers_sha256_first_then_md5_with_one_nonce() -> None:
    server = DigestServer(REALM, SECRET)
    values = server.challenge(100.0)
    parsed = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in parsed] == ["SHA-256", "MD5"]
    assert parsed[0].nonce == parsed[1].nonce
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in parsed)
    assert all(c.opaque == server.opaque for c in parsed)
    assert parse_challenge(server.challenge(100.0, stale=True)[0]).stale


def test_each_challenge_has_a_fresh_nonce() -> None:
    server = DigestServer(REALM, SECRET)
    nonces = {parse_challenge(server.challenge(5.0)[0]).nonce for _ in range(50)}
    assert len(nonces) == 50


def test_client_picks_sha256_when_offered() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0))
    assert parse_auth_params(value)[1]["algorithm"] == "SHA-256"
    assert server.verify("INVITE", value, lookup, 1.0).ok


def test_client_uses_md5_when_only_md5_offered() -> None:
    server = DigestServer(REALM, SECRET, algorithms=("MD5",))
    value = answer(server.challenge(0.0))
    assert parse_auth_params(value)[1]["algorithm"] == "MD5"
    result = server.verify("INVITE", value, lookup, 1.0)
    assert result.ok and result.username == "alice" and result.reason is AuthReason.OK


def test_client_skips_unsupported_and_garbage_challenges() -> None:
    server = DigestServer(REALM, SECRET)
    md5 = server.challenge(0.0)[1]
    value = answer(["Basic realm=x", 'Digest realm="x", nonce="y", algorithm=SHA-512-256', md5])
    assert parse_auth_params(value)[1]["algorithm"] == "MD5"
    assert server.verify("INVITE", value, lookup, 0.0).ok


def test_client_with_no_supported_challenge_raises_digest_error() -> None:
    client = DigestClient("alice", "x")
    with pytest.raises(DigestError, match="No supported Digest challenge"):
        client.authorize('Digest realm="x", nonce="y", algorithm=SHA-1', "REGISTER", "sip:x")


def test_client_counts_nc_per_nonce_and_resets_on_new_nonce() -> None:
    server = DigestServer(REALM, SECRET)
    client = DigestClient("alice", USERS["alice"])
    first = server.challenge(0.0)
    ncs = [parse_auth_params(client.authorize(first, "INVITE", "sip:x"))[1]["nc"] for _ in range(3)]
    assert ncs == ["00000001", "00000002", "00000003"]
    fresh = server.challenge(1.0, stale=True)
    assert parse_auth_params(client.authorize(fresh, "INVITE", "sip:x"))[1]["nc"] == "00000001"


def test_verify_accepts_increasing_nc_on_same_nonce() -> None:
    server = DigestServer(REALM, SECRET)
    client = DigestClient("alice", USERS["alice"])
    challenge = server.challenge(0.0)
    for i in range(5):
        value = client.authorize(challenge, "INVITE", "sip:x")
        assert server.verify("INVITE", value, lookup, float(i)).ok
    assert server.tracked_nonces == 1


def test_replayed_authorization_is_rejected() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0))
    assert server.verify("INVITE", value, lookup, 1.0).ok
    replay = server.verify("INVITE", value, lookup, 2.0)
    assert not replay.ok and replay.reason is AuthReason.REPLAY and not replay.stale


def test_non_increasing_nc_is_rejected() -> None:
    server = DigestServer(REALM, SECRET)
    client = DigestClient("alice", USERS["alice"])
    challenge = server.challenge(0.0)
    first = client.authorize(challenge, "INVITE", "sip:x")
    second = client.authorize(challenge, "INVITE", "sip:x")
    assert server.verify("INVITE", second, lookup, 1.0).ok
    late = server.verify("INVITE", first, lookup, 1.0)
    assert not late.ok and late.reason is AuthReason.REPLAY


def test_expired_nonce_with_correct_password_is_stale() -> None:
    server = DigestServer(REALM, SECRET, nonce_ttl=300.0)
    value = answer(server.challenge(0.0))
    result = server.verify("INVITE", value, lookup, 300.5)
    assert not result.ok and result.stale and result.reason is AuthReason.STALE


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    server = DigestServer(REALM, SECRET, nonce_ttl=300.0)
    value = DigestClient("alice", "bad").authorize(server.challenge(0.0), "INVITE", "sip:x")
    result = server.verify("INVITE", value, lookup, 301.0)
    assert not result.ok and not result.stale and result.reason is AuthReason.INVALID


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    server = DigestServer(REALM, SECRET)
    challenge = server.challenge(0.0)
    wrong = DigestClient("alice", "bad").authorize(challenge, "INVITE", "sip:x")
    unknown = DigestClient("mallory", "bad").authorize(challenge, "INVITE", "sip:x")
    r1 = server.verify("INVITE", wrong, lookup, 1.0)
    r2 = server.verify("INVITE", unknown, lookup, 1.0)
    assert (
        (r1.ok, r1.stale, r1.reason)
        == (r2.ok, r2.stale, r2.reason)
        == (
            False,
            False,
            AuthReason.INVALID,
        )
    )
    assert r1.username == "alice" and r2.username == "mallory"


def test_tampered_nonce_is_rejected() -> None:
    server = DigestServer(REALM, SECRET)
    challenge = parse_challenge(server.challenge(0.0)[0])
    raw = bytearray(base64.urlsafe_b64decode(challenge.nonce))
    raw[0] ^= 0x01
    forged_nonce = base64.urlsafe_b64encode(bytes(raw)).decode()
    forged = server.challenge(0.0)[0].replace(challenge.nonce, "X")
    forged = forged.replace(parse_challenge(forged).nonce, forged_nonce)
    value = answer([forged])
    result = server.verify("INVITE", value, lookup, 1.0)
    assert not result.ok and result.reason is AuthReason.NONCE and not result.stale


def test_nonce_from_another_secret_is_rejected() -> None:
    other = DigestServer(REALM, b"t" * 32)
    server = DigestServer(REALM, SECRET)
    value = answer(other.challenge(0.0))
    assert server.verify("INVITE", value, lookup, 1.0).reason is AuthReason.OPAQUE
    without_opaque = value.replace(f', opaque="{other.opaque}"', "")
    assert server.verify("INVITE", without_opaque, lookup, 1.0).reason is AuthReason.NONCE


def test_servers_sharing_a_secret_accept_each_others_nonces() -> None:
    value = answer(DigestServer(REALM, SECRET).challenge(0.0))
    assert DigestServer(REALM, SECRET).verify("INVITE", value, lookup, 1.0).ok


def test_wrong_realm_is_rejected() -> None:
    other = DigestServer("elsewhere", SECRET)
    server = DigestServer(REALM, SECRET)
    value = answer(other.challenge(0.0))
    result = server.verify("INVITE", value, lookup, 1.0)
    assert not result.ok and result.reason is AuthReason.REALM


def test_method_is_part_of_the_response() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0), method="INVITE")
    assert server.verify("BYE", value, lookup, 1.0).reason is AuthReason.INVALID


def test_uri_must_match_request_uri_when_given() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0))
    assert server.verify("INVITE", value, lookup, 1.0, uri="sip:other@x").reason is (AuthReason.URI)
    assert server.verify("INVITE", value, lookup, 1.0, uri="sip:bob@example.com").ok


def test_a_nonce_bound_to_one_request_uri_verifies_for_no_other() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0, bound_to="sip:100@example.com"))
    other = server.verify("INVITE", value, lookup, 1.0, bound_to="sip:900@example.com")
    assert (other.ok, other.stale, other.reason) == (False, True, AuthReason.URI)
    assert not server.verify("INVITE", value, lookup, 1.0).ok
    assert server.verify("INVITE", value, lookup, 1.0, bound_to="sip:100@example.com").ok
    wrong = answer(server.challenge(0.0, bound_to="sip:100@example.com"), user="mallory")
    bad = server.verify("INVITE", wrong, lookup, 1.0, bound_to="sip:900@example.com")
    assert (bad.stale, bad.reason) == (False, AuthReason.INVALID)


def test_wrong_opaque_is_rejected() -> None:
    server = DigestServer(REALM, SECRET)
    challenge = server.challenge(0.0)[0].replace(server.opaque, "bogus")
    result = server.verify("INVITE", answer([challenge]), lookup, 1.0)
    assert result.reason is AuthReason.OPAQUE


def test_algorithm_not_offered_is_rejected() -> None:
    md5 = DigestServer(REALM, SECRET, algorithms=("MD5",))
    sha = DigestServer(REALM, SECRET, algorithms=("SHA-256",))
    value = answer(sha.challenge(0.0))
    assert md5.verify("INVITE", value, lookup, 1.0).reason is AuthReason.ALGORITHM
    bogus = value.replace("algorithm=SHA-256", "algorithm=SHA-1")
    assert sha.verify("INVITE", bogus, lookup, 1.0).reason is AuthReason.ALGORITHM


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_variants_verify_from_the_stored_ha1(algorithm: str) -> None:
    server = DigestServer(REALM, SECRET)
    nonce = parse_challenge(server.challenge(0.0)[0]).nonce
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
    value = answer([challenge])
    assert f"algorithm={algorithm.upper()}" in value
    assert server.verify("INVITE", value, lookup, 1.0).ok


def test_rfc2069_client_is_accepted_once_per_nonce_then_stale() -> None:
    server = DigestServer(REALM, SECRET)
    nonce = parse_challenge(server.challenge(0.0)[0]).nonce
    value = answer([f'Digest realm="{REALM}", nonce="{nonce}"'])
    assert "qop" not in value
    assert server.verify("INVITE", value, lookup, 1.0).ok
    again = server.verify("INVITE", value, lookup, 2.0)
    assert not again.ok and again.stale and again.reason is AuthReason.REPLAY


def test_rfc2069_client_refused_when_no_qop_disallowed() -> None:
    server = DigestServer(REALM, SECRET, allow_no_qop=False)
    nonce = parse_challenge(server.challenge(0.0)[0]).nonce
    value = answer([f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5'])
    assert server.verify("INVITE", value, lookup, 1.0).reason is AuthReason.QOP


def test_auth_int_is_answered_by_client_but_refused_by_server() -> None:
    server = DigestServer(REALM, SECRET)
    nonce = parse_challenge(server.challenge(0.0)[0]).nonce
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth-int"'
    value = DigestClient("alice", USERS["alice"]).authorize(challenge, "INVITE", "sip:x", b"v=0")
    assert "qop=auth-int" in value
    assert server.verify("INVITE", value, lookup, 1.0).reason is AuthReason.QOP


def test_nonce_memory_forgets_expired_nonces() -> None:
    server = DigestServer(REALM, SECRET, nonce_ttl=10.0)
    for i in range(20):
        assert server.verify("INVITE", answer(server.challenge(float(i))), lookup, float(i)).ok
    assert server.tracked_nonces == 11
    assert server.verify("INVITE", answer(server.challenge(100.0)), lookup, 100.0).ok
    assert server.tracked_nonces == 1


def test_full_nonce_table_forgets_oldest_and_makes_it_stale_not_replayable() -> None:
    server = DigestServer(REALM, SECRET, max_nonces=3)
    client = DigestClient("alice", USERS["alice"])
    first = server.challenge(0.0)
    assert server.verify("INVITE", client.authorize(first, "INVITE", "sip:x"), lookup, 0.0).ok
    for i in range(1, 4):
        assert server.verify("INVITE", answer(server.challenge(float(i))), lookup, float(i)).ok
    assert server.tracked_nonces == 3
    result = server.verify("INVITE", client.authorize(first, "INVITE", "sip:x"), lookup, 5.0)
    assert not result.ok and result.stale and result.reason is AuthReason.STALE


def test_uppercase_response_and_case_insensitive_names_accepted() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0))
    params = parse_auth_params(value)[1]
    rebuilt = "DIGEST " + ", ".join(
        f'{k.upper()}="{v.upper() if k == "response" else v}"' for k, v in params.items()
    )
    assert server.verify("INVITE", rebuilt, lookup, 1.0).ok


def test_username_with_quotes_and_backslash_round_trips() -> None:
    users = {'a"b\\c': "pw"}

    def lookup2(username: str, realm: str, algorithm: str) -> str | None:
        return ha1(username, realm, users[username], algorithm) if username in users else None

    server = DigestServer(REALM, SECRET)
    value = DigestClient('a"b\\c', "pw").authorize(server.challenge(0.0), "INVITE", "sip:x")
    result = server.verify("INVITE", value, lookup2, 1.0)
    assert result.ok and result.username == 'a"b\\c'


def test_rfc7616_username_star_is_decoded() -> None:
    server = DigestServer(REALM, SECRET)
    value = answer(server.challenge(0.0))
    value = value.replace('username="alice"', "username*=UTF-8''%61lice")
    result = server.verify("INVITE", value, lookup, 1.0)
    assert result.ok and result.username == "alice"


def test_client_refuses_line_breaks_in_values() -> None:
    with pytest.raises(DigestError, match="Digest credentials contain a line break"):
        DigestClient("alice\r\nVia: x", "pw")
    challenge = DigestServer(REALM, SECRET).challenge(0.0)
    with pytest.raises(DigestError, match="Digest value contains a line break"):
        DigestClient("alice", "pw").authorize(challenge, "INVITE", "sip:x\r\nX: y")


def test_parse_auth_params_handles_commas_inside_quotes() -> None:
    scheme, params = parse_auth_params(
        'Digest realm="a, b", qop="auth,auth-int" , nonce="n\\"q", algorithm=MD5'
    )
    assert scheme == "Digest"
    assert params == {"realm": "a, b", "qop": "auth,auth-int", "nonce": 'n"q', "algorithm": "MD5"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Authentication header is not valid"),
        ("Digest realm", "Authentication header is not valid"),
        ('Digest realm="unterminated', "Authentication header is not valid"),
        ('Digest realm="a",', "Authentication header is not valid"),
        ('Digest realm="a",,nonce="b"', "Authentication header is not valid"),
        ('Digest realm="a" nonce="b"', "Authentication header is not valid"),
        ('Digest realm="a", realm="b"', "Authentication parameter is repeated"),
        ("Digest " + "a=b, " * 1000 + "c=d", "Authentication header is too long"),
    ],
)
def test_malformed_header_raises_digest_error(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message):
        parse_auth_params(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="x"', "Authentication scheme is not Digest"),
        ('Digest realm="x"', "Digest challenge lacks realm or nonce"),
        ('Digest nonce="x"', "Digest challenge lacks realm or nonce"),
    ],
)
def test_unusable_challenge_raises_digest_error(value: str, message: str) -> None:
    with pytest.raises(DigestError, match=message):
        parse_challenge(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        'Digest realm="omlmedia", nonce="x", uri="sip:x", response="y"',
        'Digest username="a", nonce="x", uri="sip:x", response="y"',
        'Digest username="a", realm="omlmedia", nonce="x", uri="sip:x", response="y", qop=auth',
        'Digest username="a", realm="omlmedia", nonce="x", uri="sip:x", response="y", '
        'qop=auth, nc=1, cnonce="c"',
        'Digest username="a", realm="omlmedia", nonce="x", uri="sip:x", response="y", '
        "algorithm=MD5-sess",
        'Digest username="a", realm="omlmedia", nonce="x", uri="x", response="y", username="b"',
    ],
)
def test_malformed_authorization_is_reported_not_raised(value: str) -> None:
    result = DigestServer(REALM, SECRET).verify("INVITE", value, lookup, 0.0)
    assert not result.ok and result.reason is AuthReason.MALFORMED and not result.stale


def test_server_configuration_errors_are_digest_errors() -> None:
    with pytest.raises(DigestError, match="Digest secret is empty"):
        DigestServer(REALM, b"")
    with pytest.raises(DigestError, match="Digest algorithm is not supported"):
        DigestServer(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(DigestError, match="Digest limits must be positive"):
        DigestServer(REALM, SECRET, nonce_ttl=0)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_verify_never_raises_on_arbitrary_text(value: str) -> None:
    result = DigestServer(REALM, SECRET).verify("INVITE", value, lookup, 0.0)
    assert not result.ok


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce", "algorithm"]
        ),
        st.text(max_size=40),
    )
)
def test_verify_never_raises_on_arbitrary_parameters(params: dict[str, str]) -> None:
    server = DigestServer(REALM, SECRET)
    quoted = ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items()
    )
    result = server.verify("INVITE", "Digest " + quoted, lookup, 0.0)
    assert not result.ok


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_client_raises_only_digest_error_on_arbitrary_challenge(value: str) -> None:
    try:
        answered = DigestClient("alice", "pw").authorize(value, "INVITE", "sip:x")
    except DigestError:
        return
    assert answered.startswith('Digest username="alice"')


_names = st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True)
_values = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _values, min_size=1, max_size=8), st.sampled_from([",", " , "]))
def test_parse_auth_params_round_trips_quoted_values(params: dict[str, str], sep: str) -> None:
    quoted = sep.join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items()
    )
    assert parse_auth_params("Digest " + quoted) == ("Digest", params)
