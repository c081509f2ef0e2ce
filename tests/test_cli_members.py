"""``conch members GROUP``: a group's live members, for people and as JSON. The memory://
cases run the command in this process (a memory:// group lives in one process); the
real-process case runs on each backend with groups."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator

import pytest

import conch
from conch.cli import main
from tests.cli_runs import assert_one_line_error, run


@pytest.fixture
def agents(memory_url: str) -> Iterator[conch.Coordinator]:
    """Two members of group "agents" on ``memory_url``; the one returned has capabilities."""
    with conch.connect(memory_url, member_id="agent-1") as first, \
            conch.connect(memory_url, member_id="agent-2") as second:
        first.group("agents").join({"weight": 2})
        second.group("agents").join()
        yield first


def test_members_prints_a_table_of_the_live_members(
    agents: conch.Coordinator, memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["members", "--url", memory_url, "agents"]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["MEMBER", "HOST", "PID", "JOINED", "CAPABILITIES"]
    assert first.split()[:3] == ["agent-1", agents.group("agents").member_info()[
        "agent-1"].host, str(os.getpid())]
    assert first.endswith('{"weight": 2}')
    assert second.split()[0] == "agent-2" and second.endswith("null")


def test_members_json_gives_every_field(
    agents: conch.Coordinator, memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["members", "--url", memory_url, "--json", "agents"]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert set(first) == {"member_id", "capabilities", "host", "pid", "joined_at", "updated_at"}
    assert (first["member_id"], first["capabilities"], first["pid"]) == (
        "agent-1", {"weight": 2}, os.getpid())
    assert second["member_id"] == "agent-2"


def test_a_missing_group_is_a_one_line_error(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["members", "--url", memory_url, "nobody-here"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "conch: error: group 'nobody-here' does not exist\n"


def test_an_empty_group_says_so(memory_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with conch.connect(memory_url) as coordinator:
        coordinator.group("idle").create()
        assert main(["members", "--url", memory_url, "idle"]) == 0
        assert main(["members", "--url", memory_url, "--json", "idle"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "[]\n"
    assert captured.err == "conch: group 'idle' has no live members\n"


def test_a_bad_group_name_is_a_usage_error(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["members", "--url", memory_url, "x" * 300]) == 2
    assert "at most 256 bytes" in capsys.readouterr().err


@pytest.fixture
def group_url(request: pytest.FixtureRequest, backend_name: str) -> str:
    url = str(request.getfixturevalue(f"{backend_name}_url"))
    if not conch.Coordinator(url).capabilities.groups:
        pytest.skip(f"the {backend_name} backend does not declare groups")
    return url


@pytest.mark.parametrize("backend_name", ["file", "redis", "etcd", "zookeeper", "postgresql",
                                          "mysql", "memcached"])
def test_members_of_a_server_group_from_another_process(group_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONCH_URL"}
    name = f"agents-{uuid.uuid4().hex}"
    with conch.connect(group_url, member_id="agent-1") as member:
        member.group(name).join({"zone": "b"})
        [listed] = json.loads(run(env, "members", "--url", group_url, "--json", name).stdout)
        assert (listed["member_id"], listed["capabilities"], listed["pid"]) == (
            "agent-1", {"zone": "b"}, os.getpid())
        member.group(name).leave()
        member.group(name).delete()
    result = run(env, "members", "--url", group_url, name)
    assert result.returncode == 1
    assert_one_line_error(result)


def test_a_backend_without_groups_is_a_one_line_error(
    memory_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = conch.Coordinator(memory_url)._backend_class
    monkeypatch.setattr(backend, "capabilities",
                        dataclasses.replace(backend.capabilities, groups=False))
    assert main(["members", "--url", memory_url, "agents"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "conch: error: the memory backend does not provide groups\n"
