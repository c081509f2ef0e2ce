"""``conch elect NAME -- CMD``: CMD runs only while this process leads the election."""

from __future__ import annotations

import pathlib
import sys
import threading

import pytest

import conch
from conch.exec import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, run_leading
from tests.cli_runs import (
    HOLD,
    assert_exports_name_and_increasing_token,
    assert_one_line_error,
    env,
    run,
    start_holder,
    stop_when_exists,
    url,
)

__all__ = ["env", "url"]  # the fixtures, from tests/cli_runs.py


def test_elect_exports_the_election_and_an_increasing_term_token(
    env: dict[str, str], url: str
) -> None:
    assert_exports_name_and_increasing_token(
        env, url, "elect", "scheduler", "CONCH_ELECTION", "CONCH_LEADER_TOKEN")


def test_a_second_candidate_gives_up_with_status_75_while_one_leads(
    env: dict[str, str], url: str, tmp_path: pathlib.Path
) -> None:
    leader = start_holder(env, url, "scheduler", tmp_path / "pid", "elect")
    try:
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
