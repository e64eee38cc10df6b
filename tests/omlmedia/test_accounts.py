"""omlmedia.accounts: accounts seeded from the configuration, tokens (shown once, stored hashed,
expirable, revocable), the audit entry of every change, and all of it surviving a restart."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from omlmedia.accounts import (
    AccountBook,
    AccountConflictError,
    AccountSeed,
    UnknownTokenError,
    account_summary,
    config_seeds,
    parse_accounts,
)
from omlmedia.authz import Identity, Role
from omlmedia.config import ConfigError, load_config, load_demo_config
from webrtc.accounts import hash_password, verify_password
from webrtc.exceptions import LoginError

HASH = hash_password("secret-1", n=2**10)
CONFIGURED = "the-configured-token"
ADMIN = Identity("root", Role.ADMIN)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def configured(token: str) -> bool:
    return (
        hashlib.sha256(token.encode()).hexdigest()
        == hashlib.sha256(CONFIGURED.encode()).hexdigest()
    )


def book(path: Path, clock: Clock | None = None) -> AccountBook:
    return AccountBook(path / "omlmedia.db", configured, clock=clock or Clock())


SEEDS = [
    AccountSeed("admin", Role.ADMIN, HASH, "Administrator"),
    AccountSeed("sup", Role.SUPERVISOR, HASH, "Sue", frozenset({"support"})),
    AccountSeed("agent1", Role.AGENT, HASH, "Ana"),
]


def test_the_configured_token_is_the_bootstrap_admin(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    identity = accounts.authenticate(CONFIGURED)
    assert identity == Identity("bootstrap", Role.ADMIN, None, "bootstrap")
    assert accounts.authenticate("wrong") is None
    assert accounts.authenticate(CONFIGURED + "x") is None
    assert accounts.authenticate("x" * 10_000) is None


def test_an_account_token_carries_the_accounts_role_and_scope_narrowed_by_its_own(
    tmp_path: Path,
) -> None:
    accounts = book(tmp_path)
    accounts.seed(SEEDS)
    token, row = accounts.create_token(ADMIN, account="sup")
    assert token.startswith(f"oml_{row.id}_") and len(token) == 4 + 12 + 1 + 43
    assert accounts.authenticate(token) == Identity(
        "sup", Role.SUPERVISOR, frozenset({"support"}), row.id, "sup"
    )
    narrower, _ = accounts.create_token(ADMIN, account="admin", scope=frozenset({"sales"}))
    identity = accounts.authenticate(narrower)
    assert identity is not None and identity.scope == frozenset({"sales"})
    with pytest.raises(AccountConflictError, match="beyond"):
        accounts.create_token(ADMIN, account="sup", scope=frozenset({"sales"}))
    with pytest.raises(AccountConflictError, match="role"):
        accounts.create_token(ADMIN, account="sup", role=Role.ADMIN)


def test_an_integration_token_has_its_own_role_and_scope(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    token, row = accounts.create_token(
        ADMIN, integration="crm", role=Role.REPORTING, scope=frozenset({"sales"})
    )
    assert accounts.authenticate(token) == Identity(
        "integration:crm", Role.REPORTING, frozenset({"sales"}), row.id
    )
    with pytest.raises(AccountConflictError, match="needs a role"):
        accounts.create_token(ADMIN, integration="crm")


def test_only_the_hash_of_a_token_is_stored(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    token, row = accounts.create_token(ADMIN, integration="crm", role=Role.ADMIN)
    assert row.sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(row)
    accounts.close()
    raw = (tmp_path / "omlmedia.db").read_bytes()
    wal = tmp_path / "omlmedia.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert token.encode() not in raw
    assert token.split("_", 2)[2].encode() not in raw


def test_a_forged_token_with_a_known_id_is_refused(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    token, row = accounts.create_token(ADMIN, integration="crm", role=Role.ADMIN)
    forged = f"oml_{row.id}_" + "A" * 43
    assert accounts.authenticate(forged) is None
    assert accounts.authenticate(f"oml_{'0' * 12}_" + token[-43:]) is None


def test_an_expired_token_never_authenticates(tmp_path: Path) -> None:
    clock = Clock()
    accounts = book(tmp_path, clock)
    token, _ = accounts.create_token(
        ADMIN, integration="crm", role=Role.REPORTING, expires=clock.now + 60
    )
    clock.now += 59.9
    assert accounts.authenticate(token) is not None
    clock.now += 0.1
    assert accounts.authenticate(token) is None
    view = accounts.token_view(accounts.tokens()[0])
    assert view["active"] is False and "token" not in view and "sha256" not in view


def test_a_revoked_token_never_authenticates_and_revoking_twice_changes_nothing(
    tmp_path: Path,
) -> None:
    accounts = book(tmp_path)
    token, row = accounts.create_token(ADMIN, integration="crm", role=Role.ADMIN)
    revoked = accounts.revoke_token(ADMIN, row.id)
    assert revoked.revoked is not None and accounts.authenticate(token) is None
    assert accounts.revoke_token(ADMIN, row.id) == revoked
    with pytest.raises(UnknownTokenError):
        accounts.revoke_token(ADMIN, "000000000000")
    assert [e.action for e in accounts.audit()] == ["token.create", "token.revoke"]


def test_disabling_or_deleting_an_account_stops_its_tokens(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    accounts.create_account(ADMIN, "rita", Role.REPORTING, "password-1")
    token, _ = accounts.create_token(ADMIN, account="rita")
    accounts.update_account(ADMIN, "rita", disabled=True)
    assert accounts.authenticate(token) is None
    accounts.update_account(ADMIN, "rita", disabled=False)
    assert accounts.authenticate(token) is not None
    accounts.delete_account(ADMIN, "rita")
    assert accounts.authenticate(token) is None
    accounts.create_account(ADMIN, "rita", Role.ADMIN, "password-2")
    assert accounts.authenticate(token) is None  # an account of the same name later: still not


def test_a_role_change_applies_to_the_accounts_tokens_at_once(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    accounts.create_account(ADMIN, "rita", Role.REPORTING, "password-1")
    token, _ = accounts.create_token(ADMIN, account="rita")
    accounts.update_account(ADMIN, "rita", role=Role.SUPERVISOR, scope=frozenset({"sales"}))
    identity = accounts.authenticate(token)
    assert identity is not None
    assert (identity.role, identity.scope) == (Role.SUPERVISOR, frozenset({"sales"}))


def test_a_password_reset_is_scrypt_and_audited_without_the_hash(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    accounts.create_account(ADMIN, "rita", Role.REPORTING, "password-1")
    row = accounts.update_account(ADMIN, "rita", password="password-2")
    assert row.password_hash.startswith("scrypt$") and verify_password(
        "password-2", row.password_hash
    )
    entry = accounts.audit(action="account.update")[0]
    assert entry.after is not None and entry.after["password"] == "changed"
    assert "password_hash" not in entry.after and "password-2" not in str(entry)


def test_every_change_is_audited_with_who_what_when_before_and_after(tmp_path: Path) -> None:
    clock = Clock()
    accounts = book(tmp_path, clock)
    accounts.create_account(ADMIN, "rita", Role.REPORTING, "password-1")
    clock.now += 1
    accounts.update_account(ADMIN, "rita", display_name="Rita")
    clock.now += 1
    accounts.delete_account(ADMIN, "rita")
    created, updated, deleted = accounts.audit()
    assert (created.actor, created.role, created.action, created.target) == (
        "root",
        "admin",
        "account.create",
        "rita",
    )
    assert created.before is None and created.after is not None
    assert created.after["role"] == "reporting"
    assert updated.time == created.time + 1
    assert updated.before is not None and updated.before["display_name"] == "rita"
    assert updated.after is not None and updated.after["display_name"] == "Rita"
    assert deleted.before is not None and deleted.after is None
    assert [e.target for e in accounts.audit(since=created.time + 1)] == ["rita", "rita"]
    assert len(accounts.audit(action="account.")) == 3
    assert accounts.audit(actor="someone-else") == []


def test_accounts_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    first = book(tmp_path, clock)
    first.seed(SEEDS)
    first.create_account(ADMIN, "rita", Role.REPORTING, "password-1", scope=frozenset({"sales"}))
    token, row = first.create_token(ADMIN, account="rita", label="wallboard")
    gone, gone_row = first.create_token(ADMIN, integration="crm", role=Role.ADMIN)
    first.revoke_token(ADMIN, gone_row.id)
    first.close()
    second = book(tmp_path, clock)
    assert second.authenticate(token) == Identity(
        "rita", Role.REPORTING, frozenset({"sales"}), row.id, "rita"
    )
    assert second.authenticate(gone) is None
    assert [a.name for a in second.accounts()] == ["admin", "agent1", "rita", "sup"]
    assert sorted(t.label for t in second.tokens()) == ["", "wallboard"]
    assert len(second.audit()) == 3 + 4  # seeding three accounts, then four changes
    second.close()


def test_seeding_follows_the_file_and_keeps_what_the_api_made(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    assert accounts.seed(SEEDS) == ["admin", "sup", "agent1"]
    assert accounts.seed(SEEDS) == []  # the same file again: nothing changes, nothing audited
    accounts.create_account(ADMIN, "rita", Role.REPORTING, "password-1")
    token, _ = accounts.create_token(ADMIN, account="sup")
    accounts.update_account(ADMIN, "admin", disabled=True)
    changed = AccountSeed("admin", Role.ADMIN, HASH, "Boss")
    # agent1 left the file too, but agents are the directory's (omlmedia.directory): kept.
    assert accounts.seed([changed]) == ["admin", "sup"]
    assert [a.name for a in accounts.accounts()] == ["admin", "agent1", "rita"]
    assert accounts.account("admin").display_name == "Boss"
    assert accounts.account("admin").disabled  # the API's disabling outlives a restart
    assert accounts.authenticate(token) is None  # sup left the file: its tokens are revoked
    assert [e.actor for e in accounts.audit(action="account.delete")] == ["config"]


def test_the_file_owns_what_it_declares(tmp_path: Path) -> None:
    accounts = book(tmp_path)
    accounts.seed(SEEDS)
    for change in ({"role": Role.REPORTING}, {"password": "password-9"}, {"scope": None}):
        with pytest.raises(AccountConflictError, match="configuration file"):
            accounts.update_account(ADMIN, "sup", **change)  # type: ignore[arg-type]
    with pytest.raises(AccountConflictError, match="configuration file"):
        accounts.delete_account(ADMIN, "sup")
    with pytest.raises(AccountConflictError, match="/api/v1/agents/agent1"):
        accounts.update_account(ADMIN, "agent1", disabled=True)
    with pytest.raises(AccountConflictError, match="exists already"):
        accounts.create_account(ADMIN, "sup", Role.ADMIN, "password-1")
    assert accounts.update_account(ADMIN, "sup", disabled=True).disabled


def test_a_store_at_schema_version_2_gets_the_accounts_tables(tmp_path: Path) -> None:
    path = tmp_path / "omlmedia.db"
    db = sqlite3.connect(path, isolation_level=None)
    from omlmedia.migrations import MIGRATIONS, migrate

    before = [m for m in MIGRATIONS if m.version < 3]
    migrate(db, before)
    db.close()
    accounts = AccountBook(path, None)
    accounts.seed(SEEDS)
    assert accounts.authenticate(CONFIGURED) is None  # no configured token given
    accounts.close()


# -- the configuration ----------------------------------------------------------------------


def test_the_demo_declares_admin_and_supervisor1_with_the_demo_password() -> None:
    config = load_demo_config()
    password = config.generated.demo_password
    assert password is not None
    seeds = {s.name: s for s in config_seeds(config.accounts, config.webrtc.agents)}
    assert (seeds["admin"].role, seeds["admin"].scope) == (Role.ADMIN, None)
    assert (seeds["supervisor1"].role, seeds["supervisor1"].scope) == (Role.SUPERVISOR, None)
    assert seeds["agent1"].role is Role.AGENT
    assert verify_password(password, seeds["supervisor1"].password_hash)
    assert account_summary(config.accounts) == (
        "admin (admin), supervisor1 (supervisor, every campaign)"
    )


def test_accounts_of_the_file_are_validated_naming_each_field(tmp_path: Path) -> None:
    seeds, errors = parse_accounts(
        [
            {"name": "Bad Name", "role": "admin", "password_hash": HASH},
            {"name": "agent1", "role": "supervisor", "password_hash": HASH},
            {"name": "a", "role": "agent", "password_hash": HASH},
            {"name": "b", "role": "reporting", "password": "clear"},
            {"name": "c", "role": "supervisor", "password_hash": HASH, "scope": ["nope"]},
            {"name": "d", "role": "supervisor", "password_hash": HASH, "scope": ["support"]},
        ],
        agents=["agent1"],
        known=["support"],
    )
    assert [s.name for s in seeds] == ["d"] and seeds[0].scope == frozenset({"support"})
    assert errors == [
        "accounts[0].name: must be 1-32 lower-case letters, digits, '_', '.', '-'",
        "accounts[1].name: 'agent1' is an agent of [[agents]] already",
        "accounts[2].role: must be one of admin, supervisor, reporting (agents go in [[agents]])",
        "accounts[3].password: unknown key (plain passwords are not accepted here; run "
        "`omlmedia hash-password`)",
        "accounts[3].password_hash: required (run `omlmedia hash-password`)",
        'accounts[4].scope[0]: unknown campaign or queue "nope"',
    ]
    path = tmp_path / "bad.toml"
    path.write_text(
        '[server]\nlisten = ["127.0.0.1"]\n[api]\ntoken_sha256 = "' + "0" * 64 + '"\n'
        '[[accounts]]\nname = "x"\nrole = "root"\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "accounts[0].role: must be one of admin, supervisor, reporting" in str(error.value)


def test_the_banner_shows_the_accounts_like_the_agents() -> None:
    from omlmedia.server import banner

    config = load_demo_config()
    text = banner(config)
    assert "  Accounts: admin (admin), supervisor1 (supervisor, every campaign)" in text
    assert f"the agents and the accounts): {config.generated.demo_password}" in text


async def test_logins_keep_a_bounded_number_of_session_tokens(tmp_path: Path) -> None:
    from omlmedia.accounts import SESSION_LABEL, PasswordLogins

    clock = Clock()
    accounts = book(tmp_path, clock)
    accounts.seed(SEEDS)

    async def check(password: str, password_hash: str) -> bool:
        return verify_password(password, password_hash)

    logins = PasswordLogins(accounts, ttl=60.0, check=check)
    first, _ = await logins.login("sup", "secret-1", "192.0.2.1")
    clock.now += 61  # the first session expires: the next login forgets it
    made = []
    for _ in range(4):
        clock.now += 1
        made.append(await logins.login("sup", "secret-1", "192.0.2.1"))
    sessions = [t for t in accounts.tokens() if t.label == SESSION_LABEL]
    assert len(sessions) == 4 and accounts.authenticate(first) is None
    accounts.prune_sessions("sup", keep=2)
    live = [t for t in accounts.tokens() if t.live(clock.now)]
    assert [t.id for t in live] == [row.id for _, row in made[2:]]
    assert accounts.authenticate(made[0][0]) is None and accounts.authenticate(made[3][0])
    with pytest.raises(LoginError):
        await logins.login("agent1", "secret-1", "192.0.2.1")  # agents use the agent page
