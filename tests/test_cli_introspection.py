"""``conch ls``, ``show``, ``break`` and ``wait``, run as real processes."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import subprocess
import sys
from collections.abc import Iterator

import pytest

from conch.exec import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED
from tests.cli_runs import assert_one_line_error, conch_cmd, env, run, start_holder, url

__all__ = ["env", "url"]  # the fixtures, from tests/cli_runs.py


@pytest.fixture
def holder(env: dict[str, str], url: str, tmp_path: pathlib.Path
           ) -> Iterator[subprocess.Popen[str]]:
    """``conch exec`` holding ``vnf-42`` on ``url`` until the test ends."""
    process = start_holder(env, url, "vnf-42", tmp_path / "holder.pid")
    yield process
    process.terminate()
    process.wait(30)


def test_ls_prints_a_table_of_the_held_locks(
    env: dict[str, str], url: str, holder: subprocess.Popen[str]
) -> None:
    result = run(env, "ls", "--url", url)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "TOKEN", "MEMBER", "HOST", "PID", "HELD", "TTL", "WAITERS"]
    cells = row.split()
    assert cells[0] == "vnf-42"
    assert cells[2].startswith("conch-exec-")
    assert cells[4] == str(holder.pid)


def test_ls_json_lists_holders_under_a_prefix(
    env: dict[str, str], url: str, holder: subprocess.Popen[str]
) -> None:
    [listed] = json.loads(run(env, "ls", "--url", url, "--json", "vnf").stdout)
    assert listed["name"] == "vnf-42" and listed["held"] is True
    assert listed["holder"]["pid"] == holder.pid
    assert set(listed["holder"]) == {"member_id", "host", "pid", "acquired_at", "token",
                                     "ttl_left", "session"}
    assert json.loads(run(env, "ls", "--url", url, "--json", "other").stdout) == []
    assert run(env, "ls", "--url", url, "other").stdout == ""


def test_show_describes_the_holder_and_a_free_lock(
    env: dict[str, str], url: str, holder: subprocess.Popen[str]
) -> None:
    shown = run(env, "show", "--url", url, "vnf-42")
    assert shown.returncode == 0
    fields = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert fields["state"].strip() == "held"
    assert fields["pid"].strip() == str(holder.pid)
    assert fields["waiters"].strip() == "unknown"
    described = json.loads(run(env, "show", "--url", url, "--json", "vnf-7").stdout)
    assert described == {"name": "vnf-7", "held": False, "holder": None, "waiters": None}


def test_break_on_a_file_backend_says_why_it_cannot(
    env: dict[str, str], url: str, holder: subprocess.Popen[str]
) -> None:
    result = run(env, "break", "--url", url, "--yes", "vnf-42")
    assert result.returncode == 1
    assert_one_line_error(result)
    assert "flock" in result.stderr and str(holder.pid) in result.stderr
    assert holder.poll() is None


def test_break_asks_on_a_terminal_and_refuses_without_one(
    env: dict[str, str], redis_url: str, lock_name: str
) -> None:
    result = run(env, "break", "--url", redis_url, lock_name)  # stdin is not a terminal
    assert result.returncode == 1, "a free lock: nothing to break, nothing to ask"
    assert "not held" in result.stderr
    holder = subprocess.Popen(
        conch_cmd("exec", "--url", redis_url, lock_name, "--", sys.executable, "-c",
                  "import time; print('in', flush=True); time.sleep(60)"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "in\n"
        refused = run(env, "break", "--url", redis_url, lock_name)
        assert refused.returncode == 2
        assert_one_line_error(refused)
        assert "--yes" in refused.stderr
    finally:
        holder.terminate()
        holder.wait(30)


def test_break_tells_the_holder_it_lost_the_lock(
    env: dict[str, str], redis_url: str, lock_name: str
) -> None:
    holder = subprocess.Popen(
        conch_cmd("exec", "--url", redis_url, "--grace", "1", lock_name, "--",
                  sys.executable, "-c", "import time; print('in', flush=True); time.sleep(60)"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "in\n"
    broken = run(env, "break", "--url", redis_url, "--yes", "--json", lock_name)
    assert broken.returncode == 0, broken.stderr
    report = json.loads(broken.stdout)
    assert report["holder"]["member_id"].startswith("conch-exec-")
    assert holder.wait(30) == EXIT_LOCK_LOST
    assert "lost" in holder.stderr.read()  # type: ignore[union-attr]


def test_wait_returns_once_free_and_75_on_timeout(
    env: dict[str, str], url: str, holder: subprocess.Popen[str]
) -> None:
    timed_out = run(env, "wait", "--url", url, "--timeout", "0.3", "vnf-42")
    assert timed_out.returncode == EXIT_NOT_ACQUIRED
    assert_one_line_error(timed_out)
    waiter = subprocess.Popen(conch_cmd("wait", "--url", url, "--json", "vnf-42"), env=env,
                              stdout=subprocess.PIPE, text=True)
    holder.terminate()
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0
    assert json.loads(out)["free"] is True


def test_an_unreachable_backend_is_one_line_without_the_password(env: dict[str, str]) -> None:
    for command in (["ls"], ["show", "x"], ["break", "--yes", "x"], ["wait", "x"]):
        result = run(env, *command, "--url", "redis://:s3cret@127.0.0.1:1/0?connect_timeout=1")
        assert result.returncode == 69, (command, result.stderr)
        assert_one_line_error(result)
        assert "s3cret" not in result.stderr


def test_env_url_is_the_default(env: dict[str, str], url: str,
                                holder: subprocess.Popen[str]) -> None:
    listed = run({**env, "CONCH_URL": url}, "ls", "--json")
    assert [lock["name"] for lock in json.loads(listed.stdout)] == ["vnf-42"]


def test_break_on_a_terminal_shows_the_holder_and_breaks_only_when_told(
    env: dict[str, str], redis_url: str, lock_name: str
) -> None:
    holder = subprocess.Popen(
        conch_cmd("exec", "--url", redis_url, "--grace", "1", lock_name, "--", sys.executable,
                  "-c", "import time; print('in', flush=True); time.sleep(60)"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "in\n"
        for answer, status in (("n\n", 1), ("y\n", 0)):
            controller, terminal = pty.openpty()
            with os.fdopen(controller, "w") as keyboard:
                keyboard.write(answer)
                keyboard.flush()
                asked = subprocess.run(conch_cmd("break", "--url", redis_url, lock_name),
                                       env=env, stdin=terminal, capture_output=True, text=True,
                                       timeout=60, check=False)
            os.close(terminal)
            assert asked.returncode == status, asked.stderr
            assert "Break it?" in asked.stdout
            assert "member:      conch-exec-" in asked.stderr
        assert holder.wait(30) == EXIT_LOCK_LOST
    finally:
        holder.kill()
        holder.wait(30)
