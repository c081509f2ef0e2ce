"""Whether this process runs under eventlet's monkey-patching (``eventlet.monkey_patch()``).

Almost all of conch works unchanged there: its threads, locks, events and sleeps become
green ones, and the client libraries' sockets green sockets. The few places that must
choose differently ask :func:`eventlet_patched` when they make their client (see
``docs/eventlet.md``); it is looked up then, not at import, since a service may import
conch before it patches.
"""

from __future__ import annotations

import sys


def eventlet_patched() -> bool:
    """True once eventlet has monkey-patched ``threading`` in this process."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))
