"""``zookeeper://`` groups: a persistent znode per group, an ephemeral child per member, a
children watch that pushes joins and leaves (docs/zookeeper.md, *Groups*)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from kazoo.client import KazooState  # type: ignore[import-untyped]
from kazoo.exceptions import (  # type: ignore[import-untyped]
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.protocol.states import EventType  # type: ignore[import-untyped]

from conch.backends.base import GroupStore, LossCallback
from conch.backends.kit.naming import readable_key
from conch.backends.zookeeper.session import ZooKeeperSession
from conch.errors import GroupNotEmpty, GroupNotFound


def member_node(member_id: str) -> str:
    """``member_id`` as a znode name: UTF-8, percent-encoded, dots too (not ``.`` or ``..``)."""
    return quote(member_id.encode("utf-8", "surrogateescape"), safe="").replace(".", "%2E")


class ZooKeeperGroupStore(GroupStore):
    """The groups under ``groups_path``, as one coordinator's session sees them."""

    poll_interval = 30.0  # every change is pushed by a children watch: this read is a safety net

    def __init__(self, session: ZooKeeperSession, groups_path: str, member_id: str) -> None:
        self._session, self._client, self._path = session, session.client, groups_path
        self._node = member_node(member_id)

    def create(self, group: bytes) -> bool:
        create = self._client.create_async(self._group_path(group), group, makepath=True)
        try:
            self._session.answer(create, "create a group", passing=(NodeExistsError,))
        except NodeExistsError:
            return False
        return True

    def delete(self, group: bytes) -> None:
        try:  # ZooKeeper deletes no znode that has children: no member can join meanwhile
            self._session.answer(self._client.delete_async(self._group_path(group)),
                                 "delete a group", passing=(NotEmptyError,))
        except NoNodeError:
            raise GroupNotFound(f"group {group!r} does not exist") from None
        except NotEmptyError:
            raise GroupNotEmpty(f"group {group!r} still has members") from None

    def names(self) -> list[bytes]:
        return list((self._read_children(self._path) or {}).values())

    def join(self, group: bytes, data: bytes, on_lost: LossCallback) -> None:
        path = f"{self._group_path(group)}/{self._node}"
        while True:
            generation = self._session.generation
            self._put(path, data, group)
            if self._session.keep(self._session.entries, path, on_lost, generation):
                break
            # The session expired meanwhile, with the znode: create it in the new one.
        # Our znode deleted by someone else is a loss (once left, not an entry any more).
        self._session.on_deletion(path, lambda: self._session.entries.lose(
            path, "its group member znode was deleted"))

    def leave(self, group: bytes) -> bool:
        path = f"{self._group_path(group)}/{self._node}"
        self._session.entries.discard(path)  # before the deletion: not a loss
        try:
            self._session.answer(self._client.delete_async(path), "leave a group")
        except NoNodeError:
            return False
        return True

    def members(self, group: bytes) -> dict[str, bytes] | None:
        children = self._read_children(self._group_path(group))
        if children is None:
            return None
        return {unquote_to_bytes(node).decode("utf-8", "surrogateescape"): data
                for node, data in children.items()}

    def subscribe(self, group: bytes, changed: Callable[[], None]) -> Callable[[], None]:
        return ChildrenWatcher(self._client, self._group_path(group), changed).stop

    def _group_path(self, group: bytes) -> str:
        return f"{self._path}/{readable_key(group)}"

    def _put(self, path: str, data: bytes, group: bytes) -> None:
        """Create our ephemeral znode at ``path`` or set its data; replace one another
        session left under our member id."""
        session, client = self._session, self._client
        while True:
            try:
                session.answer(client.create_async(path, data, ephemeral=True), "join a group",
                               passing=(NodeExistsError,))
                return
            except NoNodeError:
                raise GroupNotFound(f"group {group!r} does not exist") from None
            except NodeExistsError:
                stat = session.answer(client.exists_async(path), "read a group member")
            own = stat is not None and client.client_id is not None and \
                stat.ephemeralOwner == client.client_id[0]
            with contextlib.suppress(NoNodeError, BadVersionError):  # changed: look again
                if stat is not None:
                    session.answer(client.set_async(path, data, stat.version) if own
                                   else client.delete_async(path, stat.version),
                                   "join a group", passing=(BadVersionError,))
                    if own:
                        return

    def _read_children(self, parent: str) -> dict[str, bytes] | None:
        """Each child of ``parent`` with its data (None: no ``parent``), read at once."""
        children = self._session.read(self._client.get_children_async(parent), "list " + parent)
        if children is None:
            return None
        readings = [(child, self._client.get_async(f"{parent}/{child}")) for child in children]
        answers = [(child, self._session.read(reading, "read " + child))
                   for child, reading in readings]
        return {child: answer[0] for child, answer in answers if answer is not None}  # None: gone


class ChildrenWatcher:
    """Calls ``changed`` each time the watch on ``path``'s children (or existence) is set
    again: after each change and reconnection. Runs on kazoo's threads."""

    def __init__(self, client: Any, path: str, changed: Callable[[], None]) -> None:
        self._client, self._path, self._changed = client, path, changed
        self._stopped = False
        client.add_listener(self._on_state)
        self._arm()

    def stop(self) -> None:
        """Stop calling ``changed`` (a watch set on the server fires once more, unheard)."""
        self._stopped = True
        self._client.remove_listener(self._on_state)

    def _arm(self) -> None:
        if not self._stopped:
            self._client.get_children_async(self._path, watch=self._fired).rawlink(self._armed)

    def _armed(self, result: Any) -> None:
        # The state from now on is watched: read it. No group yet: watch its creation. The
        # connection dropped: set again once it is back (_on_state).
        if not self._stopped and result.successful():
            self._changed()
        elif not self._stopped and isinstance(result.exception, NoNodeError):
            self._client.exists_async(self._path, watch=self._fired).rawlink(self._created)

    def _created(self, result: Any) -> None:
        if not self._stopped and result.successful():
            # Created meanwhile; or watched from now on: a member to re-join creates it.
            if result.value is not None:
                self._arm()
            else:
                self._changed()

    def _fired(self, event: Any) -> None:
        if event.type != EventType.NONE:  # NONE: the session ended, _on_state sets it again
            self._arm()

    def _on_state(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            self._arm()
