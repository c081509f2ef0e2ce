"""The default backend URL: ``CONCH_URL``, else a per-user ``file://`` directory."""

from __future__ import annotations

import os
import pathlib


def default_url() -> str:
    """``CONCH_URL`` when set, else ``file://`` in the per-user state directory."""
    configured = os.environ.get("CONCH_URL")
    if configured:
        return configured
    state_home = os.environ.get("XDG_STATE_HOME") or pathlib.Path.home() / ".local" / "state"
    return f"file://{pathlib.Path(state_home).absolute() / 'conch' / 'locks'}"
