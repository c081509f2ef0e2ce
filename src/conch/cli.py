"""The ``conch`` command: ``exec`` runs a command under a lock (``elect``: while leading an
election), ``demo`` shows conch at work, ``ls``/``show``/``break``/``wait`` look at locks and
``members`` at a group from outside (:mod:`conch.cli_introspection`).

Every subcommand takes ``--url`` (default: ``CONCH_URL``, then a per-user
``file://`` directory). Errors are one line, ``conch: error: ...``, never a
traceback; exit status 2 for bad arguments or URLs, 69 when the backend cannot
be reached (see :mod:`conch.exec` for the codes of ``conch exec``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from conch.cli_introspection import EXIT_NO_PERMISSION, add_commands
from conch.coordinator import Coordinator
from conch.defaults import default_url
from conch.demo import add_arguments, run_demo
from conch.errors import (
    BackendUnavailable,
    BreakRefused,
    ConchError,
    InvalidGroup,
    InvalidLockName,
    InvalidURL,
)
from conch.exec import (
    DEFAULT_GRACE,
    EXIT_CANNOT_EXECUTE,
    EXIT_LOCK_LOST,
    EXIT_NOT_ACQUIRED,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    run_leading,
    run_locked,
)
from conch.url import parse_url

Command = Callable[[argparse.Namespace], int]

# conch's warnings (a lost lock and its reason) as one line each, like its errors.
_WARNINGS = logging.StreamHandler()
_WARNINGS.setLevel(logging.WARNING)
_WARNINGS.setFormatter(logging.Formatter("conch: warning: %(message)s"))


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other conch error."""

    def error(self, message: str) -> NoReturn:
        subcommand = self.prog.partition(" ")[2]
        where = f"{subcommand}: " if subcommand else ""
        self.exit(EXIT_USAGE, f"conch: error: {where}{message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``conch`` command with ``argv`` (default: ``sys.argv[1:]``); return its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command of `conch exec`, never options
    # of conch: split it off before argparse can interpret any of it.
    command: list[str] | None = None
    if "--" in args:
        split = args.index("--")
        args, command = args[:split], args[split + 1:]
    options, unknown = _parser().parse_known_args(args)
    if unknown and options.takes_command and command is None:
        options.parser.error(f"put -- before the command, as: {options.parser.prog} NAME -- "
                             f"{' '.join(unknown)}")
    if unknown:
        options.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if command is not None and not options.takes_command:
        options.parser.error(f"unexpected arguments after --: {' '.join(command)}")
    options.command = command
    logging.getLogger("conch").addHandler(_WARNINGS)
    run: Command = options.run
    try:
        return run(options)
    except KeyboardInterrupt:
        print("conch: interrupted", file=sys.stderr)
        return 128 + 2  # as a shell reports SIGINT
    except ConchError as exc:
        print(f"conch: error: {_redact(str(exc), options.url)}", file=sys.stderr)
        return _status_of(exc)


def _parser() -> _Parser:
    parser = _Parser(
        prog="conch",
        description="Distributed locks: whoever holds the conch may act.",
        epilog="Run 'conch COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"conch {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    url = _Parser(add_help=False)
    url.add_argument(
        "--url", default=None,
        help="backend URL (default: $CONCH_URL, else a per-user file:// directory)",
    )
    _add_exec(commands, url)
    _add_demo(commands, url)
    add_commands(commands, url, _Parser, _seconds)
    return parser


def _add_exec(commands: argparse._SubParsersAction[_Parser], url: _Parser) -> None:
    _add_running(commands, url, "exec", "lock", "holding a lock", "Run CMD while holding "
                 "lock NAME, like flock(1).\n\nCMD gets CONCH_LOCK_NAME and CONCH_LOCK_TOKEN "
                 "(the hold's fencing token)\nin its environment.", run_locked)
    _add_running(commands, url, "elect", "leadership", "leading an election", "Run CMD "
                 "only while this process leads election NAME.\n\nCMD gets CONCH_ELECTION "
                 "and CONCH_LEADER_TOKEN (the term's fencing token)\nin its environment.",
                 run_leading)


def _add_running(commands: argparse._SubParsersAction[_Parser], url: _Parser, command: str,
                 hold: str, while_: str, description: str,
                 run: Callable[..., int]) -> None:
    parser = commands.add_parser(
        command, parents=[url], help=f"run a command while {while_}",
        usage=f"conch {command} [--url URL] [--timeout S] [--grace S] NAME -- CMD [ARG ...]",
        description=f"{description} SIGINT, SIGTERM and SIGHUP sent to conch are\npassed "
        f"on to CMD. The {hold} is given back once CMD has exited.",
        epilog=_EXEC_STATUSES.replace("the lock", f"the {hold}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME",
                        help="the lock" if command == "exec" else "the election")
    parser.add_argument(
        "--timeout", type=_seconds, default=None, metavar="S",
        help=f"give up (exit 75) when the {hold} is not acquired within S seconds; 0 tries "
        "once (default: wait forever)",
    )
    parser.add_argument(
        "--grace", type=_seconds, default=DEFAULT_GRACE, metavar="S",
        help=f"when the {hold} is lost, seconds between SIGTERM and SIGKILL to CMD "
        f"(default: {DEFAULT_GRACE:g})",
    )
    parser.set_defaults(run=lambda options: _exec(options, command, run), parser=parser,
                        takes_command=True)


_EXEC_STATUSES = f"""exit status:
  CMD's own  CMD ran to its end; 128+N when signal N ended it
  {EXIT_USAGE:<9}  bad arguments or URL: CMD did not run
  {EXIT_UNAVAILABLE:<9}  the backend is unreachable: CMD did not run
  {EXIT_LOCK_LOST:<9}  the lock was lost while CMD ran: CMD was stopped (SIGTERM, then SIGKILL)
  {EXIT_NOT_ACQUIRED:<9}  the lock was not acquired within --timeout: CMD did not run
  {EXIT_CANNOT_EXECUTE:<9}  CMD could not be executed
  {EXIT_NOT_FOUND:<9}  CMD was not found"""


def _add_demo(commands: argparse._SubParsersAction[_Parser], url: _Parser) -> None:
    demo_parser = commands.add_parser(
        "demo", parents=[url], help="watch worker processes share VNFs under locks",
        description="Worker processes run VNF lifecycle operations (instantiate, heal, "
        "terminate) under one lock per VNF, print a timeline, then check the recorded "
        "history: exit 0 when no two operations on one VNF overlapped, 1 otherwise.",
    )
    add_arguments(demo_parser)
    demo_parser.set_defaults(
        run=lambda options: run_demo(
            _url(options), options.workers, options.vnfs, options.operations
        ),
        parser=demo_parser, takes_command=False,
    )


def _exec(options: argparse.Namespace, command: str, run: Callable[..., int]) -> int:
    if options.command is None:
        options.parser.error(f"put -- before the command, as: conch {command} NAME -- CMD "
                             "[ARG ...]")
    if not options.command:
        options.parser.error("no command after --")
    with Coordinator(_url(options), prefix=f"conch-{command}-") as coordinator:
        return run(coordinator, options.name, options.command, options.timeout, options.grace)


def _url(options: argparse.Namespace) -> str:
    url: str = options.url or default_url()
    return url


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, at least 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}")
    return value


def _status_of(exc: ConchError) -> int:
    if isinstance(exc, (InvalidURL, InvalidLockName, InvalidGroup)):
        return EXIT_USAGE
    if isinstance(exc, BackendUnavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, BreakRefused):
        return EXIT_NO_PERMISSION
    return 1


def _redact(text: str, url: str | None) -> str:
    """``text`` without the URL's password, in case a message let one through."""
    try:
        secrets = parse_url(url or default_url()).secrets
    except InvalidURL:
        return text
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _version() -> str:
    try:
        return importlib.metadata.version("conch")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
