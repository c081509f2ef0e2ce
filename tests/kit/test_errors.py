"""Client exceptions become one conch error, secrets removed and the client's traceback
(whose frames may hold the password) not chained."""

from __future__ import annotations

import pytest

from conch.backends.kit.errors import translated
from conch.errors import BackendUnavailable, NotStarted
from conch.url import parse_url

URL = parse_url("redis://app:s3cret-pw@127.0.0.1:6379/0?ssl_password=keypass")


def test_a_client_error_becomes_backend_unavailable_without_secrets() -> None:
    describe = lambda exc: f"redis at {URL}: {exc}"  # noqa: E731
    with pytest.raises(BackendUnavailable) as raised, translated(URL, (OSError,), describe):
        raise OSError("AUTH s3cret-pw refused; key keypass unreadable")
    text = str(raised.value)
    assert "s3cret-pw" not in text and "keypass" not in text
    assert "refused" in text and "***" in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_conch_errors_and_other_exceptions_pass_through() -> None:
    with pytest.raises(NotStarted), translated(URL, (Exception,), str):
        raise NotStarted("stopped")
    with pytest.raises(KeyError), translated(URL, (OSError,), str):
        raise KeyError("not a client error")
