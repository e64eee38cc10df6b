"""Tests of the omlmedia command line: serve flags, check-config, hash-password, --version."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from omlmedia.cli import build_config, main, parse_args
from omlmedia.config import Config, digest_ha1, load_config, package_version


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
    root.setLevel(saved[1])


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omlmedia", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_version_flag_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"omlmedia {package_version()}\n"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_serve_without_flags_builds_the_demo_on_loopback() -> None:
    config = build_config(parse_args(["serve"]))
    assert config.is_demo
    assert config.server.listen == ("127.0.0.1",)
    assert config.server.sip_tls_port == 5061
    pbx = config.trunk("pbx")
    assert pbx is not None and (pbx.host, pbx.port) == ("127.0.0.1", 5070)


def test_serve_flags_reach_the_config(tmp_path: Path) -> None:
    args = parse_args(
        [
            "serve",
            "--listen",
            "127.0.0.1,::1",
            "--listen",
            "192.0.2.1",
            "--sip-port",
            "5080",
            "--sip-tls-port",
            "5081",
            "--http-port",
            "8000",
            "--rtp-ports",
            "30000-30100",
            "--data-dir",
            str(tmp_path / "d"),
            "--log-level",
            "DEBUG",
            "--log-format",
            "json",
            "--demo-pbx",
            "[::1]:5090",
            "--demo-password",
            "pw-0123456789",
            "--api-token",
            "tok",
        ]
    )
    config = build_config(args)
    server = config.server
    assert server.listen == ("127.0.0.1", "::1", "192.0.2.1")
    assert (server.sip_port, server.sip_tls_port, server.http_port) == (5080, 5081, 8000)
    assert server.rtp_port_range == (30000, 30100)
    assert server.data_dir == tmp_path / "d"
    assert (server.log_level, server.log_format) == ("debug", "json")
    pbx = config.trunk("pbx")
    assert pbx is not None and (pbx.host, pbx.port) == ("::1", 5090) and pbx.trusts("::1")
    demo = config.user("demo")
    assert (
        demo is not None and demo.ha1_sha256 == digest_ha1("demo", "omlmedia", "pw-0123456789")[1]
    )
    assert config.api.token_matches("tok")
    assert config.generated.api_token is None and config.generated.demo_password is None


ENV = {"OMLMEDIA_API_TOKEN": "env-token", "OMLMEDIA_DEMO_PASSWORD": "env-password"}


def demo_ha1(config: Config) -> str:
    demo = config.user("demo")
    assert demo is not None and demo.ha1_md5 is not None
    return demo.ha1_md5


def test_secrets_come_from_argv_then_files_then_the_environment_and_argv_is_warned(
    tmp_path: Path,
) -> None:
    (tmp_path / "pw").write_text("file-password\nignored\n")
    (tmp_path / "tok").write_text("file-token\n")
    warnings: list[str] = []
    files = [
        "--demo-password-file",
        str(tmp_path / "pw"),
        "--api-token-file",
        str(tmp_path / "tok"),
    ]
    config = build_config(parse_args(["serve", *files]), ENV, warnings.append)
    assert demo_ha1(config) == digest_ha1("demo", "omlmedia", "file-password")[0]
    assert config.api.token_matches("file-token") and warnings == []
    config = build_config(parse_args(["serve"]), ENV, warnings.append)
    assert demo_ha1(config) == digest_ha1("demo", "omlmedia", "env-password")[0]
    assert config.api.token_matches("env-token") and warnings == []
    argv = ["serve", "--demo-password", "argv-password", "--api-token", "argv-token"]
    config = build_config(parse_args(argv), ENV, warnings.append)
    assert demo_ha1(config) == digest_ha1("demo", "omlmedia", "argv-password")[0]
    assert config.api.token_matches("argv-token")
    assert warnings == [
        "--demo-password on the command line is visible to every user of this host (ps): use "
        "--demo-password-file or OMLMEDIA_DEMO_PASSWORD",
        "--api-token on the command line is visible to every user of this host (ps): use "
        "--api-token-file or OMLMEDIA_API_TOKEN",
    ]


def test_a_secret_flag_and_its_file_flag_exclude_each_other(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["serve", "--api-token", "t", "--api-token-file", "f"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_demo_password_variable_is_ignored_with_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("")
    config = build_config(parse_args(["serve", "--config", str(path)]), ENV)
    assert config.api.token_matches("env-token")


def test_serve_warns_about_argv_secrets_and_refuses_an_unreadable_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--api-token-file", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "--api-token-file: cannot read" in err and "No such file or directory" in err
    assert main(["serve", "--listen", "0.0.0.0", "--demo-password", "short"]) == 2
    assert "at least 12 characters when listening beyond loopback" in capsys.readouterr().err
    seen: list[Config] = []

    async def serve(config: Config) -> int:
        seen.append(config)
        return 0

    fake = types.ModuleType("omlmedia.server")
    fake.serve = serve  # type: ignore[attr-defined]
    fake.banner = lambda config: "BANNER"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omlmedia.server", fake)
    monkeypatch.setenv("OMLMEDIA_DEMO_PASSWORD", "env-password")
    data_dir = str(tmp_path / "d")
    assert main(["serve", "--data-dir", data_dir, "--api-token", "argv-token"]) == 0
    assert "omlmedia: warning: --api-token on the command line" in capsys.readouterr().err
    assert demo_ha1(seen[-1]) == digest_ha1("demo", "omlmedia", "env-password")[0]


def test_serve_no_tls_flag_turns_tls_off() -> None:
    assert build_config(parse_args(["serve", "--no-tls"])).server.sip_tls_port is None


def test_serve_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nsip_port = 5070\nhttp_port = 9000\n")
    config = build_config(parse_args(["serve", "--config", str(path), "--sip-port", "5072"]))
    assert (config.server.sip_port, config.server.http_port) == (5072, 9000)
    assert config.source == path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--rtp-ports", "20000"], "expected LOW-HIGH"),
        (["serve", "--demo-pbx", "127.0.0.1"], "expected HOST:PORT"),
        (["serve", "--sip-port", "x"], "not a port number"),
        (["serve", "--log-format", "xml"], "invalid choice"),
        (["serve", "--no-tls", "--sip-tls-port", "5061"], "not allowed with argument"),
        (["hash-password"], "--user"),
    ],
)
def test_bad_flags_exit_2_with_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--sip-port", "0"], "  --sip-port (server.sip_port): must be an integer from 1 to 65535"),
        (["--rtp-ports", "20001-20003"], "  --rtp-ports (server.rtp_port_range): LOW must be even"),
        (["--sip-port", "20000"], "  server.rtp_port_range: contains server.sip_port 20000 (UDP)"),
        (["--http-port", "5060"], "  --http-port (server.http_port): port 5060 clashes with"),
        (["--demo-pbx", "h:0"], "  --demo-pbx (trunks[0].port): must be an integer from 1"),
    ],
)
def test_serve_with_bad_flag_values_exits_2_with_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("omlmedia: embedded demo configuration: 1 error\n")
    assert error in err


def test_serve_with_broken_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nsip_port = 0\n[[trunks]]\nname = 'x'\n")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"omlmedia: {path}: 2 errors\n"
        "  server.sip_port: must be an integer from 1 to 65535\n"
        "  trunks[0].host: required\n"
    )


def test_serve_with_toml_syntax_error_or_missing_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n")
    result = run("serve", "--config", str(path))
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert "line 1, column 8: Expected ']' at the end of a table declaration" in result.stderr
    result = run("serve", "--config", str(tmp_path / "none.toml"))
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert "cannot read: No such file or directory" in result.stderr


def test_serve_with_demo_only_flag_and_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("")
    assert main(["serve", "--config", str(path), "--demo-password", "x"]) == 2
    assert "--demo-password: only applies to the embedded demo" in capsys.readouterr().err


def test_serve_creates_data_dir_prints_banner_and_returns_server_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Config] = []

    async def serve(config: Config) -> int:
        seen.append(config)
        return 7

    def banner(config: Config) -> str:
        return f"BANNER token={config.generated.api_token}"

    fake = types.ModuleType("omlmedia.server")
    fake.serve = serve  # type: ignore[attr-defined]
    fake.banner = banner  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omlmedia.server", fake)
    data_dir = tmp_path / "a" / "b"
    assert main(["serve", "--data-dir", str(data_dir), "--sip-port", "5099"]) == 7
    assert data_dir.is_dir()
    (config,) = seen
    assert config.server.sip_port == 5099 and config.server.data_dir == data_dir
    token = config.generated.api_token
    assert token and capsys.readouterr().out == f"BANNER token={token}\n"


def test_serve_without_server_module_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "omlmedia.server", None)
    assert main(["serve", "--data-dir", str(tmp_path)]) == 1
    assert "omlmedia.server is missing" in capsys.readouterr().err


def test_serve_with_uncreatable_data_dir_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["serve", "--data-dir", str(blocker / "sub")]) == 2
    assert "cannot create data directory" in capsys.readouterr().err


def test_check_config_valid_file_exits_0_with_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        "[server]\nsip_tls_port = false\n"
        "[[trunks]]\nname = 'pbx'\nhost = '192.0.2.1'\n"
        "[[routes]]\nuser = 'echo'\ntarget = 'echo'\n"
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{path}: OK",
        "  listen 127.0.0.1: SIP 5060 (UDP, TCP), no TLS, HTTP 8443, RTP 20000-29999",
        f"  data_dir {tmp_path / 'data'}; log info as kv",
        "  1 trunk(s): pbx (udp:192.0.2.1:5060)",
        "  0 user(s), 1 route(s), SIP realm 'omlmedia'",
        "  api.token_sha256 not set: serve generates a random token at each start",
    ]


def test_check_config_lists_every_error_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[server]\nsip_prot = 5060\n[[trunks]]\nname = 'a'\nhost = 'h'\n"
        "[[trunks]]\nname = 'b'\n[[routes]]\nuser = 'x'\ntarget = 'trunk:c'\n"
    )
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"omlmedia: {path}: 3 errors",
        '  server.sip_prot: unknown key (did you mean "sip_port"?)',
        "  trunks[1].host: required",
        '  routes[0].target: unknown trunk "c"',
    ]


def test_check_config_reports_toml_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nsip_port = 50 60\n")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"omlmedia: {path}: 1 error",
        "  line 2, column 15: Expected newline or end of document after a statement",
    ]


def test_hash_password_prints_ha1_lines_usable_in_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Circle Of Life\n"))
    assert main(["hash-password", "--user", "Mufasa", "--realm", "testrealm@host.com"]) == 0
    out = capsys.readouterr().out
    values = tomllib.loads(out)
    assert values["ha1_md5"] == "939e7578ed9e3c518a452acee763bce9"
    assert (values["ha1_md5"], values["ha1_sha256"]) == digest_ha1(
        "Mufasa", "testrealm@host.com", "Circle Of Life"
    )
    path = tmp_path / "users.toml"
    path.write_text("[sip]\nrealm = 'testrealm@host.com'\n[[users]]\nname = 'Mufasa'\n" + out)
    user = load_config(path).user("Mufasa")
    assert user is not None and user.ha1_md5 == values["ha1_md5"]


def test_hash_password_reads_stdin_in_a_subprocess_with_default_realm() -> None:
    result = run("hash-password", "--user", "demo", stdin="pw\n")
    assert result.returncode == 0
    values = tomllib.loads(result.stdout)
    assert (values["ha1_md5"], values["ha1_sha256"]) == digest_ha1("demo", "omlmedia", "pw")


def test_hash_password_refuses_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["hash-password", "--user", "u"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "empty password" in captured.err


def test_urls_put_ipv6_hosts_in_brackets() -> None:
    from omlmedia.server import url_host

    assert url_host("::1") == "[::1]"
    assert url_host("2001:db8::5") == "[2001:db8::5]"
    assert url_host("[::1]") == "[::1]"
    assert url_host("127.0.0.1") == "127.0.0.1"
