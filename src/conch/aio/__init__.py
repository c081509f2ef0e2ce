"""conch for asyncio: the same locks and contract, awaited.

>>> import asyncio, conch.aio
>>> async def main() -> bool:
...     async with await conch.aio.connect("memory://") as coordinator:
...         async with coordinator.lock("vnf-42") as lock:
...             return lock.token is not None
>>> asyncio.run(main())
True

Every backend works. On those declaring ``native_async`` (file, memory, redis,
postgresql) the backend calls run on the event loop itself; on the others, on a
few threads of conch's own. Either way the coroutines waiting for a name queue so
that only one backend wait is in flight for them (see :mod:`conch.aio.queue` and
docs/aio.md).
"""

from conch.aio.coordinator import AsyncCoordinator, connect
from conch.aio.lock import AsyncHold, AsyncLock

__all__ = ["AsyncCoordinator", "AsyncHold", "AsyncLock", "connect"]
