"""``conch ls``, ``show``, ``break``, ``wait`` and ``members``: look at locks and groups
from outside (see docs/cli.md).

Each prints a table or key/value lines for people, or JSON with ``--json`` (the fields of
:meth:`conch.introspection.LockInfo.to_json` or :meth:`conch.MemberInfo.to_json`; times are
Unix seconds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from conch.coordinator import Coordinator
from conch.defaults import default_url
from conch.errors import GroupNotFound
from conch.exec import EXIT_NOT_ACQUIRED
from conch.introspection import HolderInfo, LockInfo

EXIT_NOT_HELD = 1
"""``conch break``: the lock was not held (or changed holder): nothing was broken."""
EXIT_NO_PERMISSION = 77
"""``conch break``: the server refused (sysexits ``EX_NOPERM``)."""

_MEMBER_PREFIX = "conch-cli-"
Parser = Any  # conch.cli._Parser (an argparse.ArgumentParser)
Command = Callable[[argparse.Namespace], int]


def add_commands(
    commands: Any, url: Parser, parser_class: type[Parser], seconds: Callable[[str], float]
) -> None:
    """Register ``ls``, ``show``, ``break``, ``wait`` and ``members`` on the ``conch`` subparsers
    (``url``: the parent parser of ``--url``; ``seconds``: the type of ``--timeout``)."""
    output = parser_class(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of text")

    ls = commands.add_parser("ls", parents=[url, output], help="list the locks held now",
                             description="List the locks held now (names starting with PREFIX).")
    ls.add_argument("prefix", metavar="PREFIX", nargs="?", default="",
                    help="only names starting with this")
    _done(ls, _ls)

    def command(name: str, argument: str, run: Command, summary: str, description: str
                ) -> Parser:
        parser = commands.add_parser(name, parents=[url, output], help=summary,
                                     description=description)
        parser.add_argument(argument.lower(), metavar=argument)
        _done(parser, run)
        return parser

    command("show", "NAME", _show, "show who holds a lock",
            "Show who holds lock NAME: member id, host, pid, since when, fencing token, TTL "
            "left and waiters, as far as the backend knows.")
    breaking = command(
        "break", "NAME", _break, "free a lock held by someone else",
        "Free lock NAME whoever holds it; the holder is told it lost the lock (at its next "
        "renewal or session check). Asks first on a terminal. Exit status: 0 broken, "
        f"{EXIT_NOT_HELD} not held (nothing broken), {EXIT_NO_PERMISSION} the server refused.")
    breaking.add_argument("--yes", "-y", action="store_true",
                          help="do not ask (needed when not run from a terminal)")
    wait = command(
        "wait", "NAME", _wait, "wait until a lock is free",
        "Wait until lock NAME is free: acquire it, then release it at once (the backend wakes "
        f"the wait). Exit {EXIT_NOT_ACQUIRED} if still held after --timeout.")
    wait.add_argument("--timeout", type=seconds, default=None, metavar="S",
                      help=f"give up (exit {EXIT_NOT_ACQUIRED}) after S seconds "
                      "(default: wait forever)")
    command("members", "GROUP", _members, "list a group's live members",
            "List the live members of group GROUP: member id, host, pid, since when and "
            "capabilities (on backends with groups).")


def _done(parser: Parser, run: Command) -> None:
    parser.set_defaults(run=run, parser=parser, takes_command=False)


def _coordinator(options: argparse.Namespace) -> Coordinator:
    return Coordinator(options.url or default_url(), prefix=_MEMBER_PREFIX)


def _ls(options: argparse.Namespace) -> int:
    with _coordinator(options) as coordinator:
        locks = coordinator.holders(options.prefix)
    if options.json:
        _print_json([lock.to_json() for lock in locks])
        return 0
    now = time.time()
    rows = [["NAME", "TOKEN", "MEMBER", "HOST", "PID", "HELD", "TTL", "WAITERS"]]
    for lock in locks:
        holder = lock.holder or HolderInfo()
        rows.append([lock.name, _text(holder.token), _text(holder.member_id), _text(holder.host),
                     _text(holder.pid), _age(holder.acquired_at, now),
                     _duration(holder.ttl_left), _text(lock.waiters)])
    _print_table(rows)
    return 0


def _show(options: argparse.Namespace) -> int:
    with _coordinator(options) as coordinator:
        lock = coordinator.describe(options.name)
    if options.json:
        _print_json(lock.to_json())
    else:
        print(_describe(lock))
    return 0


def _break(options: argparse.Namespace) -> int:
    with _coordinator(options) as coordinator:
        if not coordinator.capabilities.breakable:
            coordinator.break_lock(options.name)  # raises the backend's reason, before asking
        lock = coordinator.describe(options.name)
        if lock.holder is None:
            _say(f"lock {lock.name!r} is not held: nothing to break")
            return EXIT_NOT_HELD
        if not options.yes:
            if not sys.stdin.isatty():
                options.parser.error("not run from a terminal: pass --yes to break without "
                                     "asking")
            print(_describe(lock), file=sys.stderr)
            answer = input("Break it? Its holder may still be working on what it protects "
                           "[y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                _say("not broken")
                return EXIT_NOT_HELD
        broken = coordinator.break_lock(options.name, token=lock.holder.token)
    if options.json:
        _print_json(broken.to_json())
    elif broken.holder is None:
        _say(f"lock {broken.name!r} was freed meanwhile: nothing broken")
    else:
        print(f"broke lock {broken.name!r} held by {_who(broken.holder)}; the holder learns "
              "it lost the lock at its next renewal or session check")
    return 0 if broken.holder is not None else EXIT_NOT_HELD


def _wait(options: argparse.Namespace) -> int:
    with _coordinator(options) as coordinator:
        lock = coordinator.lock(options.name)
        started = time.monotonic()
        free = lock.acquire(True if options.timeout is None else options.timeout)
        waited = time.monotonic() - started
        if free:
            lock.release()
    if options.json:
        _print_json({"name": options.name, "free": free, "waited": round(waited, 3)})
    elif free:
        print(f"lock {options.name!r} is free (waited {waited:.2f} s)")
    else:
        _say(f"lock {options.name!r} is still held after {options.timeout:g} s")
    return 0 if free else EXIT_NOT_ACQUIRED


def _members(options: argparse.Namespace) -> int:
    with _coordinator(options) as coordinator:
        group = coordinator.group(options.group)
        members = group.member_info()
        if not members and not group.exists():
            raise GroupNotFound(f"group {options.group!r} does not exist")
    if options.json:
        _print_json([members[member].to_json() for member in sorted(members)])
        return 0
    if not members:
        _say(f"group {options.group!r} has no live members")
    now = time.time()
    _print_table([["MEMBER", "HOST", "PID", "JOINED", "CAPABILITIES"]] + [
        [member, _text(info.host), _text(info.pid), _age(info.joined_at, now),
         json.dumps(info.capabilities)] for member, info in sorted(members.items())])
    return 0


def _print_table(rows: list[list[str]]) -> None:
    """Aligned columns; nothing when there is only the header."""
    if len(rows) > 1:
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip())


def _describe(lock: LockInfo) -> str:
    lines = [("name", lock.name), ("state", "held" if lock.held else "free")]
    holder = lock.holder
    if holder is not None:
        lines += [
            ("member", _text(holder.member_id)),
            ("host", _text(holder.host)),
            ("pid", _text(holder.pid)),
            ("acquired at", _timestamp(holder.acquired_at)),
            ("token", _text(holder.token)),
            ("ttl left", _duration(holder.ttl_left)),
            ("session", _text(holder.session)),
        ]
    lines.append(("waiters", "unknown" if lock.waiters is None else str(lock.waiters)))
    return "\n".join(f"{label + ':':<13}{value}" for label, value in lines)


def _who(holder: HolderInfo) -> str:
    parts = [f"member {holder.member_id}" if holder.member_id else "an unknown member"]
    if holder.host:
        parts.append(f"on {holder.host}" + (f" (pid {holder.pid})" if holder.pid else ""))
    if holder.token is not None:
        parts.append(f"token {holder.token}")
    return ", ".join(parts)


def _timestamp(when: float | None) -> str:
    if when is None:
        return "-"
    local = datetime.datetime.fromtimestamp(when).astimezone()
    return f"{local.isoformat(sep=' ', timespec='milliseconds')} ({_age(when, time.time())} ago)"


def _age(when: float | None, now: float) -> str:
    return "-" if when is None else _duration(max(0.0, now - when))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _say(message: str) -> None:
    print(f"conch: {message}", file=sys.stderr)

