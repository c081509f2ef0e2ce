"""Capabilities are declared, checked when a coordinator is made, and honest."""

from __future__ import annotations

import dataclasses

import pytest

import conch


def test_capabilities_are_declared_as_booleans(coordinator: conch.Coordinator) -> None:
    capabilities = coordinator.capabilities
    assert isinstance(capabilities, conch.Capabilities)
    for field in dataclasses.fields(capabilities):
        assert isinstance(getattr(capabilities, field.name), bool), field.name


def test_capabilities_are_known_before_start(url: str, coordinator: conch.Coordinator) -> None:
    assert conch.Coordinator(url).capabilities == coordinator.capabilities


@pytest.mark.parametrize("capability", sorted(conch.Capabilities.names()))
def test_requiring_a_capability_fails_at_construction_exactly_when_it_is_absent(
    url: str, capability: str
) -> None:
    declared = getattr(conch.Coordinator(url).capabilities, capability)
    if declared:
        with conch.connect(url, require={capability}) as coordinator:
            assert coordinator.is_started
    else:
        with pytest.raises(conch.NotSupported, match=capability):
            conch.Coordinator(url, require={capability})
        with pytest.raises(conch.NotSupported, match=capability):
            conch.connect(url, require=[capability])


def test_requiring_every_missing_capability_names_them_all(url: str) -> None:
    declared = conch.Coordinator(url).capabilities
    missing = sorted(name for name in conch.Capabilities.names() if not getattr(declared, name))
    if not missing:
        pytest.skip("the backend declares every capability")
    with pytest.raises(conch.NotSupported) as raised:
        conch.Coordinator(url, require=conch.Capabilities.names())
    for name in missing:
        assert name in str(raised.value)


def test_unknown_capability_raises_value_error_listing_the_known_ones(url: str) -> None:
    with pytest.raises(ValueError, match="telepathy") as raised:
        conch.Coordinator(url, require={"telepathy"})
    assert "fencing" in str(raised.value)
