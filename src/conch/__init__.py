"""conch: distributed locks and coordination. Whoever holds the conch may act.

>>> import conch
>>> with conch.connect("memory://") as coordinator:
...     with coordinator.lock("vnf-42") as lock:
...         lock.token is not None
True
"""

from conch.capabilities import Capabilities
from conch.coordinator import Coordinator, connect
from conch.decorators import synchronized
from conch.election import Election, LeaderChange
from conch.errors import (
    BackendUnavailable,
    BreakRefused,
    ConchError,
    GroupNotEmpty,
    GroupNotFound,
    HolderChanged,
    InvalidGroup,
    InvalidLockName,
    InvalidURL,
    LimitMismatch,
    LockAcquireFailed,
    LockLost,
    LockNotHeld,
    NotStarted,
    NotSupported,
    UnknownNode,
)
from conch.group import Group
from conch.group_entry import MemberInfo
from conch.group_watch import GroupEvent, Subscription
from conch.introspection import HolderInfo, LockInfo
from conch.lock import Lock
from conch.partitioner import Partitioner
from conch.semaphore import Semaphore

__all__ = [
    "BackendUnavailable",
    "BreakRefused",
    "Capabilities",
    "ConchError",
    "Coordinator",
    "Election",
    "Group",
    "GroupEvent",
    "GroupNotEmpty",
    "GroupNotFound",
    "HolderChanged",
    "HolderInfo",
    "InvalidGroup",
    "InvalidLockName",
    "InvalidURL",
    "LeaderChange",
    "LimitMismatch",
    "Lock",
    "LockAcquireFailed",
    "LockInfo",
    "LockLost",
    "LockNotHeld",
    "MemberInfo",
    "NotStarted",
    "NotSupported",
    "Partitioner",
    "Semaphore",
    "Subscription",
    "UnknownNode",
    "connect",
    "synchronized",
]
