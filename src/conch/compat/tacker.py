"""Tacker's ``tacker/common/coordination.py`` on conch (also the shape of Cinder's and Manila's
copies): ``Coordinator``, ``COORDINATOR`` and ``synchronized`` with Tacker's names and log
lines. The URL is oslo.config's ``[coordination] backend_url`` when oslo.config is installed,
else ``CONCH_URL``. README, "Switching from tooz", has the switch and the differences."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from conch.compat.tooz import coordination
from conch.compat.tooz.locking import Lock
from conch.defaults import default_url
from conch.errors import NotStarted

__all__ = [
    "COORDINATOR",
    "Coordinator",
    "LockCreationFailed",
    "backend_url",
    "list_opts",
    "register_opts",
    "synchronized",
]

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _oslo_cfg() -> Any:
    """oslo.config's ``cfg`` module (an optional dependency: ``conch[oslo]``)."""
    return importlib.import_module("oslo_config.cfg")


def list_opts() -> dict[str, list[Any]]:
    """The ``[coordination]`` options, for oslo-config-generator. Needs oslo.config."""
    cfg = _oslo_cfg()
    # Word for word Tacker's definition (tacker/conf/coordination.py): oslo.config accepts
    # a second registration only when it is equal, so the service's own and ours coexist.
    return {"coordination": [cfg.StrOpt(
        "backend_url",
        default="file://$state_path",
        help="The backend URL to use for distributed coordination.",
    )]}


def register_opts(conf: Any) -> None:
    """Register ``[coordination] backend_url`` on ``conf`` (an oslo.config ``ConfigOpts``).

    A service that registered its own, different definition first (Manila's help text
    differs) keeps it; registering Tacker's identical one again is a no-op in oslo.config.
    """
    cfg = _oslo_cfg()
    with contextlib.suppress(cfg.DuplicateOptError):
        conf.register_opts(list_opts()["coordination"], group="coordination")


def backend_url(conf: Any = None) -> str:
    """The backend URL (tooz or conch form) :meth:`Coordinator.start` connects to.

    With oslo.config: ``conf`` (default ``cfg.CONF``)'s ``[coordination] backend_url``,
    registered on first use — lazily, so a service registering the option itself at import
    time always comes first. When its default ``file://$state_path`` cannot be resolved
    (no ``state_path`` option, as in services other than Tacker) or without oslo.config:
    ``CONCH_URL``, else conch's per-user directory.
    """
    return _configured_url(conf) or default_url()


def _configured_url(conf: Any = None) -> str | None:
    """The service's ``[coordination] backend_url`` (a tooz URL), or None."""
    try:
        cfg = _oslo_cfg()
    except ImportError:
        return None
    conf = cfg.CONF if conf is None else conf
    register_opts(conf)
    try:
        url = conf.coordination.backend_url
    except (cfg.NoSuchOptError, cfg.TemplateSubstitutionError) as exc:
        LOG.warning("[coordination] backend_url cannot be resolved (%s): using CONCH_URL or "
                    "conch's default directory", exc)
        return None
    return str(url) if url else None


class LockCreationFailed(NotStarted):
    """``get_lock()`` on a :class:`Coordinator` that is not started (Tacker's name)."""


class Coordinator:
    """A member of the service's coordination group, named ``prefix + agent_id``.

    ``agent_id`` defaults to a random UUID. Not started: call :meth:`start`.
    """

    def __init__(self, agent_id: str | None = None, prefix: str = "") -> None:
        self.coordinator: coordination.CoordinationDriver | None = None
        self.agent_id = agent_id or str(uuid.uuid4())
        self.started = False
        self.prefix = prefix

    def start(self) -> None:
        """Connect to :func:`backend_url` (nothing when started). Raises
        ``ToozConnectionError`` when unreachable, :class:`conch.InvalidURL` for a bad URL."""
        if self.started:
            return
        member_id = (self.prefix + self.agent_id).encode()
        configured = _configured_url()
        # The service's option is a tooz URL; CONCH_URL is conch's own and is not
        # translated (tooz's memcached driver, say, ignores ssl_* without use_ssl).
        coordinator = (coordination.get_coordinator(configured, member_id) if configured
                       else coordination.CoordinationDriver(default_url(), member_id))
        coordinator.start(start_heart=True)
        self.coordinator = coordinator
        self.started = True

    def stop(self) -> None:
        """Disconnect (nothing when not started); locks still held are freed."""
        if self.started and self.coordinator is not None:
            self.coordinator.stop()
        self.coordinator = None
        self.started = False

    def get_lock(self, name: str) -> Lock:
        """The lock ``prefix + name`` (its ``name`` is that, as UTF-8 bytes, like Tacker's).

        Raises :class:`LockCreationFailed` when the coordinator is not started.
        """
        lock_name = (self.prefix + name).encode()
        if self.coordinator is None:
            raise LockCreationFailed(
                f"cannot create lock {lock_name!r}: the coordinator is not started "
                f"(call start() first)"
            )
        return self.coordinator.get_lock(lock_name)


COORDINATOR = Coordinator(prefix="tacker-")


def synchronized(
    lock_name: str, blocking: bool | float = True, coordinator: Coordinator = COORDINATOR
) -> Callable[[F], F]:
    """Run the decorated function while holding the lock ``lock_name.format(...)``.

    The template's fields are the function's parameters (defaults applied) and ``f_name``,
    its name: ``@synchronized('{f_name}-{vnf.id}')``. ``blocking`` is True (wait), False
    (one try) or seconds; not acquired raises
    ``conch.compat.tooz.coordination.LockAcquireFailed``. Plain functions only (Tacker's
    contract); use :func:`conch.synchronized` for ``async def``.
    """

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):
            raise TypeError(f"{func.__qualname__} is async: use conch.synchronized for it")
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            lock = coordinator.get_lock(
                lock_name.format(**{**bound.arguments, "f_name": func.__name__}))
            started = time.monotonic()
            acquired: float | None = None
            try:
                with lock(blocking):
                    acquired = time.monotonic()
                    LOG.debug('Lock "%(name)s" acquired by "%(function)s" :: '
                              'waited %(wait_secs)0.3fs',
                              {"name": lock.name, "function": func.__name__,
                               "wait_secs": acquired - started})
                    return func(*args, **kwargs)
            finally:
                held = "N/A" if acquired is None else f"{time.monotonic() - acquired:0.3f}s"
                LOG.debug('Lock "%(name)s" released by "%(function)s" :: held %(held_secs)s',
                          {"name": lock.name, "function": func.__name__, "held_secs": held})

        return cast(F, run)

    return decorate
