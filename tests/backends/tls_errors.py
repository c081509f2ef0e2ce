"""Checks shared by the TLS tests of the etcd and ZooKeeper backends."""

from __future__ import annotations

import time
import traceback

import pytest

import conch
from conch.url import parse_url


def start_fails(url: str, within: float) -> conch.BackendUnavailable:
    """The error ``conch.connect(url)`` raises, checked to be one clear
    :class:`conch.BackendUnavailable` raised within ``within`` seconds: no chained
    client-library traceback, no password of the URL."""
    started = time.monotonic()
    with pytest.raises(conch.BackendUnavailable) as raised:
        conch.connect(url).stop()
    took = time.monotonic() - started
    assert took < within, f"the error took {took:.1f} s"
    error = raised.value
    shown = "".join(traceback.format_exception(error))
    assert "During handling of the above exception" not in shown, shown
    assert "direct cause of the following exception" not in shown, shown
    secrets = parse_url(url).secrets
    assert not any(secret in shown for secret in secrets), shown
    print(f"\n{type(error).__name__}: {error}")
    return error
