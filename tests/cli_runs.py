"""What the tests of the ``conch`` command share: its environment and URL fixtures, runs of
``python -m conch`` and of a holding command, and checks of their output."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

import conch
from tests.servers.base import wait_until

# A command that records its pid, then sleeps until it is signalled.
HOLD = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"


@pytest.fixture
def env(tmp_path: pathlib.Path) -> dict[str, str]:
    """The environment of each conch run: no CONCH_URL, a private per-user state directory."""
    clean = {k: v for k, v in os.environ.items() if k != "CONCH_URL"}
    clean["XDG_STATE_HOME"] = str(tmp_path / "state")
    return clean


@pytest.fixture
def url(tmp_path: pathlib.Path) -> str:
    return f"file://{tmp_path / 'locks'}"


def conch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "conch", *args]


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(conch_cmd(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_holder(
    env: dict[str, str], url: str, name: str, pid_file: pathlib.Path, command: str = "exec"
) -> subprocess.Popen[str]:
    """``conch exec`` (or ``command``) holding ``name`` with a sleeping command; returns once
    it holds."""
    holder = subprocess.Popen(
        conch_cmd(command, "--url", url, name, "--", sys.executable, "-c", HOLD, str(pid_file)),
        env=env, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 30, "the holder")
    return holder


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conch: ")
    assert "Traceback" not in result.stderr


def is_running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie whose parent died unreaped counts as ended)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def assert_exports_name_and_increasing_token(
    env: dict[str, str], url: str, command: str, name: str, name_variable: str,
    token_variable: str
) -> None:
    """``conch <command> name`` twice: the command gets ``name`` and a token that increases."""
    show = f"import os; print(os.environ[{name_variable!r}], os.environ[{token_variable!r}])"
    tokens = []
    for _ in range(2):
        result = run(env, command, "--url", url, name, "--", sys.executable, "-c", show)
        assert result.returncode == 0, result.stderr
        shown, token = result.stdout.split()
        assert shown == name
        tokens.append(int(token))
    assert tokens[1] > tokens[0]


def stop_when_exists(coordinator: conch.Coordinator, path: pathlib.Path) -> None:
    wait_until(lambda: path.exists() and path.read_text() != "", 30, "the command")
    coordinator.stop()
