"""``conch demo``, run as a real process: a safe history on file://, a violation on memory://."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
from collections import defaultdict

# "  0.499s  worker-1  instantiate  vnf-3   1795623495659887     0.3 ms"
STEP = re.compile(r"^\s*\d+\.\d{3}s\s+(worker-\d+)\s+(instantiate|heal|terminate)\s+"
                  r"(vnf-\d+)\s+(\d+)\s+\d+\.\d ms$")


def demo(url: str, tmp_path: pathlib.Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONCH_URL"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return subprocess.run(
        [sys.executable, "-m", "conch", "demo", "--url", url, *options],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_demo_prints_each_operation_and_finds_the_history_safe(tmp_path: pathlib.Path) -> None:
    result = demo(f"file://{tmp_path / 'locks'}", tmp_path,
                  "--workers", "3", "--vnfs", "2", "--operations", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [match.groups() for line in result.stdout.splitlines()
             if (match := STEP.match(line))]
    assert len(steps) == 3 * 4
    assert {worker for worker, *_ in steps} == {"worker-1", "worker-2", "worker-3"}
    tokens: dict[str, list[int]] = defaultdict(list)
    operations: dict[str, list[str]] = defaultdict(list)
    for _, operation, vnf, token in steps:
        tokens[vnf].append(int(token))
        operations[vnf].append(operation)
    for vnf in tokens:
        assert tokens[vnf] == sorted(set(tokens[vnf])), f"{vnf}: printed in lock order"
        assert operations[vnf][0] == "instantiate", "a VNF is created before it is changed"
    assert "SAFE: no two operations on one VNF overlapped" in result.stdout
    assert "fencing tokens increased on every VNF" in result.stdout
    for vnf in tokens:
        assert re.search(rf"^{vnf}\s+{len(tokens[vnf])}\s", result.stdout, re.MULTILINE)


def test_demo_reports_a_violation_when_the_lock_does_not_span_processes(
    tmp_path: pathlib.Path,
) -> None:
    # memory:// locks live inside one process: each worker has its own, so nothing
    # excludes the others and each process counts tokens from 1.
    result = demo("memory://", tmp_path, "--workers", "2", "--vnfs", "1", "--operations", "3")
    assert result.returncode == 1
    assert "VIOLATION" in result.stdout
    assert "UNSAFE" in result.stdout


def test_demo_on_an_unusable_directory_is_one_line(tmp_path: pathlib.Path) -> None:
    result = demo("file:///proc/conch-cannot-be-here", tmp_path)
    assert result.returncode == 69
    assert result.stdout == ""
    assert result.stderr.startswith("conch: error: ") and result.stderr.count("\n") == 1
