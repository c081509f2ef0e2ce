"""Backend URLs: what is accepted, what is refused with which message, and no leaked secret."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

import conch
from conch import url as conch_url
from conch.backends.loader import CLIENT_LIBRARIES
from conch.url import parse_url

SECRET = "s3cret"


@pytest.mark.parametrize("url", ["redis", "", "://host", "1redis://host", "redis:/host",
                                 "file:relative/dir", "redis//host"])
def test_url_without_a_scheme_is_refused_listing_the_known_schemes(url: str) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        parse_url(url)
    message = str(raised.value)
    assert "not a backend URL (expected scheme://...)" in message
    assert "known schemes: " in message and "redis" in message and "file" in message


def test_unknown_scheme_is_refused_naming_it_without_its_secrets() -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        conch.connect(f"foo://admin:{SECRET}@host/x?token={SECRET}2")
    message = str(raised.value)
    assert "unknown backend scheme 'foo'" in message
    assert "known schemes: " in message and "memory" in message
    assert SECRET not in message


@pytest.mark.parametrize(("url", "complaint"), [
    (f"redis://u:{SECRET}@host:99999", "port 99999 out of range"),
    (f"redis://u:{SECRET}@host:0", "port 0 out of range"),
    (f"redis://u:p@{SECRET}@host:0", "port 0 out of range"),
    (f"redis://u:{SECRET}@host:", "empty port"),
    (f"redis://u:{SECRET}@host:abc", "malformed host 'host:abc'"),
    (f"redis://u:{SECRET}@[::1", "malformed"),
    (f"redis://u:{SECRET}@host?db", "malformed query string"),
    (f"redis://host?password={SECRET}&db", "malformed query string"),
    (f"redis://host?db=1&&api_key={SECRET}", "malformed query string"),
], ids=["port-too-big", "port-zero", "at-sign-in-password", "empty-port", "port-not-a-number",
        "unclosed-ipv6", "query-field-without-value", "query-with-a-password", "query-empty-field"])
def test_malformed_url_is_refused_saying_what_is_wrong_without_its_secrets(
    url: str, complaint: str
) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        parse_url(url)
    assert complaint in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("url", [b"memory://", None, 42])
def test_url_that_is_not_a_str_is_refused(url: object) -> None:
    with pytest.raises(conch.InvalidURL, match="must be a str"):
        parse_url(url)  # type: ignore[arg-type]


def test_invalid_url_is_a_value_error_and_a_conch_error() -> None:
    assert issubclass(conch.InvalidURL, ValueError)
    assert issubclass(conch.InvalidURL, conch.ConchError)


def test_url_parts_are_parsed_and_unquoted() -> None:
    parsed = parse_url("REDIS://admin:p%40ss@h1:6379,[::1]:6380,h3/0?db=1&name=a+b")
    assert parsed.scheme == "redis"
    assert parsed.hosts == (("h1", 6379), ("::1", 6380), ("h3", None))
    assert parsed.path == "/0"
    assert parsed.username == "admin" and parsed.password == "p@ss"
    assert parsed.query == {"db": "1", "name": "a b"}


def test_redacted_hides_the_password_and_secret_looking_options_only() -> None:
    parsed = parse_url(
        f"redis://admin:{SECRET}@host:6379/0?password={SECRET}1&api_key={SECRET}2&db=1"
    )
    assert set(parsed.secrets) == {SECRET, f"{SECRET}1", f"{SECRET}2"}
    for shown in (parsed.redacted(), str(parsed), repr(parsed)):
        assert SECRET not in shown
    assert parsed.redacted().startswith("redis://admin:***@host:6379/0?")
    assert "db=1" in parsed.redacted()


@pytest.mark.parametrize("key_file", ["keyfile", "ssl_key", "ssl_keyfile", "cert_key"])
@pytest.mark.parametrize("password", ["keyfile_password", "ssl_key_password", "ssl_password",
                                      "sentinel_password"])
def test_a_key_file_is_a_path_shown_but_every_tls_password_is_a_secret(
    key_file: str, password: str
) -> None:
    parsed = parse_url(f"redis://h/0?{key_file}=/etc/k.pem&{password}={SECRET}")
    assert parsed.secrets == (SECRET,)
    assert f"{key_file}=%2Fetc%2Fk.pem" in parsed.redacted()
    assert f"{password}=%2A%2A%2A" in parsed.redacted()
    assert SECRET not in repr(parsed)


@pytest.mark.parametrize(("raw", "value"), [
    ("true", True), ("Yes", True), ("1", True), ("on", True), ("t", True), ("y", True),
    ("false", False), ("NO", False), ("0", False), ("off", False), ("f", False), ("n", False),
])
def test_a_boolean_option_takes_the_usual_spellings(raw: str, value: bool) -> None:
    assert parse_url(f"zookeeper://zk1?use_ssl={raw}").bool_option("use_ssl", not value) is value
    assert parse_url("zookeeper://zk1").bool_option("use_ssl", value) is value


def test_a_boolean_option_with_another_value_is_an_invalid_url() -> None:
    with pytest.raises(conch.InvalidURL, match="option use_ssl must be true or false"):
        parse_url("zookeeper://zk1?use_ssl=maybe").bool_option("use_ssl", False)


def test_a_url_without_a_password_is_shown_unchanged() -> None:
    assert parse_url("redis://admin@host:6379/0?db=1").redacted() \
        == "redis://admin@host:6379/0?db=1"


def test_coordinator_repr_and_url_never_show_the_password() -> None:
    unstarted = conch.Coordinator(f"memory://admin:{SECRET}@store")
    for shown in (repr(unstarted), str(unstarted), unstarted.url):
        assert SECRET not in shown
    with pytest.raises(conch.InvalidURL) as refused:  # options are checked at construction
        conch.Coordinator(f"memory://admin:{SECRET}@store?token={SECRET}")
    assert SECRET not in str(refused.value)
    with conch.connect(f"memory://admin:{SECRET}@store") as started:
        assert SECRET not in repr(started) and SECRET not in started.url


@pytest.mark.parametrize(("url", "accepted"), [
    ("memory://store?bogus=1", "none"),
    ("file:///tmp/conch-test-never-created?bogus=1&other=2", "sweep_after"),
])
def test_unknown_query_option_is_refused_naming_the_accepted_ones(url: str, accepted: str) -> None:
    with pytest.raises(conch.InvalidURL) as raised:
        conch.connect(url)
    assert "unknown option bogus" in str(raised.value)
    assert f"(accepted: {accepted})" in str(raised.value)


def test_unknown_option_message_hides_secret_looking_values() -> None:
    parsed = parse_url(f"memory://store?password={SECRET}")
    with pytest.raises(conch.InvalidURL) as raised:
        parsed.options({"alpha", "beta"})
    assert "unknown option password" in str(raised.value)
    assert "(accepted: alpha, beta)" in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("raw", ["-1", "0", "abc", "inf", "nan", ""])
def test_number_option_must_be_a_positive_number(raw: str) -> None:
    with pytest.raises(conch.InvalidURL, match="option timeout must be a positive number"):
        parse_url(f"memory://store?timeout={raw}").float_option("timeout", 1.0)


def test_number_option_has_its_default_when_absent() -> None:
    parsed = parse_url("memory://store?timeout=2.5")
    assert parsed.float_option("timeout", 1.0) == 2.5
    assert parsed.float_option("interval", 1.0) == 1.0


@pytest.mark.parametrize(("url", "complaint"), [
    ("file://relative/dir", "take no host"),
    ("file://lockhost/var/lock", "take no host"),
    ("file:///", "need an absolute directory"),
])
def test_file_url_with_a_host_or_without_a_directory_is_refused(url: str, complaint: str) -> None:
    with pytest.raises(conch.InvalidURL, match=complaint):
        conch.connect(url)


def test_file_url_may_name_localhost(tmp_path: pathlib.Path) -> None:
    with conch.connect(f"file://localhost{tmp_path}/locks") as coordinator, \
            coordinator.lock("x") as lock:
        assert lock.held


def test_a_missing_client_library_names_the_extra_that_installs_it() -> None:
    # A fresh process in which no backend's client library can be imported.
    libraries = sorted({library for library, _ in CLIENT_LIBRARIES.values()})
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules.update(dict.fromkeys({libraries!r}))  # None: "import" raises
        import conch
        said = {{}}
        for scheme in {sorted(CLIENT_LIBRARIES)!r}:
            try:
                conch.Coordinator(scheme + "://u:{SECRET}@host/x")
            except conch.InvalidURL as exc:
                said[scheme] = str(exc)
        print(json.dumps(said))
    """)
    said = json.loads(subprocess.run([sys.executable, "-c", script], check=True, text=True,
                                     capture_output=True).stdout)
    extras = importlib.metadata.metadata("conch").get_all("Provides-Extra") or []
    assert sorted(said) == sorted(CLIENT_LIBRARIES)
    for scheme, (library, extra) in CLIENT_LIBRARIES.items():
        assert library in said[scheme] and SECRET not in said[scheme]
        assert extra in extras, f"{scheme}:// names conch[{extra}], which does not exist"
        assert said[scheme].endswith(f"install conch[{extra}]")


@pytest.mark.parametrize(("scheme", "imports", "error"), [
    ("redis", "import nosuch_dependency", ModuleNotFoundError),  # not redis-py itself
    ("redis", "from select import nosuch_name", ImportError),  # as under eventlet: no poll
    ("nosuch", "import nosuch_client_library", ModuleNotFoundError),  # library unknown
])
def test_an_import_error_that_is_not_a_missing_client_library_is_raised_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, scheme: str, imports: str,
    error: type[ImportError],
) -> None:
    (tmp_path / "failing_backend.py").write_text(imports + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(conch_url._BACKENDS, scheme, "failing_backend:FailingBackend")
    with pytest.raises(error, match=imports.split()[-1]) as raised:
        conch.Coordinator(f"{scheme}://u:{SECRET}@host")
    assert type(raised.value) is error


def test_an_import_error_inside_conch_is_not_blamed_on_a_client_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(conch_url._BACKENDS, "broken", "conch.backends.nosuch:NoSuchBackend")
    with pytest.raises(ModuleNotFoundError, match=r"conch\.backends\.nosuch"):
        conch.Coordinator("broken://host")
