"""Python etcd v3 clients measured on what conch's lock needs, side by side on one etcd.

``python -m benchmarks.etcd_clients [--rounds N] [--out DIR]`` starts an etcd of the
test harness and runs each client in processes of its own (``aetcd`` and ``pyetcd``
cannot share one): p50/p99 of a range, a put-if-absent transaction with a lease, a
lease grant, a keep-alive, and the wake-up of a watch on a key deleted by another
connection; then whether a watch wakes under ``eventlet.monkey_patch()`` while other
green threads keep running. Writes ``<out>/etcd.clients.json``; prints markdown.
The candidates are no dependencies of conch: ``pip install aetcd etcd-sdk-python etcd3gw``
for the run (and uninstall them after).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import urllib3

CLIENTS = {  # name: distribution whose version is reported (None: conch's own)
    "conch gateway (urllib3)": None,
    "etcd3gw": "etcd3gw",
    "etcd-sdk-python (pyetcd)": "etcd-sdk-python",
    "aetcd": "aetcd",
}
OPERATIONS = ("range", "txn put-if-absent + lease", "lease grant", "lease keep-alive",
              "watch wake-up")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _Deleter:
    """Deletes a key over a connection of its own: the other side of a watch wake-up."""

    def __init__(self, endpoint: str) -> None:
        host, _, port = endpoint.partition(":")
        self._pool = urllib3.HTTPConnectionPool(host, int(port), retries=False)

    def put(self, key: bytes) -> None:
        self._pool.urlopen("POST", "/v3/kv/put",
                           body=json.dumps({"key": _b64(key), "value": _b64(b"x")}))

    def delete(self, key: bytes) -> int:
        """Delete ``key``; the monotonic time (ns) just before the request went out."""
        sent = time.monotonic_ns()
        self._pool.urlopen("POST", "/v3/kv/deleterange", body=json.dumps({"key": _b64(key)}))
        return sent


def _timed(operation: Callable[[], object], rounds: int) -> list[int]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        operation()
        samples.append(time.perf_counter_ns() - start)
    return samples


def _wait_and_stamp(wait: Callable[[], None], woke: list[int]) -> None:
    wait()
    woke.append(time.monotonic_ns())


def _watch_wakeups(start_watch: Callable[[bytes], Callable[[], None]], deleter: _Deleter,
                   rounds: int) -> list[int]:
    """``start_watch(key)`` returns a blocking wait for the key's deletion."""
    samples = []
    for _ in range(rounds):
        key = f"/bench-watch/{uuid.uuid4().hex}".encode()
        deleter.put(key)
        wait = start_watch(key)
        woke: list[int] = []
        waiter = threading.Thread(target=_wait_and_stamp, args=(wait, woke))
        waiter.start()
        time.sleep(0.05)  # every client's watch is registered by then
        sent = deleter.delete(key)
        waiter.join(5)
        samples.append(woke[0] - sent if woke else 5_000_000_000)
    return samples


