"""The security settings of issue 12's low items in the configuration: the password-guessing ban's
numbers, no version in the User-Agent/Server header, and the MD5 warning on public listeners."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from omlmedia.config import Config, ConfigError, digest_warnings, load_config, load_demo_config

TOKEN = hashlib.sha256(b"t").hexdigest()
USERS = f'[[users]]\nname = "alice"\nha1_md5 = "{"0" * 32}"\n\n[[users]]\nname = "bob"\n'
USERS += f'ha1_sha256 = "{"0" * 64}"\n'


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(f'[api]\ntoken_sha256 = "{TOKEN}"\n{text}')
    return load_config(path)


def test_the_password_guessing_ban_is_configurable_with_safe_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    security = config.security
    assert (security.auth_max_failures, security.auth_failure_window, security.auth_ban_time) == (
        10,
        600.0,
        3600.0,
    )
    config = load(
        tmp_path, "[security]\nauth_max_failures = 3\nauth_failure_window = 60\nauth_ban_time = 0\n"
    )
    security = config.security
    assert (security.auth_max_failures, security.auth_failure_window, security.auth_ban_time) == (
        3,
        60.0,
        0.0,
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("auth_max_failures = 0", "security.auth_max_failures: must be an integer from 1"),
        ("auth_failure_window = 0", "security.auth_failure_window: must be greater than 0"),
        ("auth_ban_time = -1", "security.auth_ban_time: must be at least 0"),
        ('auth_ban_time = "1h"', "security.auth_ban_time: expected a number"),
    ],
)
def test_bad_ban_numbers_name_the_field(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[security]\n{text}\n")
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_the_user_agent_names_no_version() -> None:
    assert load_demo_config().server.user_agent == "omlmedia"


def test_md5_is_warned_about_only_beyond_loopback_and_names_md5_only_users(
    tmp_path: Path,
) -> None:
    assert digest_warnings(load(tmp_path, USERS)) == []
    public = load(tmp_path, '[server]\nlisten = ["0.0.0.0"]\n' + USERS)
    [warning] = digest_warnings(public)
    assert warning.startswith("sip.digest_algorithms: MD5 is offered")
    assert warning.endswith("users with an MD5 hash only: alice")
    sha_only = load(
        tmp_path, '[server]\nlisten = ["0.0.0.0"]\n[sip]\ndigest_algorithms = ["SHA-256"]\n' + USERS
    )
    assert digest_warnings(sha_only) == []
