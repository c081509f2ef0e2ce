"""The ``conch`` command, run as a real process (``python -m conch``) on ``file://``."""

from __future__ import annotations

import importlib.metadata
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

import conch
from conch.exec import EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED, run_locked
from tests.cli_runs import (
    HOLD,
    assert_exports_name_and_increasing_token,
    assert_one_line_error,
    conch_cmd,
    env,
    is_running,
    run,
    start_holder,
    stop_when_exists,
    url,
)
from tests.servers.base import wait_until

__all__ = ["env", "url"]  # the fixtures, from tests/cli_runs.py


def test_exec_exits_with_the_command_status(env: dict[str, str], url: str) -> None:
    result = run(env, "exec", "--url", url, "job", "--", sys.executable, "-c", "exit(3)")
    assert result.returncode == 3
    assert result.stderr == ""


def test_exec_reports_a_command_killed_by_a_signal_as_128_plus_n(
    env: dict[str, str], url: str
) -> None:
    result = run(env, "exec", "--url", url, "job", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + signal.SIGTERM


def test_exec_exports_the_lock_name_and_an_increasing_token(
    env: dict[str, str], url: str
) -> None:
    assert_exports_name_and_increasing_token(
        env, url, "exec", "vnf-42", "CONCH_LOCK_NAME", "CONCH_LOCK_TOKEN")


def test_exec_passes_arguments_after_the_separator_untouched(
    env: dict[str, str], url: str
) -> None:
    echo = "import sys; print(sys.argv[1:])"
    result = run(env, "exec", "--url", url, "job", "--", sys.executable, "-c", echo,
                 "--timeout", "--", "-x")
    assert result.stdout.strip() == "['--timeout', '--', '-x']"


def test_exec_without_timeout_waits_until_the_holder_exits(
    env: dict[str, str], url: str, tmp_path: pathlib.Path
) -> None:
    log = tmp_path / "log"
    append = "import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    first = subprocess.Popen(conch_cmd(
        "exec", "--url", url, "job", "--", "sh", "-c",
        f'{sys.executable} -c "{append}" {log} first-in; sleep 1; '
        f'{sys.executable} -c "{append}" {log} first-out',
    ), env=env)
    wait_until(log.exists, 30, "the first holder")
    second = run(env, "exec", "--url", url, "job", "--", sys.executable, "-c", append,
                 str(log), "second-in")
    assert first.wait(30) == 0
    assert second.returncode == 0
    assert log.read_text().split() == ["first-in", "first-out", "second-in"]


@pytest.mark.parametrize("timeout", ["0.3", "0"])
def test_exec_gives_up_with_status_75_after_the_timeout(
    env: dict[str, str], url: str, tmp_path: pathlib.Path, timeout: str
) -> None:
    holder = start_holder(env, url, "job", tmp_path / "pid")
    try:
        started = time.monotonic()
        result = run(env, "exec", "--url", url, "--timeout", timeout, "job", "--", "true")
        elapsed = time.monotonic() - started
    finally:
        holder.terminate()
        holder.wait(30)
    assert result.returncode == EXIT_NOT_ACQUIRED
    assert_one_line_error(result)
    assert "not acquired" in result.stderr and "'job'" in result.stderr
    # Interpreter start-up comes on top of the wait; a loaded machine is slow to start.
    assert float(timeout) <= elapsed < float(timeout) + 10


def test_sigterm_to_exec_is_forwarded_to_the_command(
    env: dict[str, str], url: str, tmp_path: pathlib.Path
) -> None:
    pid_file = tmp_path / "pid"
    holder = start_holder(env, url, "job", pid_file)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(30) == 128 + signal.SIGTERM
    assert not is_running(int(pid_file.read_text()))
    again = run(env, "exec", "--url", url, "--timeout", "0", "job", "--", "true")
    assert again.returncode == 0  # released once the command ended


@pytest.mark.parametrize("default", ["CONCH_URL", "per-user directory"])
def test_without_url_exec_uses_conch_url_then_the_per_user_directory(
    env: dict[str, str], url: str, tmp_path: pathlib.Path, default: str
) -> None:
    if default == "CONCH_URL":
        env = {**env, "CONCH_URL": url}
    else:
        url = f"file://{env['XDG_STATE_HOME']}/conch/locks"
    holder = start_holder(env, url, "job", tmp_path / "pid")
    try:
        result = run(env, "exec", "--timeout", "0", "job", "--", "true")
    finally:
        holder.terminate()
        holder.wait(30)
    assert result.returncode == EXIT_NOT_ACQUIRED


