"""Where a client library's exception becomes a conch error: the text says what failed
and where, and never holds a secret of the URL (password, secret options)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from conch.errors import BackendUnavailable, ConchError
from conch.url import BackendURL

Describe = Callable[[BaseException], str]
"""A backend's account of one client exception, for users (secrets are removed after)."""


def scrub(text: str, url: BackendURL) -> str:
    """``text`` with each of ``url``'s secrets replaced by ``***``."""
    for secret in url.secrets:
        text = text.replace(secret, "***")
    return text


def unavailable(url: BackendURL, text: str) -> BackendUnavailable:
    """A :class:`BackendUnavailable` saying ``text``, secrets removed."""
    return BackendUnavailable(scrub(text, url))


@contextlib.contextmanager
def translated(
    url: BackendURL, client_errors: tuple[type[BaseException], ...], describe: Describe
) -> Iterator[None]:
    """A ``client_errors`` exception leaves the block as :class:`BackendUnavailable` with
    ``describe``'s text, without its traceback (which may hold the password)."""
    try:
        yield
    except ConchError:
        raise
    except client_errors as exc:
        raise unavailable(url, describe(exc)) from None
