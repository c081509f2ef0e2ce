"""A ``redis://`` coordinator's entries (shared holds, permits, waiting writers): their
scripts, registered on the lock session's client, the waits on a wake list, and a TTL
session of their own (kit/ttl.py) renewing them all in one script per beat."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from conch.backends.kit.fork import forget_in_child
from conch.backends.kit.ttl import TtlHold, TtlSession
from conch.backends.redis import share_scripts
from conch.backends.redis.session import TRANSIENT, RedisSession, _interrupt, retry_once
from conch.backends.redis.share_scripts import Entry

log = logging.getLogger("conch")
EntryHold = TtlHold[Entry]
ScriptCall = tuple[str, list[bytes], list[bytes | int]]
"""A script's source, keys and arguments."""


class ShareSession:
    """Borrows the lock session's steps client and error handling; waits and renewals on
    pools of their own (a ``BLPOP`` of up to one TTL; a renewal of at most a beat)."""

    def __init__(self, session: RedisSession) -> None:
        self.session = session
        options = session.options
        self._waits = options.client(options.ttl + options.socket_timeout)
        self._renewals = options.client(min(options.socket_timeout, options.ttl / 3))
        self._scripts = {source: session.commands.register_script(source)
                         for source in share_scripts.SCRIPTS}
        self.ttl = self._new_ttl_session()
        self.ttl.start()
        forget_in_child(self)

    def _new_ttl_session(self) -> TtlSession[Entry]:
        return TtlSession("redis", self.session.options.ttl, self._renew,
                          self.session.describe, (RedisError,))

    def forget_parent(self) -> None:
        """In a forked child: the parent's entries and renewal thread are not the child's."""
        self.ttl = self._new_ttl_session()
        if not self.session.closed:
            self.ttl.start()

    def close(self) -> None:
        """Stop renewing (each entry is reported lost) and end the waits in progress."""
        self.ttl.stop()
        for client in (self._waits, self._renewals):
            _interrupt(client.connection_pool)

    def run(self, call: ScriptCall) -> Any:
        """Run an idempotent script (again after a connection failure)."""
        source, keys, args = call
        script, client = self._scripts[source], self.session.commands
        with self.session.calls():
            return retry_once(lambda _: script(keys, args, client=client))

    def wait_and_run(self, wake_list: bytes, seconds: float, call: ScriptCall) -> Any:
        """``BLPOP`` on ``wake_list`` for at most ``seconds``, then the script in the same
        round-trip. A broken connection ends the wait early; then the script runs anew."""
        source, keys, args = call
        with self.session.calls():
            try:
                with self._waits.pipeline(transaction=False) as pipeline:
                    pipeline.blpop([wake_list], seconds)
                    pipeline.evalsha(self._scripts[source].sha, len(keys), *keys, *args)
                    replies = pipeline.execute(False)
            except TRANSIENT:
                return self.run(call)
        if isinstance(replies[1], NoScriptError):  # a restarted server: load it again
            return self.run(call)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[1]

    def abandon(self, call: ScriptCall, what: bytes) -> None:
        """Best effort: run a script that frees an entry (an attempt failed after it may
        have been granted, or was granted as the coordinator stopped); the entry expires
        within the TTL otherwise. Once closed, the client connects again for this."""
        source, keys, args = call
        commands = self.session.commands
        try:
            retry_once(lambda _: self._scripts[source](keys, args, client=commands))
        except RedisError:
            log.warning("could not free %s; it expires within the TTL", what.decode())
        finally:
            if self.session.closed:
                commands.connection_pool.disconnect(inuse_connections=False)

    def _renew(self, holds: list[EntryHold], within: float) -> list[bool]:
        keys: list[bytes] = []
        args: list[bytes | int] = [self.session.options.ttl_ms]
        for hold in holds:
            keys += [hold.keys.entries, hold.keys.guard]
            args += [hold.value, hold.keys.guard_value]
        script = self._scripts[share_scripts.RENEW_ENTRIES]
        return [bool(renewed) for renewed in script(keys, args, client=self._renewals)]
