"""``conch exec`` on the distributed backends: a server that stops answering for longer than
the lease costs the holder its lock, and the command it guards is terminated."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.servers.base import ServerProcess
from tests.servers.etcd import start_etcd
from tests.servers.redis import start_redis
from tests.servers.zookeeper import start_zookeeper

LEASE = 2.0


def _redis() -> tuple[ServerProcess, str]:
    server = start_redis()
    return server, f"{server.url}/0?ttl={LEASE:g}"


def _etcd() -> tuple[ServerProcess, str]:
    server = start_etcd()
    return server, server.url(ttl=f"{LEASE:g}")


def _zookeeper() -> tuple[ServerProcess, str]:
    server = start_zookeeper()
    return server, server.url(timeout=LEASE)


@pytest.fixture(params=[_redis, _etcd, _zookeeper], ids=["redis", "etcd", "zookeeper"])
def paused_later(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[ServerProcess, str]]:
    start: Callable[[], tuple[ServerProcess, str]] = request.param
    server, url = start()
    try:
        yield server, url
    finally:
        server.cleanup()


def test_exec_terminates_its_command_when_the_server_stops_answering(
    paused_later: tuple[ServerProcess, str], tmp_path: pathlib.Path, lock_name: str
) -> None:
    server, url = paused_later
    started = tmp_path / "started"
    command = ["sh", "-c", f'touch "{started}"; exec sleep 60']
    conch_exec = subprocess.Popen(
        [sys.executable, "-m", "conch", "exec", "--grace", "2", lock_name, "--", *command],
        env={**os.environ, "CONCH_URL": url}, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert conch_exec.poll() is None, conch_exec.stderr.read() if conch_exec.stderr else ""
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        server.pause()
        paused = time.monotonic()
        try:
            status = conch_exec.wait(timeout=LEASE * 3 + 10)
        finally:
            server.resume()
        print(f"conch exec told of the loss {time.monotonic() - paused:.2f} s into the pause")
        assert status == 70
        assert conch_exec.stderr is not None and "lost" in conch_exec.stderr.read()
    finally:
        if conch_exec.poll() is None:
            conch_exec.kill()
            conch_exec.wait()
