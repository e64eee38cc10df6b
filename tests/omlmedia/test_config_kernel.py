"""``[media] kernel_forwarding``: off by default, a boolean, checked by check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from omlmedia.config import ConfigError, load_config


def test_kernel_forwarding_is_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "omlmedia.toml"
    path.write_text("[media]\ntimeout = 10\n")
    assert load_config(path).media.kernel_forwarding is False


def test_kernel_forwarding_turns_on(tmp_path: Path) -> None:
    path = tmp_path / "omlmedia.toml"
    path.write_text("[media]\nkernel_forwarding = true\n")
    assert load_config(path).media.kernel_forwarding is True


def test_kernel_forwarding_that_is_not_a_boolean_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "omlmedia.toml"
    path.write_text('[media]\nkernel_forwarding = "yes"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any("media.kernel_forwarding" in e for e in info.value.errors), info.value.errors
