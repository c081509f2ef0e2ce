"""Fixtures of the chaos suite: a server per backend to break, a scenario per test.

Every test here is marked ``chaos`` (``pytest -m chaos`` runs only them,
``-m "not chaos"`` skips them). Each outcome is appended to the results file
named by ``CONCH_CHAOS_RESULTS``, if set, for docs/chaos-results.md.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.chaos.scenario import Scenario, record_result
from tests.chaos.targets import Servers, Target

CHAOS_DIR = pathlib.Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: fault-injection scenarios on real servers (tests/chaos)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CHAOS_DIR in pathlib.Path(item.path).parents:
            item.add_marker(pytest.mark.chaos)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if CHAOS_DIR not in pathlib.Path(report.fspath).resolve().parents:
        return
    if report.when == "call" or report.outcome != "passed":
        test, _, params = report.location[2].partition("[")
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        record_result({"test": test, "params": params.rstrip("]"), "when": report.when,
                       "outcome": outcome})


@pytest.fixture(scope="session")
def chaos_servers() -> Iterator[Servers]:
    """One server per backend for the chaos suite alone (started on first use)."""
    servers = Servers()
    try:
        yield servers
    finally:
        servers.cleanup()


@pytest.fixture
def target(request: pytest.FixtureRequest, chaos_servers: Servers,
           tmp_path: pathlib.Path) -> Target:
    """The backend named by the test's parameter, its server running and not paused."""
    backend: str = request.param
    if backend in ("file", "memory"):
        url = f"file://{tmp_path / 'locks'}" if backend == "file" else f"memory://{tmp_path}"
        return Target(backend, None, local_url=url)
    return Target(backend, chaos_servers.get(backend))


@pytest.fixture
def scenario(request: pytest.FixtureRequest, target: Target,
             tmp_path: pathlib.Path) -> Iterator[Scenario]:
    """The workers, proxies and records of this test; everything it started is stopped."""
    callspec = getattr(request.node, "callspec", None)
    run = Scenario(request.node.originalname, target, tmp_path / "run",
                   params=callspec.id if callspec else "")
    try:
        yield run
    finally:
        run.close()
