"""conch for asyncio: the same locks and contract, awaited.

>>> import asyncio, conch.aio
>>> async def main() -> bool:
...     async with await conch.aio.connect("memory://") as coordinator:
...         async with coordinator.lock("vnf-42") as lock:
...             return lock.token is not None
>>> asyncio.run(main())
True

Every backend works: the layer wraps the sync API, runs its blocking calls on
a few threads of its own and queues the coroutines waiting for a name so that
only one of them waits on the backend (see :mod:`conch.aio.queue` and docs/aio.md).
"""

from conch.aio.coordinator import AsyncCoordinator, connect
from conch.aio.lock import AsyncHold, AsyncLock

__all__ = ["AsyncCoordinator", "AsyncHold", "AsyncLock", "connect"]
