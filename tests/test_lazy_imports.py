"""What importing conch costs: the sync API brings in neither asyncio nor conch.aio, and a
backend's package imports no client library until its backend is used."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

import conch
import conch.aio

ASYNC = "[m for m in sys.modules if m == 'asyncio' or m.startswith(('asyncio.', 'conch.aio'))]"


def run(script: str) -> None:
    """Run ``script`` in a fresh interpreter (nothing imported yet); fail with its error."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_import_conch_imports_neither_asyncio_nor_conch_aio() -> None:
    run(f"""
        import sys
        import conch
        assert not {ASYNC}, {ASYNC}
    """)


@pytest.mark.parametrize("url", ["memory://", "file://{directory}"])
def test_a_lock_taken_and_released_imports_neither_asyncio_nor_conch_aio(
    url: str, tmp_path: pathlib.Path
) -> None:
    run(f"""
        import sys
        import conch
        url = {url.format(directory=tmp_path)!r}
        with conch.connect(url) as coordinator, coordinator.lock("vnf-42") as lock:
            assert lock.held
        assert not {ASYNC}, {ASYNC}
    """)


def test_synchronized_on_a_plain_function_imports_no_asyncio() -> None:
    run(f"""
        import sys
        import conch
        with conch.connect("memory://") as coordinator:
            @conch.synchronized("heal-{{vnf}}", coordinator=coordinator)
            def heal(vnf: int) -> int:
                return vnf
            assert heal(42) == 42
        assert not {ASYNC}, {ASYNC}
    """)


@pytest.mark.parametrize(("package", "library"), [
    ("redis", "redis"), ("etcd", "urllib3"), ("zookeeper", "kazoo"),
    ("postgresql", "psycopg"), ("mysql", "pymysql"), ("memcached", "pymemcache"),
])
def test_a_backends_package_imports_no_client_library(package: str, library: str) -> None:
    run(f"""
        import sys
        import conch.backends.{package}
        assert {library!r} not in sys.modules, "importing the package imported {library}"
        assert "conch.backends.{package}.backend" not in sys.modules
        from conch.backends.{package} import backend
        assert {library!r} in sys.modules
    """)


def test_conch_aio_still_works_after_import_conch() -> None:
    import asyncio

    async def main() -> int | None:
        async with await conch.aio.connect("memory://") as coordinator, \
                coordinator.lock("vnf-42") as lock:
            return lock.token

    assert asyncio.run(main()) is not None


def test_synchronized_on_async_def_imports_conch_aio_when_decorating() -> None:
    run("""
        import asyncio, sys
        import conch
        with conch.connect("memory://") as coordinator:
            @conch.synchronized("heal-{vnf}", coordinator=coordinator)
            async def heal(vnf: int) -> int:
                return vnf
            assert "conch.aio" in sys.modules
            assert asyncio.run(heal(42)) == 42
    """)
