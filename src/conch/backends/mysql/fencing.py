"""The ``conch_fencing`` table (one row per ``GET_LOCK`` name: its last token and last
holder, kept by InnoDB across restarts) and the statement that takes a lock and draws its
token in one round-trip."""

from __future__ import annotations

import pymysql  # type: ignore[import-untyped]
from pymysql.constants import ER  # type: ignore[import-untyped]

from conch.backends.mysql.client import Connection

FENCING_TABLE = "conch_fencing"

# The last hold's stamp, connection and server time, for `conch show` (mysql.inspection).
_HOLDER_COLUMNS = ("holder MEDIUMBLOB NULL", "connection_id BIGINT UNSIGNED NULL",
                   "acquired_at DECIMAL(17, 6) NULL")
_CREATE_FENCING_TABLE = f"""
CREATE TABLE IF NOT EXISTS {FENCING_TABLE} (
    lock_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    token BIGINT UNSIGNED NOT NULL,
    {", ".join(_HOLDER_COLUMNS)}
) ENGINE=InnoDB"""

# One round-trip: wait for the lock; if taken, count the token up and record the
# holder. The INSERT's affected rows say whether the lock was taken (0: timed out),
# and its OK packet carries the token set by LAST_INSERT_ID(expr). Params: name,
# wait (seconds), holder (the stamp). NOW(6) is the INSERT's start: after the grant.
ACQUIRE = (
    "SET @conch_locked = GET_LOCK(%(name)s, %(wait)s);"
    f" INSERT INTO {FENCING_TABLE} (lock_key, token, holder, connection_id, acquired_at)"
    " SELECT %(name)s, LAST_INSERT_ID(1), %(holder)s, CONNECTION_ID(), UNIX_TIMESTAMP(NOW(6))"
    " FROM DUAL WHERE @conch_locked = 1"
    " ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1), holder = VALUES(holder),"
    " connection_id = VALUES(connection_id), acquired_at = VALUES(acquired_at)"
)


def ensure_fencing_table(session: Connection) -> None:
    """Create ``conch_fencing`` unless it exists (so a user without CREATE can use it),
    and add the holder columns to a table made before they existed."""
    with session.cursor() as cursor:
        try:
            cursor.execute(f"SELECT holder, connection_id, acquired_at FROM {FENCING_TABLE} "
                           "LIMIT 0")
        except (pymysql.ProgrammingError, pymysql.OperationalError) as exc:
            if exc.args[0] == ER.NO_SUCH_TABLE:
                cursor.execute(_CREATE_FENCING_TABLE)
            elif exc.args[0] == ER.BAD_FIELD_ERROR:
                columns = ", ".join(f"ADD COLUMN {column}" for column in _HOLDER_COLUMNS)
                cursor.execute(f"ALTER TABLE {FENCING_TABLE} {columns}")
            else:
                raise
