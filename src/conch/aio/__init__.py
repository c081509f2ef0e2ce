"""conch for asyncio: the same locks and contract, awaited; docs/aio.md has the design.

>>> import asyncio, conch.aio
>>> async def main() -> bool:
...     async with await conch.aio.connect("memory://") as c, c.lock("vnf-42") as lock:
...         return lock.token is not None
>>> asyncio.run(main())
True"""

from conch.aio.coordinator import AsyncCoordinator, connect
from conch.aio.election import AsyncElection
from conch.aio.lock import AsyncHold, AsyncLock

__all__ = ["AsyncCoordinator", "AsyncElection", "AsyncHold", "AsyncLock", "connect"]
