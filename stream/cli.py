"""Command-line interface: parse arguments, load config, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 runtime failure, 2 user error (bad config, bad input), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from stream.config import AppConfig, ConfigError, load_config, reference_rows, to_masked_yaml
from stream.logs import mask_secrets, setup_logging

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CONFIG = Path("config.yaml")

log = logging.getLogger(__name__)


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="AdaFace Stream: recognise faces in live and recorded video.",
        epilog="Without a subcommand, 'run' is assumed. Exit codes: 0 ok, 1 failure, 2 user error, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_config(sub)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: ./{DEFAULT_CONFIG}, built-in defaults if absent)",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the streams of the config (no streams: the built-in demo)")
    _config_option(p)
    p.set_defaults(handler=cmd_run)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective config (secrets masked) or the first error")
    _config_option(p)
    p.add_argument("--reference", action="store_true", help="print the config reference table (Markdown)")
    p.set_defaults(handler=cmd_config)


def read_config(path: Path | None) -> AppConfig:
    """The explicit file, else ./config.yaml if present, else the built-in defaults."""
    if path is None:
        if not DEFAULT_CONFIG.exists():
            return AppConfig().resolve_paths(Path.cwd())
        path = DEFAULT_CONFIG
    return load_config(path)


def cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_markdown())
        return EXIT_OK
    print(to_masked_yaml(read_config(args.config)), end="")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    setup_logging(config.runtime.log_level)
    if not config.streams:
        print("No streams configured: the built-in demo will run here (a clip made from package face")
        print("photos, recognised against a demo gallery, written to recordings/demo.mp4 and events).")
        print("The demo arrives with the stream app; until then this prints the plan and exits.")
    for s in config.streams:
        source = s.url or s.path or s.webcam
        print(f"stream {s.name}: {mask_secrets(str(source))} ({s.effective_mode} mode)")
    return EXIT_OK


def reference_markdown() -> str:
    lines = ["| key | default | description |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {desc} |" for key, default, desc in reference_rows()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, UserError) as exc:
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
