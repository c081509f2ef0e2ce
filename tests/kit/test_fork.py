"""The one after-fork hook: registered objects forget their parent's state in a forked
child, and only there."""

from __future__ import annotations

import gc
import os

from conch.backends.kit.fork import forget_in_child


class _Session:
    def __init__(self, order: list[str], name: str) -> None:
        self.order = order
        self.name = name

    def forget_parent(self) -> None:
        self.order.append(self.name)


def _in_child(report: list[str]) -> str:
    """Fork; the child writes ``report`` after the fork hooks ran; the parent reads it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        os.write(write_end, ",".join(report).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read().decode()
    os.waitpid(pid, 0)
    return written


def test_each_registered_object_forgets_its_parent_in_the_child_in_registration_order() -> None:
    order: list[str] = []
    first, second = _Session(order, "first"), _Session(order, "second")
    forget_in_child(first)
    forget_in_child(second)
    assert _in_child(order) == "first,second"
    assert order == []  # nothing runs in the parent


def test_an_object_no_longer_alive_is_not_called() -> None:
    order: list[str] = []
    forget_in_child(_Session(order, "gone"))
    gc.collect()
    kept = _Session(order, "kept")
    forget_in_child(kept)
    assert _in_child(order) == "kept"
