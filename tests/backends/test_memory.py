"""``memory://``: one store per URL, shared by the coordinators of this process."""

from __future__ import annotations

import uuid

import pytest

import conch


def _store_url() -> str:
    return f"memory://store-{uuid.uuid4().hex}"


def test_coordinators_with_the_same_url_share_their_locks() -> None:
    url = _store_url()
    with conch.connect(url) as first, conch.connect(url) as second, first.lock("vnf-42"):
        assert second.lock("vnf-42").acquire(blocking=False) is False


@pytest.mark.parametrize("other", ["memory://store-b", "memory://store-a/other-path"])
def test_stores_of_different_urls_are_independent(other: str) -> None:
    with conch.connect("memory://store-a") as first, conch.connect(other) as second, \
            first.lock("vnf-42"):
        independent = second.lock("vnf-42")
        assert independent.acquire(blocking=False) is True
        independent.release()


def test_a_url_without_a_store_name_is_one_default_store() -> None:
    with conch.connect("memory://") as first, conch.connect("memory://") as second, \
            first.lock(f"vnf-{uuid.uuid4().hex}") as held:
        assert second.lock(held.name).acquire(blocking=False) is False


def test_memory_takes_no_options() -> None:
    with pytest.raises(conch.InvalidURL, match=r"unknown option ttl .*\(accepted: none\)"):
        conch.connect("memory://store?ttl=5")


def test_memory_declares_locks_of_this_process_only() -> None:
    capabilities = conch.Coordinator("memory://").capabilities
    assert not capabilities.distributed
    with pytest.raises(conch.NotSupported, match="distributed"):
        conch.connect("memory://", require={"distributed"})

