"""``mysql://`` semaphores: permit *i* is ``GET_LOCK`` name ``conch-sem:<hash>/<i>``, taken
under a gate lock; waiters poll with a capped back-off. docs/mysql.md"""

from __future__ import annotations

import time
from typing import Any

from conch.backends.base import Deadline, LossCallback
from conch.backends.kit.naming import hex_digest
from conch.backends.mysql.client import Connection
from conch.backends.mysql.lock import FENCING_TABLE, MySQLLock, MySQLSessions
from conch.errors import LimitMismatch, NotStarted
from conch.introspection import HolderStamp

SEMAPHORES_TABLE = "conch_semaphores"
CREATE_SEMAPHORES_TABLE = f"""
CREATE TABLE IF NOT EXISTS {SEMAPHORES_TABLE} (
    gate CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    permits INT UNSIGNED NOT NULL
) ENGINE=InnoDB"""
PREFIX = "conch-sem:"
LIMITS = range(1, 1001)
"""The limits a semaphore may have here: every try names each permit in its statement."""
BACKOFF = (0.01, 0.2)
"""A waiter's first pause between two tries, and the longest (each pause doubles)."""

# The gate, then (its own statement: a fresh read) the limit stored. Params: gate, wait.
_ENTER = ("SET @conch_gate = GET_LOCK(%(gate)s, %(wait)s);"
          f" SELECT @conch_gate, (SELECT permits FROM {SEMAPHORES_TABLE} WHERE gate = %(gate)s)")
_STORE = (f"INSERT INTO {SEMAPHORES_TABLE} (gate, permits) VALUES (%(gate)s, %(limit)s)"
          " ON DUPLICATE KEY UPDATE permits = VALUES(permits);")
# The first free permit (CASE stops at it), the semaphore's token counted up when one was
# taken, the gate given back; then the permit and the token. Params: gate, permits.
_TAKE = ("SET @conch_slot = CASE {} END;"
         f" INSERT INTO {FENCING_TABLE} (lock_key, token) SELECT %(gate)s, LAST_INSERT_ID(1)"
         " FROM DUAL WHERE @conch_slot IS NOT NULL"
         " ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1);"
         " DO RELEASE_LOCK(%(gate)s); SELECT @conch_slot, LAST_INSERT_ID()")


class MySQLPermit(MySQLLock):
    """A handle on one permit of a semaphore: a lock whose name is the permit it took."""

    def __init__(self, sessions: MySQLSessions, scope: bytes, limit: int, stamp: HolderStamp,
                 on_lost: LossCallback) -> None:
        self._gate = PREFIX + hex_digest(scope, 64 - len(PREFIX) - 6)  # room for "/<slot>"
        super().__init__(sessions, self._gate, stamp, on_lost)
        self._limit = limit

    def permit(self, slot: int) -> str:
        """The ``GET_LOCK`` name of permit ``slot``."""
        return f"{self._gate}/{slot}"

    def _take_lock(self, session: Connection, deadline: Deadline) -> int | None:
        pause = BACKOFF[0]
        with session.cursor() as cursor:
            while (token := self._try(cursor)) is None:
                remaining = deadline.remaining()
                if remaining == 0:
                    return None
                if self._sessions.closed:
                    raise NotStarted("the coordinator was stopped while waiting")
                time.sleep(pause if remaining is None else min(pause, remaining))
                pause = min(2 * pause, BACKOFF[1])
            return token

    def _try(self, cursor: Any) -> int | None:
        """One try under the gate: the token of the permit taken (now this handle's
        name), ``None``; LimitMismatch while another limit's permits are held (the caller
        closes the session, which frees the gate)."""
        gate = self._gate
        wait = self._sessions.settings.session_timeout / 4
        stored = _last_row(cursor, _ENTER, {"gate": gate, "wait": wait})
        if stored[0] != 1:  # the gate stayed busy: try again later
            return None
        statements = _TAKE.format(" ".join(
            f"WHEN GET_LOCK('{self.permit(slot)}', 0) = 1 THEN {slot}"
            for slot in range(self._limit)))
        if stored[1] != self._limit:
            if stored[1] is not None and self._in_use(cursor, stored[1]):
                raise LimitMismatch(f"the semaphore is in use with limit {stored[1]}, "
                                    f"not {self._limit}")
            statements = _STORE + statements
        slot, token = _last_row(cursor, statements, {"gate": gate, "limit": self._limit})
        if slot is None:
            return None
        self._name = self.permit(int(slot))
        return int(token)

    def _in_use(self, cursor: Any, limit: int) -> bool:
        """Whether a permit of ``limit`` is held."""
        if limit not in LIMITS:
            return True
        used = ", ".join(f"IS_USED_LOCK('{self.permit(slot)}')" for slot in range(limit))
        return _last_row(cursor, f"SELECT COALESCE({used})", None)[0] is not None


def _last_row(cursor: Any, statements: str, params: dict[str, object] | None) -> tuple[Any, ...]:
    """The row of the last of ``statements`` (a SELECT of one row)."""
    cursor.execute(statements, params)
    while cursor.nextset():
        pass
    row: tuple[Any, ...] = cursor.fetchone()
    return row