@pytest.mark.parametrize("args", [
    ["exec", "job", "true"],         # no "--"
    ["exec", "job", "--"],           # no command
    ["exec", "--", "true"],          # no name
    ["exec", "--timeout", "-1", "job", "--", "true"],
    ["exec", "--timeout", "soon", "job", "--", "true"],
    ["demo", "--workers", "0"],
    ["demo", "--", "true"],
    ["lock", "job"],                 # no such command
    [],
], ids=repr)
def test_usage_errors_are_one_line_with_status_2(env: dict[str, str], args: list[str]) -> None:
    result = run(env, *args)
    assert result.returncode == 2
    assert_one_line_error(result)
    assert result.stderr.startswith("conch: error: ")


def test_a_command_without_the_separator_is_a_usage_error_naming_it(
    env: dict[str, str], url: str
) -> None:
    result = run(env, "exec", "--url", url, "job", "make", "deploy")
    assert result.returncode == 2
    assert_one_line_error(result)
    assert "put -- before the command" in result.stderr and "-- make deploy" in result.stderr


@pytest.mark.parametrize("bad_url", ["bogus", "nosuch://host/", "file://relative", "file:///"])
def test_bad_urls_are_one_line_with_status_2(env: dict[str, str], bad_url: str) -> None:
    result = run(env, "exec", "--url", bad_url, "job", "--", "true")
    assert result.returncode == 2
    assert_one_line_error(result)


def test_an_unusable_lock_directory_is_one_line_with_status_69(env: dict[str, str]) -> None:
    result = run(env, "exec", "--url", "file:///proc/conch-cannot-be-here", "job", "--", "true")
    assert result.returncode == 69
    assert_one_line_error(result)
    assert "/proc/conch-cannot-be-here" in result.stderr


@pytest.mark.parametrize("via", ["--url", "CONCH_URL"])
def test_a_password_in_the_url_is_never_printed(env: dict[str, str], via: str) -> None:
    secret_url = "redis://user:s3cret@127.0.0.1:1/"
    if via == "--url":
        result = run(env, "exec", "--url", secret_url, "job", "--", "true")
    else:
        result = run({**env, "CONCH_URL": secret_url}, "exec", "job", "--", "true")
    assert result.returncode in (2, 69)  # unreachable, or no redis backend installed
    assert_one_line_error(result)
    assert "s3cret" not in result.stderr


def test_a_missing_command_exits_127(env: dict[str, str], url: str) -> None:
    result = run(env, "exec", "--url", url, "job", "--", "/nonexistent/conch-cmd")
    assert result.returncode == 127
    assert_one_line_error(result)


def test_version(env: dict[str, str]) -> None:
    result = run(env, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"conch {importlib.metadata.version('conch')}"


# Losing the lock: a memory:// coordinator loses its holds when stopped.


def test_a_lost_lock_terminates_the_command(
    memory_url: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "pid"
    coordinator = conch.connect(memory_url)
    threading.Thread(target=stop_when_exists, args=(coordinator, pid_file)).start()
    started = time.monotonic()
    status = run_locked(coordinator, "job", [sys.executable, "-c", HOLD, str(pid_file)])
    assert status == EXIT_LOCK_LOST
    assert time.monotonic() - started < 30  # not the command's 60 s
    assert not is_running(int(pid_file.read_text()))
    assert "'job' was lost" in capsys.readouterr().err


def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(
    memory_url: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = tmp_path / "pid"
    stubborn = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + HOLD
    coordinator = conch.connect(memory_url)
    threading.Thread(target=stop_when_exists, args=(coordinator, pid_file)).start()
    status = run_locked(coordinator, "job", [sys.executable, "-c", stubborn, str(pid_file)],
                        grace=0.5)
    assert status == EXIT_LOCK_LOST
    assert not is_running(int(pid_file.read_text()))
    assert "SIGKILL" in capsys.readouterr().err


def test_a_lost_lock_stops_what_the_command_started_too(
    memory_url: str, tmp_path: pathlib.Path
) -> None:
    pid_file = tmp_path / "pid"
    shell = f"{sys.executable} -c \"{HOLD}\" {pid_file} & wait"  # a grandchild
    coordinator = conch.connect(memory_url)
    threading.Thread(target=stop_when_exists, args=(coordinator, pid_file)).start()
    assert run_locked(coordinator, "job", ["sh", "-c", shell]) == EXIT_LOCK_LOST
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not is_running(grandchild), 10, "the end of the grandchild")
