"""Accounts and API tokens: who may use the server, with which role and scope, kept in the store.

Theory of operation. One table of accounts (`accounts`), each with a `Role` (``admin``,
``supervisor``, ``agent``, ``reporting``), an optional scope (campaign and queue names; none means
every one), a scrypt password hash (`webrtc.accounts.hash_password`) and a ``disabled`` flag. The
configuration file seeds it at every start (`AccountBook.seed`): ``[[accounts]]`` are created or
brought in line with the file (origin ``config``), and accounts the file no longer declares are
removed; accounts created through the API (origin ``api``) are the store's alone. The file stays
the truth for what it declares, so the API may only disable or enable those. Agents (role
``agent``) are the directory's (`omlmedia.directory`: seeded from ``[[agents]]``, then changed at
``/api/v1/agents``): the account routes and `seed` leave them alone.

API tokens (`api_tokens`) belong to an account (they carry its role, and its scope narrowed by
the token's own) or to a named integration (with a role and scope of their own). A token is
``oml_<id>_<secret>``: `id` is public (12 hex digits: it names the token in lists, the audit log
and ``DELETE /api/v1/tokens/{id}``), `secret` is 32 random bytes. It is shown once, at creation;
the store keeps only the SHA-256 of the whole token, which is enough for a secret of that entropy
(a password, guessable, gets scrypt instead). `authenticate` finds the token by its id and
compares the hashes with `hmac.compare_digest`; an expired or revoked token, or one of a disabled
or removed account, never authenticates again. The configured API token (``api.token_sha256``)
stays valid as the ``bootstrap`` integration token with the ``admin`` role.

Every change is written together with its audit entry (`omlmedia.audit`) in one transaction, on
the book's own thread (`call`), so the event loop never waits for the disk; `authenticate` reads
only memory (the rows loaded at start and updated after each commit).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from omlmedia import audit
from omlmedia.audit import AuditEntry
from omlmedia.authz import Identity, Role
from omlmedia.notify import ACCOUNTS, notify_statement
from omlmedia.storage import open_database
from omlmedia.storage_pg import is_dsn
from webrtc.accounts import (
    Account,
    AccountStore,
    SharedLockouts,
    check_password,
    hash_password,
    parse_password_hash,
    source_key,
)
from webrtc.config import AgentConfig
from webrtc.exceptions import LoginError

__all__ = [
    "BOOTSTRAP",
    "NAME",
    "SESSION_LABEL",
    "TOKEN_PREFIX",
    "AccountBook",
    "AccountConflictError",
    "AccountRow",
    "AccountSeed",
    "ConfiguredToken",
    "Keep",
    "PasswordLogins",
    "TokenRow",
    "UnknownAccountError",
    "UnknownTokenError",
    "account_summary",
    "config_seeds",
    "parse_accounts",
]

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
"""An account's or an integration's name (as an agent's: it may be one)."""
TOKEN_PREFIX = "oml_"
BOOTSTRAP = "bootstrap"
MAX_TOKEN = 256
_TOKEN = re.compile(r"oml_(?P<id>[0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_DUMMY_DIGEST = hashlib.sha256(b"no such token").hexdigest()
_ACCOUNT_KEYS = ("name", "role", "display_name", "password_hash", "scope")
SESSION_LABEL = "session"
"""The label of the tokens `PasswordLogins` issues."""
MAX_SESSIONS = 20
"""Live session tokens an account keeps: a login past that revokes its oldest one."""

P = ParamSpec("P")
T = TypeVar("T")
Clock = Callable[[], float]


class Keep(enum.Enum):
    """A field `AccountBook.update_account` leaves as it is (where None means something)."""

    KEEP = "keep"


class UnknownAccountError(KeyError):
    """No account of that name."""


class UnknownTokenError(KeyError):
    """No token of that id."""


class AccountConflictError(Exception):
    """The change contradicts what exists: `field` names what is wrong, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccountSeed:
    """An account the configuration declares (``[[accounts]]``, or an agent of ``[[agents]]``)."""

    name: str
    role: Role
    password_hash: str = field(repr=False)
    display_name: str = ""
    scope: frozenset[str] | None = None


def parse_accounts(
    value: object, *, agents: Iterable[str], known: Iterable[str]
) -> tuple[tuple[AccountSeed, ...], list[str]]:
    """Validate the ``[[accounts]]`` array of tables: the seeds and every error
    (``accounts[1].role: ...``). Names must differ from the `agents`' and each other; a scope
    names `known` campaigns and queues."""
    if value is None:
        return (), []
    errors: list[str] = []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return (), ["accounts: expected an array of tables ([[accounts]])"]
    agent_names, known_names = set(agents), set(known)
    seen: set[str] = set()
    seeds: list[AccountSeed] = []
    roles = ", ".join(r.value for r in Role if r is not Role.AGENT)
    for index, item in enumerate(value):
        where = f"accounts[{index}]"
        before = len(errors)
        for key in item:
            if key not in _ACCOUNT_KEYS:
                hint = " (plain passwords are not accepted here; run `omlmedia hash-password`)"
                errors.append(f"{where}.{key}: unknown key" + (hint if key == "password" else ""))
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            errors.append(f"{where}.name: must be 1-32 lower-case letters, digits, '_', '.', '-'")
        elif name in agent_names:
            errors.append(f"{where}.name: {name!r} is an agent of [[agents]] already")
        elif name in seen:
            errors.append(f"{where}.name: duplicate account {name!r}")
        else:
            seen.add(name)
        role = item.get("role")
        if role not in {r.value for r in Role} or role == Role.AGENT.value:
            errors.append(f"{where}.role: must be one of {roles} (agents go in [[agents]])")
        display = item.get("display_name", name)
        if not isinstance(display, str) or len(display) > 64:
            errors.append(f"{where}.display_name: must be a string of at most 64 characters")
        password_hash = item.get("password_hash")
        if not isinstance(password_hash, str):
            errors.append(f"{where}.password_hash: required (run `omlmedia hash-password`)")
        else:
            try:
                parse_password_hash(password_hash)
            except ValueError as exc:
                errors.append(f"{where}.password_hash: {exc}")
        scope = item.get("scope")
        if scope is not None and (
            not isinstance(scope, list) or not all(isinstance(s, str) for s in scope)
        ):
            errors.append(f"{where}.scope: expected an array of campaign or queue names")
        elif scope is not None:
            for position, entry in enumerate(scope):
                if entry not in known_names:
                    errors.append(f'{where}.scope[{position}]: unknown campaign or queue "{entry}"')
        if len(errors) == before:
            seeds.append(
                AccountSeed(
                    str(name),
                    Role(role),
                    str(password_hash),
                    str(display),
                    frozenset(scope) if scope is not None else None,
                )
            )
    return tuple(seeds), errors


def config_seeds(
    accounts: Iterable[AccountSeed], agents: Iterable[AgentConfig]
) -> list[AccountSeed]:
    """Every account the configuration declares: ``[[accounts]]`` and the agents (role
    ``agent``)."""
    return [
        *accounts,
        *(AccountSeed(a.name, Role.AGENT, a.password_hash, a.display_name) for a in agents),
    ]


def account_summary(accounts: Iterable[AccountSeed]) -> str:
    """``admin (admin), supervisor1 (supervisor, every campaign)`` for the banner."""
    parts = []
    for seed in accounts:
        if seed.role in (Role.ADMIN, Role.AGENT):
            parts.append(f"{seed.name} ({seed.role})")
        else:
            reach = "every campaign" if seed.scope is None else ", ".join(sorted(seed.scope))
            parts.append(f"{seed.name} ({seed.role}, {reach})")
    return ", ".join(parts)


def _scope_json(scope: frozenset[str] | None) -> str | None:
    return None if scope is None else json.dumps(sorted(scope))


def _scope_of(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(json.loads(text))


def _scope_view(scope: frozenset[str] | None) -> list[str] | None:
    return None if scope is None else sorted(scope)


def narrow(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """The scope both allow (None: everything)."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


@dataclass(frozen=True, slots=True)
class AccountRow:
    """One stored account."""

    name: str
    role: Role
    display_name: str
    password_hash: str = field(repr=False)
    scope: frozenset[str] | None
    disabled: bool
    origin: str
    """``config`` (declared in the file, seeded at start) or ``api``."""
    created: float
    updated: float

    def view(self) -> dict[str, Any]:
        """The account as the API serves it (no password hash)."""
        return {
            "name": self.name,
            "role": self.role.value,
            "display_name": self.display_name,
            "scope": _scope_view(self.scope),
            "disabled": self.disabled,
            "origin": self.origin,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True, slots=True)
class TokenRow:
    """One stored API token (its SHA-256, never the token)."""

    id: str
    sha256: str = field(repr=False)
    account: str | None
    integration: str | None
    role: Role | None
    """An integration token's role (an account's token carries its account's)."""
    scope: frozenset[str] | None
    label: str
    created: float
    created_by: str
    expires: float | None
    revoked: float | None

    def live(self, now: float) -> bool:
        """Neither revoked nor expired."""
        return self.revoked is None and (self.expires is None or now < self.expires)


class ConfiguredToken:
    """The configured API token alone (``api.token_sha256``): the ``bootstrap`` admin."""

    def __init__(self, matches: Callable[[str], bool]) -> None:
        self.matches = matches

    def authenticate(self, token: str) -> Identity | None:
        """The bootstrap identity for the configured token."""
        if len(token) <= MAX_TOKEN and self.matches(token):
            return Identity(BOOTSTRAP, Role.ADMIN, None, BOOTSTRAP)
        return None


_ACCOUNT_COLUMNS = (
    "name, role, display_name, password_hash, scope, disabled, origin, created, updated"
)
_TOKEN_COLUMNS = (
    "id, token_sha256, account, integration, role, scope, label, created, created_by, expires,"
    " revoked"
)


class AccountBook:
    """The accounts, tokens and audit log of the store (its own connection to the SQLite file or
    the PostgreSQL database).

    Changes are synchronous methods meant to run on the book's thread (`call`); `authenticate`
    and the readers of memory (`account`, `accounts`, `tokens`) run anywhere."""

    def __init__(
        self,
        path: Path | str,
        bootstrap: Callable[[str], bool] | None = None,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.path: Path | str = path if is_dsn(path) else Path(path)
        """The SQLite file, or the PostgreSQL DSN (``[storage] dsn``), the store's database."""
        self.clock = clock
        self.bootstrap = ConfiguredToken(bootstrap) if bootstrap is not None else None
        self._db: Any = open_database(self.path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-accounts")
        self._accounts: dict[str, AccountRow] = {}
        self._tokens: dict[str, TokenRow] = {}
        self.reload()

    def reload(self) -> None:
        """Read the accounts and tokens again (on the book's thread): another node sharing the
        database changed them (`omlmedia.notify`)."""
        self._accounts = {
            row[0]: self._account(row)
            for row in self._db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts")
        }
        self._tokens = {
            row[0]: self._token(row)
            for row in self._db.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens")
        }

    @staticmethod
    def _account(row: tuple[Any, ...]) -> AccountRow:
        name, role, display, pw, scope, disabled, origin, created, updated = row
        return AccountRow(
            name,
            Role(role),
            display,
            pw,
            _scope_of(scope),
            bool(disabled),
            origin,
            created,
            updated,
        )

    @staticmethod
    def _token(row: tuple[Any, ...]) -> TokenRow:
        ident, digest, account, integration, role, scope, label, created, by, expires, revoked = row
        return TokenRow(
            ident,
            digest,
            account,
            integration,
            Role(role) if role else None,
            _scope_of(scope),
            label,
            created,
            by,
            expires,
            revoked,
        )

    # -- authentication (memory only) -------------------------------------------------------

    def authenticate(self, token: str) -> Identity | None:
        """The identity of a live token, or None."""
        if len(token) > MAX_TOKEN:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return self.bootstrap.authenticate(token) if self.bootstrap is not None else None
        digest = hashlib.sha256(token.encode("ascii")).hexdigest()
        row = self._tokens.get(match["id"])
        if not hmac.compare_digest(digest, row.sha256 if row is not None else _DUMMY_DIGEST):
            return None
        assert row is not None
        if not row.live(self.clock()):
            return None
        if row.account is None:
            assert row.role is not None
            return Identity(f"integration:{row.integration}", row.role, row.scope, row.id)
        account = self._accounts.get(row.account)
        if account is None or account.disabled:
            return None
        scope = narrow(account.scope, row.scope)
        return Identity(account.name, account.role, scope, row.id, account.name)

    # -- reading ----------------------------------------------------------------------------

    def account(self, name: str) -> AccountRow:
        """The account called `name`; `UnknownAccountError` when there is none."""
        try:
            return self._accounts[name]
        except KeyError:
            raise UnknownAccountError(name) from None

    def accounts(self) -> list[AccountRow]:
        """Every account, by name."""
        return sorted(self._accounts.values(), key=lambda a: a.name)

    def tokens(self) -> list[TokenRow]:
        """Every token (revoked and expired ones too), oldest first."""
        return sorted(self._tokens.values(), key=lambda t: (t.created, t.id))

    def token_view(self, row: TokenRow) -> dict[str, Any]:
        """A token as the API serves it: no secret, no hash; the role and scope it carries now."""
        account = self._accounts.get(row.account) if row.account is not None else None
        role = account.role if account is not None else row.role
        scope = narrow(account.scope, row.scope) if account is not None else row.scope
        return {
            "id": row.id,
            "account": row.account,
            "integration": row.integration,
            "role": role.value if role is not None else None,
            "scope": _scope_view(scope),
            "label": row.label,
            "created": row.created,
            "created_by": row.created_by,
            "expires": row.expires,
            "revoked": row.revoked,
            "active": row.live(self.clock()) and (row.account is None or bool(account)),
        }

    def audit(
        self,
        since: float = 0.0,
        until: float = float("inf"),
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        """Audit entries in [since, until), in time order (on the book's thread)."""
        return audit.entries(self._db, since, until, actor=actor, action=action, target=target)

    def audit_page(
        self,
        since: float = 0.0,
        until: float = float("inf"),
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[AuditEntry], int]:
        """One page of audit entries cut in SQL, and the span's count (on the book's thread)."""
        return audit.entries_page(
            self._db,
            since,
            until,
            actor=actor,
            action=action,
            target=target,
            offset=offset,
            limit=limit,
        )

    # -- changing (on the book's thread) ----------------------------------------------------

    def _write(
        self, entries: Iterable[AuditEntry], *statements: tuple[str, tuple[Any, ...]]
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
            for entry in entries:
                audit.append(db, entry)
            notify = notify_statement(db, ACCOUNTS)  # the other nodes reload (omlmedia.notify)
            if notify is not None:
                db.execute(*notify)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _entry(
        self,
        actor: Identity,
        action: str,
        target: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> AuditEntry:
        return AuditEntry(
            self.clock(), actor.actor, actor.role.value, action, target, before, after
        )

    def record(
        self,
        actor: Identity,
        action: str,
        target: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one audit entry on its own (a supervisor's action)."""
        self._write([self._entry(actor, action, target, before, after)])

    def _put_account(self, row: AccountRow) -> tuple[str, tuple[Any, ...]]:
        return (
            f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _ACCOUNT_COLUMNS.split(", ")[1:]),
            (
                row.name,
                row.role.value,
                row.display_name,
                row.password_hash,
                _scope_json(row.scope),
                int(row.disabled),
                row.origin,
                row.created,
                row.updated,
            ),
        )

    @staticmethod
    def _change_view(
        before: AccountRow | None, after: AccountRow | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        old = before.view() if before is not None else None
        new = after.view() if after is not None else None
        if before is not None and after is not None and before.password_hash != after.password_hash:
            assert new is not None
            new["password"] = "changed"
        return old, new

    def seed(self, seeds: Iterable[AccountSeed]) -> list[str]:
        """Bring the accounts the configuration declares in line with it (created, updated,
        those it no longer declares removed with their tokens revoked), audited as ``config``.
        Returns the names of the accounts that changed."""
        actor = Identity("config", Role.ADMIN)
        now = self.clock()
        wanted = {seed.name: seed for seed in seeds}
        statements: list[tuple[str, tuple[Any, ...]]] = []
        entries: list[AuditEntry] = []
        accounts = dict(self._accounts)
        tokens = dict(self._tokens)
        for seed in wanted.values():
            old = accounts.get(seed.name)
            new = AccountRow(
                seed.name,
                seed.role,
                seed.display_name or seed.name,
                seed.password_hash,
                seed.scope,
                old.disabled if old is not None else False,
                "config",
                old.created if old is not None else now,
                now,
            )
            if old is not None and replace(old, updated=now) == new:
                continue
            accounts[seed.name] = new
            statements.append(self._put_account(new))
            action = "account.create" if old is None else "account.update"
            entries.append(self._entry(actor, action, seed.name, *self._change_view(old, new)))
        for name, old in self._accounts.items():
            if old.origin != "config" or name in wanted or old.role is Role.AGENT:
                continue  # agents are the directory's (`omlmedia.directory`)
            del accounts[name]
            statements.append(("DELETE FROM accounts WHERE name = ?", (name,)))
            entries.append(self._entry(actor, "account.delete", name, old.view(), None))
            self._revoke_of(name, now, tokens, statements)
        if statements:
            self._write(entries, *statements)
            self._accounts, self._tokens = accounts, tokens
        return [entry.target for entry in entries]

    def _revoke_of(
        self,
        account: str,
        now: float,
        tokens: dict[str, TokenRow],
        statements: list[tuple[str, tuple[Any, ...]]],
    ) -> None:
        for ident, row in tokens.items():
            if row.account == account and row.revoked is None:
                tokens[ident] = replace(row, revoked=now)
        statements.append(
            (
                "UPDATE api_tokens SET revoked = ? WHERE account = ? AND revoked IS NULL",
                (now, account),
            )
        )

    def create_account(
        self,
        actor: Identity,
        name: str,
        role: Role,
        password: str,
        *,
        display_name: str = "",
        scope: frozenset[str] | None = None,
    ) -> AccountRow:
        """A new account (origin ``api``); `AccountConflictError` when the name is taken."""
        if name in self._accounts:
            raise AccountConflictError("name", f"an account called {name} exists already")
        now = self.clock()
        row = AccountRow(
            name, role, display_name or name, hash_password(password), scope, False, "api", now, now
        )
        self._write(
            [self._entry(actor, "account.create", name, None, row.view())], self._put_account(row)
        )
        self._accounts = {**self._accounts, name: row}
        return row

    def update_account(
        self,
        actor: Identity,
        name: str,
        *,
        role: Role | None = None,
        display_name: str | None = None,
        password: str | None = None,
        scope: frozenset[str] | Keep | None = Keep.KEEP,
        disabled: bool | None = None,
    ) -> AccountRow:
        """Change an account (`scope` None: every campaign). An account the
        configuration declares may only be disabled or enabled (`AccountConflictError`)."""
        old = self.account(name)
        _not_an_agent(old)
        if old.origin == "config":
            for field_name, value in (
                ("role", role),
                ("display_name", display_name),
                ("password", password),
                ("scope", None if scope is Keep.KEEP else "set"),
            ):
                if value is not None:
                    raise AccountConflictError(
                        field_name,
                        f"the account {name} is declared in the configuration file: change it "
                        "there (the API may only disable or enable it)",
                    )
            if disabled is not None and old.role is Role.AGENT:
                raise AccountConflictError(
                    "disabled", "agents of [[agents]] are enabled and disabled in the file for now"
                )
        new = replace(
            old,
            role=role if role is not None else old.role,
            display_name=display_name if display_name is not None else old.display_name,
            password_hash=hash_password(password) if password is not None else old.password_hash,
            scope=old.scope if isinstance(scope, Keep) else scope,
            disabled=disabled if disabled is not None else old.disabled,
        )
        if new == old:
            return old
        new = replace(new, updated=self.clock())
        self._write(
            [self._entry(actor, "account.update", name, *self._change_view(old, new))],
            self._put_account(new),
        )
        self._accounts = {**self._accounts, name: new}
        return new

    def delete_account(self, actor: Identity, name: str) -> AccountRow:
        """Remove an account created through the API and revoke its tokens."""
        old = self.account(name)
        _not_an_agent(old)
        if old.origin == "config":
            raise AccountConflictError(
                "name", f"the account {name} is declared in the configuration file: remove it there"
            )
        now = self.clock()
        tokens = dict(self._tokens)
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM accounts WHERE name = ?", (name,))
        ]
        self._revoke_of(name, now, tokens, statements)
        self._write([self._entry(actor, "account.delete", name, old.view(), None)], *statements)
        accounts = dict(self._accounts)
        del accounts[name]
        self._accounts, self._tokens = accounts, tokens
        return old

    def create_token(
        self,
        actor: Identity,
        *,
        account: str | None = None,
        integration: str | None = None,
        role: Role | None = None,
        scope: frozenset[str] | None = None,
        label: str = "",
        expires: float | None = None,
    ) -> tuple[str, TokenRow]:
        """A new token for `account` (its role) or `integration` (with `role`): the token, to
        show once, and its row. `scope` narrows the account's scope (it may not widen it)."""
        if (account is None) == (integration is None):
            raise AccountConflictError("account", "give either account or integration")
        if account is not None:
            owner = self.account(account)
            if owner.disabled:
                raise AccountConflictError("account", f"the account {account} is disabled")
            if role is not None:
                raise AccountConflictError("role", "an account's token carries the account's role")
            if scope is not None and owner.scope is not None and not scope <= owner.scope:
                raise AccountConflictError(
                    "scope", "a token cannot reach beyond its account's scope"
                )
        elif role is None:
            raise AccountConflictError("role", "an integration's token needs a role")
        ident = secrets.token_hex(6)
        while ident in self._tokens:
            ident = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{ident}_{secrets.token_urlsafe(32)}"
        now = self.clock()
        row = TokenRow(
            ident,
            hashlib.sha256(token.encode("ascii")).hexdigest(),
            account,
            integration,
            role,
            scope,
            label,
            now,
            actor.actor,
            expires,
            None,
        )
        self._write(
            [self._entry(actor, "token.create", ident, None, self.token_view(row))],
            (
                f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ident,
                    row.sha256,
                    account,
                    integration,
                    role.value if role is not None else None,
                    _scope_json(scope),
                    label,
                    now,
                    actor.actor,
                    expires,
                    None,
                ),
            ),
        )
        self._tokens = {**self._tokens, ident: row}
        return token, row

    def revoke_token(self, actor: Identity, ident: str) -> TokenRow:
        """Revoke a token (at once: it never authenticates again); revoking twice changes
        nothing."""
        old = self._tokens.get(ident)
        if old is None:
            raise UnknownTokenError(ident)
        if old.revoked is not None:
            return old
        new = replace(old, revoked=self.clock())
        self._write(
            [self._entry(actor, "token.revoke", ident, self.token_view(old), self.token_view(new))],
            ("UPDATE api_tokens SET revoked = ? WHERE id = ?", (new.revoked, ident)),
        )
        self._tokens = {**self._tokens, ident: new}
        return new

    def prune_sessions(self, account: str, keep: int = MAX_SESSIONS) -> None:
        """Forget `account`'s session tokens that expired or were revoked, and revoke its oldest
        live ones beyond `keep` (so logins cannot grow the table without bound)."""
        now = self.clock()
        sessions = sorted(
            (t for t in self._tokens.values() if t.account == account and t.label == SESSION_LABEL),
            key=lambda t: (t.created, t.id),
        )
        dead = [t.id for t in sessions if not t.live(now)]
        live = [t for t in sessions if t.live(now)]
        excess = live[: max(0, len(live) - keep)]
        if not dead and not excess:
            return
        actor = Identity(account, self.account(account).role, None, "", account)
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM api_tokens WHERE id = ?", (ident,)) for ident in dead
        ]
        statements += [
            ("UPDATE api_tokens SET revoked = ? WHERE id = ?", (now, t.id)) for t in excess
        ]
        entries = [
            self._entry(actor, "token.revoke", t.id, self.token_view(t), None) for t in excess
        ]
        self._write(entries, *statements)
        tokens = {k: v for k, v in self._tokens.items() if k not in set(dead)}
        for t in excess:
            tokens[t.id] = replace(t, revoked=now)
        self._tokens = tokens

    # -- the directory's changes (`omlmedia.directory`, on the book's thread) --------------

    @property
    def db(self) -> Any:
        """The book's connection (a `sqlite3.Connection` or an
        `omlmedia.storage_pg.PgConnection`, which takes the same calls): read at start, written on
        the book's thread only."""
        return self._db

    def entry(
        self,
        actor: Identity,
        action: str,
        target: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> AuditEntry:
        """An audit entry of `actor`, now."""
        return self._entry(actor, action, target, before, after)

    def commit(
        self,
        entries: Iterable[AuditEntry],
        statements: Iterable[tuple[str, tuple[Any, ...]]],
        accounts: Mapping[str, AccountRow | None] = {},
    ) -> None:
        """Write `statements`, the `accounts` (None: removed, its tokens revoked) and the audit
        `entries` in one transaction, then the accounts in memory."""
        statements = list(statements)
        tokens = dict(self._tokens)
        now = self.clock()
        for name, row in accounts.items():
            if row is None:
                statements.append(("DELETE FROM accounts WHERE name = ?", (name,)))
                self._revoke_of(name, now, tokens, statements)
            else:
                statements.append(self._put_account(row))
        self._write(entries, *statements)
        merged = dict(self._accounts)
        for name, row in accounts.items():
            if row is None:
                merged.pop(name, None)
            else:
                merged[name] = row
        self._accounts, self._tokens = merged, tokens

    # -- the thread -------------------------------------------------------------------------

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` (a method of this book) on the book's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """Close the connection and the thread."""
        self._executor.shutdown(wait=True)
        self._db.close()


def _not_an_agent(row: AccountRow) -> None:
    if row.role is Role.AGENT:
        raise AccountConflictError(
            "name", f"{row.name} is an agent: agents are changed at /api/v1/agents/{row.name}"
        )


class PasswordLogins:
    """Password logins of the accounts that are not agents (the agent page logs agents in on its
    own, `webrtc.signaling`): a right password gives a token of the account, labelled
    ``session``, that expires after `ttl` seconds.

    The lockout is `webrtc.accounts.AccountStore`'s (per account and source with backoff, per
    source, per account from many sources; one ``SECURITY`` line per refusal), fed with the
    book's current accounts at each login; the scrypt check runs on the shared bounded pool
    (`check`), and an unknown name costs the same check against a dummy hash. In a cluster
    (`lockouts`: `omlmedia.lockouts.RedisLockouts`, the agent page's) every node's failures
    count as well, as on the agent page: N nodes behind a balancer give a guesser no more tries
    than one."""

    def __init__(
        self,
        book: AccountBook,
        *,
        ttl: float = 12 * 3600.0,
        check: Callable[[str, str], Awaitable[bool]] = check_password,
        lockouts: SharedLockouts | None = None,
    ) -> None:
        self.book = book
        self.ttl = ttl
        self.check = check
        self.gate = AccountStore([], clock=book.clock)
        self.lockouts = lockouts

    async def login(
        self, name: str, password: str, source: str, port: int = 0
    ) -> tuple[str, TokenRow]:
        """A new session token for `name`; raises `webrtc.exceptions.LoginError`
        (``bad-credentials``, ``locked-out``, ``busy``)."""
        gate = self.gate
        gate.accounts = {
            a.name: Account(a.name, a.display_name, a.password_hash)
            for a in self.book.accounts()
            if not a.disabled and a.role is not Role.AGENT
        }
        ok = False
        lockouts = self.lockouts
        key = source_key(source)
        # The cluster's counts (all nodes' failures) as well as this node's own.
        elsewhere = lockouts is not None and await lockouts.locked(name, key)
        try:
            if not elsewhere and not gate.locked(name, source):
                ok = await self.check(password, gate.password_hash_for(name))
            session = gate.login(name, ok, source, port, locked_elsewhere=elsewhere).session
        except LoginError as exc:
            if lockouts is not None and exc.code == "bad-credentials":
                await lockouts.failed(name, key, name in gate.accounts)
            raise
        if lockouts is not None:
            await lockouts.succeeded(name, key)
        gate.logout(session)  # the gate keeps the lockout; the token is the book's
        account = self.book.account(name)
        actor = Identity(account.name, account.role, account.scope, "", account.name)
        made = await self.book.call(
            self.book.create_token,
            actor,
            account=name,
            label=SESSION_LABEL,
            expires=self.book.clock() + self.ttl,
        )
        await self.book.call(self.book.prune_sessions, name)
        return made
