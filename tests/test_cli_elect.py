"""``conch elect NAME -- CMD``: CMD runs only while this process leads the election."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading

import pytest

import conch
from conch.exec import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, run_leading
from tests.servers.base import wait_until
from tests.test_cli import HOLD, assert_one_line_error, conch_cmd, env, run, stop_when_exists, url

__all__ = ["env", "url"]  # the fixtures, shared with tests/test_cli.py


def test_elect_exports_the_election_and_an_increasing_term_token(
    env: dict[str, str], url: str
) -> None:
    show = "import os; print(os.environ['CONCH_ELECTION'], os.environ['CONCH_LEADER_TOKEN'])"
    tokens = []
    for _ in range(2):
        result = run(env, "elect", "--url", url, "scheduler", "--", sys.executable, "-c", show)
        assert result.returncode == 0, result.stderr
        name, token = result.stdout.split()
        assert name == "scheduler"
        tokens.append(int(token))
    assert tokens[1] > tokens[0]


def test_a_second_candidate_gives_up_with_status_75_while_one_leads(
    env: dict[str, str], url: str, tmp_path: pathlib.Path
) -> None:
    pid_file = tmp_path / "pid"
    leader = subprocess.Popen(
        conch_cmd("elect", "--url", url, "scheduler", "--", sys.executable, "-c", HOLD,
                  str(pid_file)), env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 30, "the leader")
        result = run(env, "elect", "--url", url, "--timeout", "0", "scheduler", "--", "true")
    finally:
        leader.terminate()
        leader.communicate(timeout=30)
    assert result.returncode == EXIT_NOT_ACQUIRED
    assert_one_line_error(result)
    assert "leadership of 'scheduler' not acquired at once" in result.stderr


def test_lost_leadership_stops_the_command_with_status_70(
    memory_url: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "pid"
    coordinator = conch.connect(memory_url)
    threading.Thread(target=stop_when_exists, args=(coordinator, pid_file)).start()
    status = run_leading(coordinator, "scheduler", [sys.executable, "-c", HOLD, str(pid_file)])
    assert status == EXIT_LOCK_LOST
    assert "leadership of 'scheduler' was lost" in capsys.readouterr().err


def test_elect_without_the_separator_is_a_usage_error(env: dict[str, str], url: str) -> None:
    result = run(env, "elect", "--url", url, "scheduler", "true")
    assert result.returncode == 2
    assert "put -- before the command, as: conch elect NAME -- true" in result.stderr
