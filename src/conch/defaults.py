"""The process default coordinator used by ``synchronized(coordinator=None)`` and the CLI."""

from __future__ import annotations

import atexit
import os
import pathlib
import threading

from conch.coordinator import Coordinator

_lock = threading.Lock()
_default: Coordinator | None = None


def default_url() -> str:
    """``CONCH_URL`` when set, else ``file://`` in the per-user state directory."""
    configured = os.environ.get("CONCH_URL")
    if configured:
        return configured
    state_home = os.environ.get("XDG_STATE_HOME") or pathlib.Path.home() / ".local" / "state"
    return f"file://{pathlib.Path(state_home).absolute() / 'conch' / 'locks'}"


def default_coordinator() -> Coordinator:
    """The process default coordinator, connected on first use and stopped at exit."""
    global _default
    with _lock:
        if _default is None:
            coordinator = Coordinator(default_url()).start()
            atexit.register(coordinator.stop)
            _default = coordinator
        return _default


def _forget_in_child() -> None:
    # A forked child must not share its parent's session (or its file locks).
    global _default, _lock
    _default, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)