def _measure_sync(client: Any, rounds: int, deleter: _Deleter) -> dict[str, list[int]]:
    """``client``: range(key), txn(key, lease), delete(key), grant(), keep_alive(lease),
    watch(key) -> wait."""
    lease = client.grant()
    key = f"/bench/{uuid.uuid4().hex}".encode()

    def txn_cycle() -> None:
        start = time.perf_counter_ns()
        client.txn(key, lease)
        txn_times.append(time.perf_counter_ns() - start)
        client.delete(key)

    txn_times: list[int] = []
    results = {"range": _timed(lambda: client.range(key), rounds)}
    _timed(txn_cycle, rounds)
    results["txn put-if-absent + lease"] = txn_times
    results["lease grant"] = _timed(client.grant, rounds)
    results["lease keep-alive"] = _timed(lambda: client.keep_alive(lease), rounds)
    results["watch wake-up"] = _watch_wakeups(client.watch, deleter, max(10, rounds // 10))
    return results


class GatewayClient:
    """conch's own gateway client."""

    def __init__(self, endpoint: str) -> None:
        from conch.backends.etcd.client import Gateway, encode
        from conch.url import parse_url

        self.gateway = Gateway(parse_url(f"etcd://{endpoint}"), None)
        self.gateway.open()
        self._encode = encode

    def range(self, key: bytes) -> object:
        return self.gateway.call("/v3/kv/range", {"key": self._encode(key)})

    def txn(self, key: bytes, lease: int) -> object:
        return self.gateway.txn(
            compare=[{"key": self._encode(key), "target": "CREATE", "result": "EQUAL",
                      "create_revision": "0"}],
            success=[{"request_put": {"key": self._encode(key), "value": self._encode(b"v"),
                                      "lease": str(lease)}}])

    def delete(self, key: bytes) -> object:
        return self.gateway.delete(key)

    def grant(self) -> int:
        return int(self.gateway.call("/v3/lease/grant", {"TTL": 60})["ID"])

    def keep_alive(self, lease: int) -> object:
        return self.gateway.call("/v3/lease/keepalive", {"ID": str(lease)})

    def watch(self, key: bytes) -> Callable[[], None]:
        from conch.backends.base import Deadline

        watch = self.gateway.watch(key, deletes_only=True)  # the key and any it prefixes

        def wait() -> None:
            watch.wait(Deadline(5))
            watch.close()
        return wait


class _SyncLibraryClient:
    """A synchronous library whose ``client(host=, port=)`` has ``get``, ``delete`` and
    ``lease(ttl)`` (a lease with ``refresh()``) and whose ``watch`` gives (events, cancel)."""

    module = ""

    def __init__(self, endpoint: str) -> None:
        host, _, port = endpoint.partition(":")
        self.client = importlib.import_module(self.module).client(host=host, port=int(port))

    def range(self, key: bytes) -> object:
        return self.client.get(key)

    def delete(self, key: bytes) -> object:
        return self.client.delete(key)

    def grant(self) -> Any:
        return self.client.lease(60)

    def keep_alive(self, lease: Any) -> object:
        return lease.refresh()

    def watch(self, key: bytes) -> Callable[[], None]:
        events, cancel = self.client.watch(key)

        def wait() -> None:
            next(iter(events))
            cancel()
        return wait


class Etcd3gwClient(_SyncLibraryClient):
    """OpenStack's etcd3gw (the JSON gateway over requests)."""

    module = "etcd3gw"

    def txn(self, key: bytes, lease: Any) -> object:
        return self.client.transaction({
            "compare": [{"key": _b64(key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": 0}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(b"v"),
                                         "lease": lease.id}}],
            "failure": []})


class PyetcdClient(_SyncLibraryClient):
    """etcd-sdk-python (module pyetcd, gRPC), a fork of python-etcd3."""

    module = "pyetcd"

    def txn(self, key: bytes, lease: Any) -> object:
        ops = self.client.transactions
        return self.client.transaction(compare=[ops.create(key) == 0],
                                       success=[ops.put(key, b"v", lease=lease)], failure=[])


async def _measure_aetcd(endpoint: str, rounds: int, deleter: _Deleter) -> dict[str, list[int]]:
    """aetcd (asyncio, gRPC): every operation awaited on one event loop."""
    aetcd = importlib.import_module("aetcd")
    host, _, port = endpoint.partition(":")
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    key = f"/bench/{uuid.uuid4().hex}".encode()
    lease = await client.lease(60)

    async def timed(operation: Callable[[], Awaitable[object]], count: int) -> list[int]:
        samples = []
        for _ in range(count):
            start = time.perf_counter_ns()
            await operation()
            samples.append(time.perf_counter_ns() - start)
        return samples

    async def txn() -> object:
        ops = client.transactions
        return await client.transaction(compare=[ops.create(key) == 0],
                                        success=[ops.put(key, b"v", lease=lease)], failure=[])

    results = {"range": await timed(lambda: client.get(key), rounds)}
    txn_times = []
    for _ in range(rounds):
        txn_times += await timed(txn, 1)
        await client.delete(key)
    results["txn put-if-absent + lease"] = txn_times
    results["lease grant"] = await timed(lambda: client.lease(60), rounds)
    results["lease keep-alive"] = await timed(lease.refresh, rounds)
    wakeups = []
    loop = asyncio.get_running_loop()
    for _ in range(max(10, rounds // 10)):
        watched = f"/bench-watch/{uuid.uuid4().hex}".encode()
        deleter.put(watched)
        watch = await client.watch(watched, kind=aetcd.EventKind.DELETE)
        await asyncio.sleep(0.05)
        sent_future = loop.run_in_executor(None, deleter.delete, watched)
        async for _event in watch:
            woke = time.monotonic_ns()
            break
        wakeups.append(woke - await sent_future)
        await watch.cancel()
    results["watch wake-up"] = wakeups
    await client.close()
    return results


SYNC_CLIENTS = {"conch gateway (urllib3)": GatewayClient, "etcd3gw": Etcd3gwClient,
                "etcd-sdk-python (pyetcd)": PyetcdClient}


def measure(name: str, endpoint: str, rounds: int) -> dict[str, list[int]]:
    """In a process of the client's own: every operation's samples (ns)."""
    deleter = _Deleter(endpoint)
    if name == "aetcd":
        return asyncio.run(_measure_aetcd(endpoint, rounds, deleter))
    return _measure_sync(SYNC_CLIENTS[name](endpoint), rounds, deleter)


def eventlet_check(name: str, endpoint: str) -> str:
    """Under ``eventlet.monkey_patch()``: does a watch wake while a green thread ticks?"""
    eventlet = importlib.import_module("eventlet")
    eventlet.monkey_patch()
    deleter = _Deleter(endpoint)
    key = f"/bench-eventlet/{uuid.uuid4().hex}".encode()
    deleter.put(key)
    ticks = [0]

    def ticker() -> None:
        while True:
            eventlet.sleep(0.01)
            ticks[0] += 1

    eventlet.spawn(ticker)
    with eventlet.Timeout(10):
        if name == "aetcd":
            async def wake() -> None:
                aetcd = importlib.import_module("aetcd")
                host, _, port = endpoint.partition(":")
                client = aetcd.Client(host=host, port=int(port))
                watch = await client.watch(key)
                eventlet.spawn_after(0.3, deleter.delete, key)
                async for _event in watch:
                    break
            asyncio.run(wake())
        else:
            wait = SYNC_CLIENTS[name](endpoint).watch(key)  # type: ignore[attr-defined]
            eventlet.spawn_after(0.3, deleter.delete, key)
            wait()
    return f"works ({ticks[0]} ticks of 10 ms during a 0.3 s wait)" if ticks[0] >= 15 \
        else f"the wait blocks other green threads ({ticks[0]} ticks of 10 ms in 0.3 s)"


def _child(args: list[str], timeout: float) -> str:
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.etcd_clients", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return json.dumps(f"hangs: killed after {timeout:.0f} s (eventlet's own timeout "
                          "never fired: the whole process was blocked)")
    if done.returncode != 0:
        return json.dumps({"error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]})
    return done.stdout.strip().splitlines()[-1]


def _pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--measure")
    parser.add_argument("--eventlet")
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.endpoint, args.rounds)))
        return
    if args.eventlet:
        try:
            print(json.dumps(eventlet_check(args.eventlet, args.endpoint)))
        except BaseException as exc:  # the verdict is the failure
            print(json.dumps(f"fails: {type(exc).__name__} {exc}"[:200]))
        return
    from tests.servers.etcd import start_etcd

    server = start_etcd()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "load": os.getloadavg(), "rounds": args.rounds, "clients": {}}
    try:
        for name, distribution in CLIENTS.items():
            samples = json.loads(_child(["--measure", name, "--endpoint", server.endpoint,
                                         "--rounds", str(args.rounds)], 600))
            verdict = json.loads(_child(["--eventlet", name, "--endpoint", server.endpoint], 30))
            try:
                version = metadata.version(distribution or "conch")
            except metadata.PackageNotFoundError:
                version = "not installed"
            report["clients"][name] = {"version": version, "eventlet": verdict,
                                       "samples_ns": samples}
    finally:
        server.cleanup()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "etcd.clients.json").write_text(json.dumps(report, indent=1))
    print(f"{report['date']}, load {report['load'][0]:.2f}; p50 / p99 in µs\n")
    print("| client | version | " + " | ".join(OPERATIONS) + " | eventlet |")
    print("|---|---|" + "--:|" * len(OPERATIONS) + "---|")
    for name, found in report["clients"].items():
        samples = found["samples_ns"]
        cells = [f"{_pct(samples[op], 0.5):,.0f} / {_pct(samples[op], 0.99):,.0f}"
                 if op in samples else "-" for op in OPERATIONS]
        print(f"| {name} | {found['version']} | " + " | ".join(cells)
              + f" | {found['eventlet']} |")
        if "error" in samples:
            print(f"|  | error: {samples['error']} |")


if __name__ == "__main__":
    main()
