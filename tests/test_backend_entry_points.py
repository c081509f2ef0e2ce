"""Backends found through the ``conch.backends`` entry-point group: a distribution adds a
scheme, never replaces a built-in one, and the built-in schemes work without any metadata."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import conch
from conch import url as conch_url
from conch.backends.loader import backend_class
from conch.backends.redis.backend import RedisBackend
from conch.url import parse_url

SOURCE = pathlib.Path(__file__).resolve().parents[1] / "src"
# A backend of a third party: conch's memory backend under another name, counting its uses.
PLUGIN_MODULE = """
from conch.backends.memory.backend import MemoryBackend

MADE: list[object] = []


class PluginBackend(MemoryBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        MADE.append(self)
"""


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as before its first use, so that entry points are read again."""
    monkeypatch.setattr(conch_url, "_BACKENDS", dict(conch_url._BUILT_IN))
    monkeypatch.setattr(conch_url, "_entry_points_read", False)


def install_plugin(monkeypatch: pytest.MonkeyPatch, where: pathlib.Path, name: str,
                   entry_points: dict[str, str]) -> None:
    """Put a distribution ``name`` on sys.path, as pip would: its module and a
    ``*.dist-info`` directory declaring ``entry_points`` in the ``conch.backends`` group."""
    module = name.replace("-", "_")
    (where / f"{module}.py").write_text(PLUGIN_MODULE)
    dist_info = where / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{scheme} = {target}\n" for scheme, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[conch.backends]\n{lines}")
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_conch_declares_each_built_in_scheme_as_an_entry_point() -> None:
    declared = {entry_point.name: entry_point.value for entry_point
                in importlib.metadata.entry_points(group=conch_url.ENTRY_POINT_GROUP)
                if entry_point.dist is not None and entry_point.dist.name == "conch"}
    assert declared == conch_url._BUILT_IN


@pytest.mark.usefixtures("fresh_registry")
def test_a_distributions_entry_point_adds_a_scheme_that_connect_uses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
) -> None:
    install_plugin(monkeypatch, tmp_path, "conch-plugin", {"plugin": "conch_plugin:PluginBackend"})
    assert "plugin" in conch_url.known_schemes()
    with conch.connect("plugin://shared") as coordinator:
        lock = coordinator.lock("a")
        assert lock.acquire(blocking=False)
        lock.release()
    made = sys.modules["conch_plugin"].MADE
    assert len(made) == 1 and type(made[0]).__name__ == "PluginBackend"


@pytest.mark.usefixtures("fresh_registry")
def test_an_entry_point_never_replaces_a_built_in_scheme_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
) -> None:
    install_plugin(monkeypatch, tmp_path, "conch-usurper",
                   {"redis": "conch_usurper:PluginBackend", "bad scheme": "conch_usurper:X"})
    with caplog.at_level(logging.WARNING, logger="conch"):
        assert backend_class(parse_url("redis://localhost")) is RedisBackend
    warnings = [record.getMessage() for record in caplog.records]
    assert any("redis = conch_usurper:PluginBackend of conch-usurper" in message
               and "a scheme conch already has" in message for message in warnings), warnings
    assert any("bad scheme" in message and "not a URL scheme" in message
               for message in warnings), warnings
    assert "bad scheme" not in conch_url.known_schemes()


@pytest.mark.usefixtures("fresh_registry")
def test_register_backend_wins_over_an_entry_point_of_the_same_scheme(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
) -> None:
    install_plugin(monkeypatch, tmp_path, "conch-plugin", {"plugin": "conch_plugin:PluginBackend"})
    conch_url.register_backend("plugin", "conch.backends.memory.backend:MemoryBackend")
    assert backend_class(parse_url("plugin://x")).__name__ == "MemoryBackend"


def test_built_in_schemes_work_from_a_source_tree_without_conch_metadata() -> None:
    script = textwrap.dedent("""
        import importlib.metadata
        import conch

        assert not list(importlib.metadata.entry_points(group="conch.backends"))
        with conch.connect("memory://") as coordinator:
            assert coordinator.lock("a").acquire(blocking=False)
        print(" ".join(conch.url.known_schemes()))
    """)
    # -S: no site-packages, so no installed conch (nor its entry points); src on the path.
    env = {**os.environ, "PYTHONPATH": str(SOURCE)}
    done = subprocess.run([sys.executable, "-S", "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == sorted(conch_url._BUILT_IN)


@pytest.mark.usefixtures("fresh_registry")
def test_a_scheme_registered_to_something_not_a_backend_is_refused_naming_it() -> None:
    conch_url.register_backend("notabackend", "conch.errors:ConchError")
    with pytest.raises(conch.InvalidURL, match=r"conch\.errors:ConchError, registered for "
                                               r"notabackend:// URLs, is not a backend class"):
        conch.Coordinator("notabackend://host")
