"""The ``omlmedia`` command: serve, check-config, export-config, hash-password (and --version).

Exit status: 0 success, 2 bad usage or bad configuration (a message, never a traceback), 1 other
failures; `serve` returns what the server returns.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import os
import re
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from omlmedia.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    MIN_DEMO_PASSWORD,
    Config,
    ConfigError,
    Overrides,
    cluster_warnings,
    digest_ha1,
    digest_warnings,
    load_config,
    load_demo_config,
    package_version,
    permission_warnings,
    sdes_warnings,
    summary,
)
from omlmedia.logs import configure_logging

_RTP_RANGE = re.compile(r"(\d{1,5})-(\d{1,5})")
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})")
SECRET_ENV = {"api_token": "OMLMEDIA_API_TOKEN", "demo_password": "OMLMEDIA_DEMO_PASSWORD"}
"""Where `serve` finds a secret given neither as a flag nor as a file (never shown in ``ps``)."""


def _rtp_ports(text: str) -> tuple[int, int]:
    match = _RTP_RANGE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("expected LOW-HIGH, e.g. 20000-29999")
    return int(match[1]), int(match[2])


def _host_port(text: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:5070 or [::1]:5070")
    return match["v6"] or match["host"], int(match["port"])


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``omlmedia`` command."""
    parser = argparse.ArgumentParser(
        prog="omlmedia", description="Contact-center media server: SIP trunks, WebRTC agents, ACD."
    )
    parser.add_argument("--version", action="version", version=f"omlmedia {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server (the embedded demo configuration without --config)",
        description="Run the server until SIGTERM/SIGINT. Flags override the file.",
    )
    serve.add_argument("--config", metavar="FILE", help="TOML configuration (default: the demo)")
    serve.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        help="IP address to listen on; repeat or separate with commas (demo: 127.0.0.1)",
    )
    serve.add_argument("--sip-port", type=_port, metavar="PORT", help="SIP UDP and TCP (5060)")
    tls = serve.add_mutually_exclusive_group()
    tls.add_argument("--sip-tls-port", type=_port, metavar="PORT", help="SIP over TLS (5061)")
    tls.add_argument("--no-tls", action="store_true", help="no SIP TLS listener")
    serve.add_argument("--http-port", type=_port, metavar="PORT", help="HTTPS and WebSocket (8443)")
    serve.add_argument(
        "--rtp-ports", type=_rtp_ports, metavar="LOW-HIGH", help="RTP port range (20000-29999)"
    )
    serve.add_argument("--data-dir", metavar="DIR", help="data directory, created if missing")
    serve.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS)
    serve.add_argument("--log-format", type=str.lower, choices=LOG_FORMATS)
    serve.add_argument(
        "--demo-pbx",
        type=_host_port,
        metavar="HOST:PORT",
        help="where the demo trunk 'pbx' sends calls (127.0.0.1:5070)",
    )
    password = serve.add_mutually_exclusive_group()
    password.add_argument(
        "--demo-password",
        metavar="PASSWORD",
        help="password of the demo SIP user (default: random, shown in the banner; at least "
        f"{MIN_DEMO_PASSWORD} characters beyond loopback); visible in ps: prefer the file or "
        f"{SECRET_ENV['demo_password']}",
    )
    password.add_argument(
        "--demo-password-file", metavar="FILE", help="read the demo password from FILE's first line"
    )
    token = serve.add_mutually_exclusive_group()
    token.add_argument(
        "--api-token",
        metavar="TOKEN",
        help="REST API token (default: random, shown in the banner); only its SHA-256 is kept; "
        f"visible in ps: prefer the file or {SECRET_ENV['api_token']}",
    )
    token.add_argument(
        "--api-token-file", metavar="FILE", help="read the REST API token from FILE's first line"
    )

    check = commands.add_parser(
        "check-config",
        help="validate a configuration file",
        description="List every error with its location; exit 0 when valid, 2 when not.",
    )
    check.add_argument("file", metavar="FILE")

    export = commands.add_parser(
        "export-config",
        help="write the configuration with the database's agents and queues",
        description="Print FILE with its [[agents]] and [queues] replaced by those of its "
        "database ([storage] dsn, else the data directory's) (what the API changed), as TOML "
        "check-config accepts.",
    )
    export.add_argument("file", metavar="FILE")
    export.add_argument("--output", metavar="OUT", help="write to OUT instead of stdout")

    hash_password = commands.add_parser(
        "hash-password",
        help="print the HA1 hashes of a SIP password",
        description="Print H(user:realm:password) with MD5 and SHA-256 (RFC 7616 §3.4.2). "
        "The password is read from stdin, or prompted for on a terminal.",
    )
    hash_password.add_argument("--user", required=True)
    hash_password.add_argument("--realm", default="omlmedia", help="(default: omlmedia)")

    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; exits with status 2 on bad usage (argparse)."""
    return make_parser().parse_args(argv)


def _secret(
    args: argparse.Namespace,
    name: str,
    environ: Mapping[str, str],
    warn: Callable[[str], None] | None,
) -> str | None:
    """A secret from its flag, its ``-file`` flag or the environment, in that order; None."""
    flag = "--" + name.replace("_", "-")
    value: str | None = getattr(args, name)
    if value is not None:
        if warn is not None:
            warn(
                f"{flag} on the command line is visible to every user of this host (ps): "
                f"use {flag}-file or {SECRET_ENV[name]}"
            )
        return value
    path: str | None = getattr(args, f"{name}_file")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError([f"{flag}-file: cannot read {path}: {reason}"]) from None
        return text.splitlines()[0] if text else ""
    return environ.get(SECRET_ENV[name]) or None


def build_config(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """The configuration `serve` runs with: the file or the demo, with the flags applied.

    Secrets come from their flag (``warn`` is told: it shows in ``ps``), their ``-file`` flag, or
    `environ` (``OMLMEDIA_API_TOKEN``; ``OMLMEDIA_DEMO_PASSWORD`` for the demo only).
    """
    environ = environ if environ is not None else {}
    demo_environ = environ if args.config is None else {}
    listen = None
    if args.listen is not None:
        listen = tuple(a.strip() for item in args.listen for a in item.split(",") if a.strip())
    overrides = Overrides(
        listen=listen,
        sip_port=args.sip_port,
        sip_tls_port=args.sip_tls_port,
        no_tls=args.no_tls,
        http_port=args.http_port,
        rtp_port_range=args.rtp_ports,
        data_dir=args.data_dir,
        log_level=args.log_level,
        log_format=args.log_format,
        demo_pbx=args.demo_pbx,
        demo_password=_secret(args, "demo_password", demo_environ, warn),
        api_token=_secret(args, "api_token", environ, warn),
    )
    if args.config is not None:
        return load_config(args.config, overrides)
    return load_demo_config(overrides)


def _print_errors(where: str, exc: ConfigError, out: TextIO) -> None:
    count = len(exc.errors)
    print(f"omlmedia: {where}: {count} error{'s' if count != 1 else ''}", file=out)
    for error in exc.errors:
        print(f"  {error}", file=out)


def _warn(message: str) -> None:
    print(f"omlmedia: warning: {message}", file=sys.stderr)


def _private(data_dir: Path) -> None:
    """Make `data_dir` 0700 when it is ours and open to others; warn when it is not ours."""
    info = data_dir.stat()
    if info.st_mode & 0o077 == 0:
        return
    if info.st_uid != os.getuid():
        _warn(f"{data_dir} is readable by others and not ours to change: chmod 700 it")
        return
    data_dir.chmod(0o700)


def _serve(args: argparse.Namespace) -> int:
    where = args.config if args.config is not None else "embedded demo configuration"
    try:
        config = build_config(args, os.environ, _warn)
    except ConfigError as exc:
        _print_errors(where, exc, sys.stderr)
        return 2
    if not config.is_demo:
        for warning in permission_warnings(config):
            _warn(warning)
    for warning in [*digest_warnings(config), *sdes_warnings(config), *cluster_warnings(config)]:
        _warn(warning)
    try:
        config.server.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private(config.server.data_dir)
    except OSError as exc:
        print(
            f"omlmedia: cannot create data directory {config.server.data_dir}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    configure_logging(config.server.log_level, config.server.log_format)
    try:
        server = importlib.import_module("omlmedia.server")
    except ModuleNotFoundError as exc:
        if exc.name != "omlmedia.server":
            raise
        print("omlmedia: this build has no server (omlmedia.server is missing)", file=sys.stderr)
        return 1
    print(server.banner(config), flush=True)
    # Recordings, the database, keys: for the server's user only (directories 0700, files 0600).
    os.umask(0o077)
    return _run(server.serve(config))


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)
    except KeyboardInterrupt:
        return 130


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        _print_errors(args.file, exc, sys.stderr)
        return 2
    print(f"{args.file}: OK")
    for line in summary(config):
        print(f"  {line}")
    for warning in [
        *permission_warnings(config),
        *digest_warnings(config),
        *sdes_warnings(config),
        *cluster_warnings(config),
    ]:
        _warn(warning)
    return 0


def _export_config(args: argparse.Namespace) -> int:
    import tomllib

    from omlmedia.accounts import AccountBook
    from omlmedia.directory import Directory

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        _print_errors(args.file, exc, sys.stderr)
        return 2
    database = config.storage.location(config.server.data_dir)
    if isinstance(database, Path) and not database.exists():
        print(f"omlmedia: no database at {database}: nothing to export", file=sys.stderr)
        return 2
    try:
        book = AccountBook(database)
    except OSError as exc:  # PostgreSQL unreachable or refusing
        print(f"omlmedia: cannot open the database: {exc}", file=sys.stderr)
        return 2
    try:
        text = Directory(book).export(tomllib.loads(Path(args.file).read_text("utf-8")))
    finally:
        book.close()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, "utf-8")
    except OSError as exc:
        print(f"omlmedia: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"omlmedia: wrote {args.output}", file=sys.stderr)
    return 0


def _read_password() -> str | None:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("omlmedia: the passwords differ", file=sys.stderr)
            return None
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _hash_password(args: argparse.Namespace) -> int:
    if not args.user or not args.realm:
        print("omlmedia: --user and --realm must not be empty", file=sys.stderr)
        return 2
    password = _read_password()
    if password is None:
        return 2
    if not password:
        print("omlmedia: empty password", file=sys.stderr)
        return 2
    ha1_md5, ha1_sha256 = digest_ha1(args.user, args.realm, password)
    print(f"# H(user:realm:password) for user {args.user!r}, realm {args.realm!r}")
    print(f'ha1_md5 = "{ha1_md5}"')
    print(f'ha1_sha256 = "{ha1_sha256}"')
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve,
    "check-config": _check_config,
    "export-config": _export_config,
    "hash-password": _hash_password,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``omlmedia`` command line; returns the exit status."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return _COMMANDS[args.command](args)
