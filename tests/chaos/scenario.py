"""What every chaos scenario shares: its workers, its proxies, its history, and the verdict.

A :class:`Scenario` spawns lock users (:class:`~tests.chaos.worker.Scripted`
processes, or :class:`~tests.chaos.worker.Holder` objects in the test process)
that record their sections in one history and update one fenced store, and
checks both with :mod:`conch.history`, the project's one checker. It kills what
it started when the test ends, whatever happened.

Every log record of INFO and above, of the test process and of the workers, is
kept in the scenario's ``logs`` directory; the scenario fails if the target's
password shows in one. Measurements (:meth:`Scenario.measure`) are printed and, when the environment
variable ``CONCH_CHAOS_RESULTS`` names a file, appended to it as JSON lines for
``python -m tests.chaos.report`` (which writes docs/chaos-results.md).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

import conch
from conch.history import Recorder, fenced_counter_violations, load, violations
from tests.chaos.driver import Scripted, read_line, spawn
from tests.chaos.proxy import Proxy
from tests.chaos.store import FencedStore
from tests.chaos.targets import Target
from tests.chaos.worker import ELECTION_PREFIX, PERMIT_PREFIX, Holder, Tally, held_by_name

RESULTS_ENV = "CONCH_CHAOS_RESULTS"

T = TypeVar("T")


def record_result(entry: dict[str, object]) -> None:
    """Append ``entry`` to the results file, when one is configured."""
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


class Background(Generic[T]):
    """``call()`` on a daemon thread, noting its outcome and when it returned."""

    def __init__(self, call: Callable[[], T]) -> None:
        self.value: T | None = None
        self.error: BaseException | None = None
        self.returned_at = float("nan")
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self.value = call()
        except BaseException as exc:
            self.error = exc
        finally:
            self.returned_at = time.monotonic()

    @property
    def running(self) -> bool:
        """True until ``call()`` returned."""
        return self._thread.is_alive()

    def result(self, timeout: float) -> T:
        """What ``call()`` returned (re-raising its error); fails after ``timeout`` seconds."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class Scenario:
    """The processes, proxies and records of one chaos test on one :class:`Target`."""

    def __init__(self, test: str, target: Target, directory: pathlib.Path,
                 params: str = "") -> None:
        self.test = test
        self.params = params or target.backend  # the test's parameter id, as pytest shows it
        self.target = target
        self.lock_name = f"chaos-{uuid.uuid4().hex}"
        self.history = directory / "history"
        self.history.mkdir(parents=True)
        self.store = FencedStore(directory / "store")
        self.logs = directory / "logs"
        self.logs.mkdir()
        self._log_handler = logging.FileHandler(self.logs / "test-process.log")
        self._log_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self._log_level = logging.getLogger().level
        logging.getLogger().addHandler(self._log_handler)
        logging.getLogger().setLevel(min(self._log_level, logging.INFO))
        self._workers: list[Scripted] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._proxies: list[Proxy] = []
        self._coordinators: list[conch.Coordinator] = []

    def drive_leaders(self, kind: str) -> None:
        """With ``kind`` ``"election"``, the scenario's workers and holders campaign in an
        election and resign instead of locking (each term a section); ``"permit"``: they
        take permits of a semaphore of limit 1; ``"lock"``: locks."""
        if kind == "election":
            self.lock_name = ELECTION_PREFIX + self.lock_name
        elif kind == "permit":
            self.lock_name = PERMIT_PREFIX + self.lock_name

    def worker(self, holder: str, url: str | None = None) -> Scripted:
        """A ``script`` worker process with one lock object of the scenario's lock,
        connected to ``url`` (default: the target's)."""
        worker = Scripted(url or self.target.url(), holder, self.history, self.store.directory,
                          self.lock_name, log=self.logs / f"{holder}.log")
        self._workers.append(worker)
        return worker

    def contend(self, workers: int, seconds: float, names: list[str],
                hold: float = 0.01) -> list[subprocess.Popen[str]]:
        """Start ``workers`` ``contend`` processes on ``names``, holding each lock up to
        ``hold`` seconds; once all are connected, start them together."""
        processes = [spawn(self.target.url(), "contend", f"contender-{index}",
                           str(self.history), str(self.store.directory), str(seconds),
                           str(hold), *names,
                           log=self.logs / f"contender-{index}.log")
                     for index in range(workers)]
        self._processes += processes
        for process in processes:
            assert read_line(process, 30) == "ready", "a contender did not connect"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        return processes

    def tallies(self, processes: list[subprocess.Popen[str]], timeout: float) -> list[Tally]:
        """What each ``contend`` process did, once it is done."""
        found = []
        for process in processes:
            line = read_line(process, timeout)
            assert line.startswith("done "), f"a contender said {line!r}"
            found.append(Tally(**json.loads(line.removeprefix("done "))))
        return found

    def coordinator(self, url: str | None = None) -> conch.Coordinator:
        """A started coordinator in the test process, stopped when the scenario ends."""
        started = conch.connect(url or self.target.url())
        self._coordinators.append(started)
        return started

    def holder(self, holder: str, url: str | None = None) -> Holder:
        """An in-process lock user of the scenario's lock, recording like the workers."""
        lock = held_by_name(self.coordinator(url), self.lock_name)
        return Holder(lock, holder, Recorder(self.history, holder), self.store)

    def proxy(self) -> Proxy:
        """A proxy in front of the target's server, closed when the scenario ends."""
        proxy = self.target.proxy()
        self._proxies.append(proxy)
        return proxy

    def measure(self, metric: str, seconds: float) -> None:
        """Report a measured duration (printed; recorded for the results table)."""
        print(f"\n{self.test} [{self.target.backend}] {metric}: {seconds:.2f} s")
        record_result({"test": self.test, "params": self.params, "metric": metric,
                       "seconds": round(seconds, 3)})

    def note(self, metric: str, text: str) -> None:
        """Report an observed outcome that is not a duration."""
        print(f"\n{self.test} [{self.target.backend}] {metric}: {text}")
        record_result({"test": self.test, "params": self.params, "metric": metric,
                       "text": text})

    def check(self, fencing: bool = True) -> int:
        """Assert the history and the fenced store show no violation; the sections checked."""
        sections = load(self.history)
        problems = violations(sections, fencing=fencing)
        problems += fenced_counter_violations(self.store.writes(), sections)
        assert not problems, "\n".join(problems[:20])
        accepted = sum(write.accepted for write in self.store.writes()
                       if write.name == self.lock_name)
        assert self.store.value(self.lock_name) == accepted
        return len(sections)

    def close(self) -> None:
        """Kill the workers, stop the coordinators, close the proxies; then fail if the
        password shows in any log or in the workers' stderr."""
        errors = [worker.close() for worker in self._workers]
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            errors.append(process.communicate()[1])
        for proxy in self._proxies:  # so that stopping the coordinators is quick
            proxy.heal()
            proxy.restore()
        for coordinator in self._coordinators:
            coordinator.stop()
        for proxy in self._proxies:
            proxy.close()
        logging.getLogger().removeHandler(self._log_handler)
        logging.getLogger().setLevel(self._log_level)
        self._log_handler.close()
        secret = self.target.password
        if secret:
            logs = [path.read_text(errors="replace") for path in self.logs.iterdir()]
            leaks = [text for text in logs + errors if secret in text]
            assert not leaks, f"the password shows in a log: {leaks[0][:300]}"
