"""conch.compat.tacker: Tacker's coordination module, run the way Tacker's conductor runs it."""

from __future__ import annotations

import inspect
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import conch
from conch.compat import tacker
from conch.compat.tooz import coordination


@pytest.fixture
def service_config(tooz_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the service at the backend under test: ``[coordination] backend_url`` when
    oslo.config is installed, else ``CONCH_URL``."""
    try:
        from oslo_config import cfg
    except ImportError:
        monkeypatch.setenv("CONCH_URL", tooz_url)
        yield tooz_url
        return
    tacker.register_opts(cfg.CONF)
    cfg.CONF.set_override("backend_url", tooz_url, group="coordination")
    try:
        yield tooz_url
    finally:
        cfg.CONF.clear_override("backend_url", group="coordination")


@pytest.fixture
def conductors(service_config: str) -> Iterator[tuple[tacker.Coordinator, tacker.Coordinator]]:
    """Two started Tacker conductors' coordinators."""
    first, second = tacker.Coordinator(prefix="tacker-"), tacker.Coordinator(prefix="tacker-")
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def make_heal(coordinator: tacker.Coordinator, blocking: bool | float,
              body: Callable[[], None] = lambda: None) -> Callable[..., str]:
    @tacker.synchronized("{f_name}-{vnf[id]}", blocking=blocking, coordinator=coordinator)
    def heal(vnf: dict[str, str], cause: str = "unknown") -> str:
        body()
        return cause

    return heal


def test_synchronized_holds_the_vnf_lock_while_the_function_runs(
    conductors: tuple[tacker.Coordinator, tacker.Coordinator], lock_name: str
) -> None:
    first, second = conductors
    inside, leave = threading.Event(), threading.Event()
    vnf, other_vnf = {"id": lock_name}, {"id": f"{lock_name}-other"}

    def hold() -> None:
        inside.set()
        leave.wait(10)

    running = threading.Thread(target=make_heal(first, True, hold), args=(vnf,), daemon=True)
    running.start()
    assert inside.wait(10)
    try:
        with pytest.raises(coordination.LockAcquireFailed):
            make_heal(second, False)(vnf)
        # The name is prefix + the template formatted with the call's arguments.
        assert not second.get_lock(f"heal-{lock_name}").acquire(blocking=False)
        assert make_heal(second, False)(other_vnf, cause="alarm") == "alarm"
    finally:
        leave.set()
        running.join(10)
    assert make_heal(second, 5)(vnf) == "unknown"


@pytest.fixture
def memory_conductor(memory_url: str, monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[tacker.Coordinator]:
    monkeypatch.setattr(tacker, "backend_url", lambda conf=None: memory_url)
    conductor = tacker.Coordinator(agent_id="conductor-1", prefix="tacker-")
    conductor.start()
    yield conductor
    conductor.stop()


def test_synchronized_logs_tackers_wait_and_hold_lines(
    memory_conductor: tacker.Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="conch.compat.tacker")
    make_heal(memory_conductor, True)({"id": "vnf-1"})
    acquired, released = (record.getMessage() for record in caplog.records)
    assert acquired.startswith("Lock \"b'tacker-heal-vnf-1'\" acquired by \"heal\" :: waited 0.")
    assert released.startswith("Lock \"b'tacker-heal-vnf-1'\" released by \"heal\" :: held 0.")

    caplog.clear()
    with memory_conductor.get_lock("heal-vnf-1"), pytest.raises(coordination.LockAcquireFailed):
        make_heal(memory_conductor, False)({"id": "vnf-1"})
    assert caplog.records[-1].getMessage().endswith(":: held N/A")


def test_synchronized_names_locks_from_methods_defaults_and_f_name(
    memory_conductor: tacker.Coordinator
) -> None:
    names: list[object] = []

    class Conductor:
        host = "node-1"

        @tacker.synchronized("{f_name}-{self.host}-{vnf_id}-{kind}", coordinator=memory_conductor)
        def scale(self, vnf_id: str, kind: str = "out", *args: Any, **kwargs: Any) -> None:
            names.append(kind)

    Conductor().scale("vnf-9", extra=1)
    held = memory_conductor.get_lock("scale-node-1-vnf-9-out")
    assert held.name == b"tacker-scale-node-1-vnf-9-out"
    assert names == ["out"]
    with held, pytest.raises(coordination.LockAcquireFailed):
        tacker.synchronized("scale-node-1-vnf-9-out", False, memory_conductor)(lambda: None)()


def test_get_lock_before_start_raises_lock_creation_failed() -> None:
    with pytest.raises(tacker.LockCreationFailed, match="not started") as failure:
        tacker.Coordinator(prefix="tacker-").get_lock("vnf-1")
    assert isinstance(failure.value, conch.NotStarted)


def test_start_and_stop_are_idempotent_and_stop_frees_the_locks(
    memory_conductor: tacker.Coordinator
) -> None:
    memory_conductor.start()
    lock = memory_conductor.get_lock("vnf-1")
    assert lock.acquire()
    memory_conductor.stop()
    memory_conductor.stop()
    assert not memory_conductor.started and memory_conductor.coordinator is None
    assert lock.release() is False  # freed by stop()


def test_the_module_names_match_tackers() -> None:
    assert isinstance(tacker.COORDINATOR, tacker.Coordinator)
    assert tacker.COORDINATOR.prefix == "tacker-"
    signature = inspect.signature(tacker.synchronized)
    assert signature.parameters["blocking"].default is True
    assert signature.parameters["coordinator"].default is tacker.COORDINATOR
    assert list(inspect.signature(tacker.Coordinator).parameters) == ["agent_id", "prefix"]


def test_async_functions_are_refused() -> None:
    async def heal() -> None:
        pass

    with pytest.raises(TypeError, match=r"conch\.synchronized"):
        tacker.synchronized("x")(heal)


# --- where the URL comes from -------------------------------------------------------------


@pytest.fixture
def cfg() -> Any:
    return pytest.importorskip("oslo_config.cfg")


def tackers_opt(cfg: Any, help_text: str = "The backend URL to use for distributed coordination."
                ) -> Any:
    """The option as Tacker (tacker/conf/coordination.py) and Cinder define it; Manila's
    help text says "back end"."""
    return cfg.StrOpt("backend_url", default="file://$state_path", help=help_text)


def test_the_option_coexists_with_the_services_own_registration(cfg: Any) -> None:
    registered_after = cfg.ConfigOpts()
    tacker.register_opts(registered_after)
    registered_after.register_opts([tackers_opt(cfg)], group="coordination")

    registered_before = cfg.ConfigOpts()
    registered_before.register_opts([tackers_opt(cfg)], group="coordination")
    tacker.register_opts(registered_before)

    manilas = cfg.ConfigOpts()
    manilas_help = "The back end URL to use for distributed coordination."
    manilas.register_opts([tackers_opt(cfg, manilas_help)], group="coordination")
    tacker.register_opts(manilas)
    manilas.register_opts([cfg.StrOpt("state_path", default="/var/lib/manila")])
    assert tacker.backend_url(manilas) == "file:///var/lib/manila"
    assert tacker.list_opts()["coordination"][0] == tackers_opt(cfg)


def test_backend_url_is_the_configured_one_else_conch_url(
    cfg: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("CONCH_URL", "memory://from-env")
    conf = cfg.ConfigOpts()
    # No state_path option (not Tacker): the default file://$state_path cannot resolve.
    assert tacker.backend_url(conf) == "memory://from-env"
    conf.register_opts([cfg.StrOpt("state_path", default=str(tmp_path))])
    assert tacker.backend_url(conf) == f"file://{tmp_path}"
    conf.set_override("backend_url", "redis://db1:6379?lock_timeout=5", group="coordination")
    assert tacker.backend_url(conf) == "redis://db1:6379?lock_timeout=5"


def test_without_oslo_config_the_url_is_conch_url() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["oslo_config"] = None  # as if not installed
        from conch.compat import tacker
        print(tacker.backend_url())
        tacker.COORDINATOR.start()
        print(tacker.COORDINATOR.get_lock("vnf-1").acquire())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False,
                            env={**os.environ, "CONCH_URL": "memory://no-oslo"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["memory://no-oslo", "True"]
