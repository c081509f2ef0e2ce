"""tooz URLs as conch URLs: translated, accepted, ignored or rejected, never leaking secrets."""

from __future__ import annotations

import re

import pytest

import conch
from conch.compat.tooz.urls import to_conch_url
from conch.url import parse_url


@pytest.mark.parametrize(("tooz_url", "conch_url"), [
    # file: the driver's timeout= is its group-membership liveness: ignored
    ("file:///var/lib/tacker?timeout=10", "file:///var/lib/tacker"),
    # redis: lease, db, TLS, sentinel fallbacks, connect timeout
    ("redis://:secret@db1:6379?db=2&lock_timeout=5&socket_connect_timeout=1",
     "redis://:secret@db1:6379/2?ttl=5&connect_timeout=1"),
    ("redis://db1:6379?timeout=30&membership_timeout=60&encoding=utf8",
     "redis://db1:6379?ttl=30"),
    ("redis://db1?ssl=true&ssl_ca_certs=/ca.pem", "rediss://db1?ssl_ca_certs=%2Fca.pem"),
    ("redis://db1?ssl=false&socket_timeout=3", "redis://db1?socket_timeout=3"),
    ("redis://s1:26379?sentinel=main&sentinel_fallback=s2:26379&sentinel_fallback=s3:26379",
     "redis://s1:26379?sentinel=main&sentinel_fallback=s2%3A26379%2Cs3%3A26379"),
    # redis Sentinel with ACL users and TLS on the sentinels: conch takes tooz's names
    ("redis://u:pw@s1:26379?sentinel=main&sentinel_username=w&sentinel_password=wp"
     "&sentinel_ssl=true&ssl=true&ssl_ca_certs=/ca.pem",
     "rediss://u:pw@s1:26379?sentinel=main&sentinel_username=w&sentinel_password=wp"
     "&sentinel_ssl=true&ssl_ca_certs=%2Fca.pem"),
    # etcd3gw: the gateway over HTTP; lock_timeout wins over timeout
    ("etcd3+http://etcd1:2379?timeout=30&lock_timeout=8&api_version=v3",
     "etcd://etcd1:2379?ttl=8"),
    # etcd3gw over TLS: its certificate options become conch's ssl_*
    ("etcd3+https://etcd1:2379?ca_cert=/ca.pem&cert_cert=/c.pem&cert_key=/k.pem&timeout=10",
     "etcd+https://etcd1:2379?ttl=10&ssl_ca=%2Fca.pem&ssl_cert=%2Fc.pem&ssl_key=%2Fk.pem"),
    # zookeeper / kazoo: extra hosts, namespace → chroot, session timeout as is
    ("kazoo://zk1:2181?hosts=zk2:2181&hosts=zk3:2181&namespace=cinder&timeout=5",
     "zookeeper://zk1:2181,zk2:2181,zk3:2181/cinder?timeout=5"),
    ("zookeeper://u:p@zk1?use_ssl=false&randomize_hosts=true&verify_certs=false",
     "zookeeper://u:p@zk1"),
    # kazoo's TLS options as they are, booleans as conch spells them
    ("kazoo://zk1:2281?use_ssl=Yes&ca=/ca.pem&certfile=/c.pem&keyfile=/k.pem"
     "&keyfile_password=pw&verify_certs=t",
     "zookeeper://zk1:2281?ca=%2Fca.pem&certfile=%2Fc.pem&keyfile=%2Fk.pem"
     "&keyfile_password=pw&use_ssl=true&verify_certs=true"),
    ("zookeeper://", "zookeeper://localhost:2181"),
    # SQL: credentials and database kept; PostgreSQL's host/port/dbname options win
    ("mysql://tacker:pw@db:3306/tacker?unix_socket=/run/mysqld.sock",
     "mysql://tacker:pw@db:3306/tacker?unix_socket=%2Frun%2Fmysqld.sock"),
    # mysql TLS: tooz's names are conch's; PyMySQL's spellings of the verify mode
    ("mysql://u:pw@db/x?ssl_ca=/ca.pem&ssl_capath=/cas&ssl_cert=/c.pem&ssl_key=/c.key"
     "&ssl_cipher=ECDHE&ssl_check_hostname=false&ssl_verify_mode=1",
     "mysql://u:pw@db/x?ssl_ca=%2Fca.pem&ssl_capath=%2Fcas&ssl_cert=%2Fc.pem&ssl_key=%2Fc.key"
     "&ssl_cipher=ECDHE&ssl_check_hostname=false&ssl_verify_mode=required"),
    # ... and without a CA tooz checks no server certificate: neither does the translation
    ("mysql://u:pw@db/x?ssl_cert=/c.pem&ssl_key=/c.key&ssl_ca=",
     "mysql://u:pw@db/x?ssl_cert=%2Fc.pem&ssl_key=%2Fc.key&ssl_verify_mode=none"),
    ("postgresql://u:pw@db/cinder?host=/run/postgresql&port=5433",
     "postgresql://u:pw@%2Frun%2Fpostgresql:5433/cinder"),
    ("postgresql://u@db:5432/a?dbname=b", "postgresql://u@db:5432/b"),
    # memcached: tooz's timeout is the lock lease
    ("memcached://mc:11211?timeout=30&leader_timeout=5&use_ssl=no", "memcached://mc:11211?ttl=30"),
    # memcached TLS: use_ssl turns it on (its options are ignored without it); tooz does not
    # check the host name unless told
    ("memcached://mc?use_ssl=true&ca_cert=/ca.pem&ssl_cert=/c.pem&ssl_key=/c.key"
     "&ssl_key_password=kp&ssl_ciphers=ECDHE",
     "memcached://mc?ssl_cert=%2Fc.pem&ssl_key=%2Fc.key&ssl_key_password=kp&ssl_ca=%2Fca.pem"
     "&ssl_cipher=ECDHE&ssl=true&ssl_check_hostname=false"),
    ("memcached://mc?use_ssl=yes&ssl_check_hostname=true",
     "memcached://mc?ssl_check_hostname=true&ssl=true"),
    ("memcached://mc?use_ssl=false&ca_cert=/ca.pem&ssl_cert=/c.pem", "memcached://mc"),
    # conch URLs pass through
    ("etcd://root:pw@e1:2379,e2:2379/locks?ttl=3", "etcd://root:pw@e1:2379,e2:2379/locks?ttl=3"),
    ("memory://tests", "memory://tests"),
    ("redis://db1/0?ttl=3&wait_replicas=1", "redis://db1/0?ttl=3&wait_replicas=1"),
])
def test_tooz_urls_become_conch_urls(tooz_url: str, conch_url: str) -> None:
    translated = to_conch_url(tooz_url)
    assert translated == conch_url
    parse_url(translated)  # and conch can read it


def test_keyword_options_override_the_query_as_in_tooz() -> None:
    assert to_conch_url("redis://db1?lock_timeout=5", {"lock_timeout": 9}) == "redis://db1?ttl=9"
    assert to_conch_url("kazoo://zk1", {"hosts": ["zk2", "zk3"]}) == "zookeeper://zk1,zk2,zk3"


@pytest.mark.parametrize(("tooz_url", "message"), [
    # etcd3gw ignores its certificates over plain HTTP: conch says so
    ("etcd3+http://etcd1?ca_cert=/ca.pem", "TLS options (ssl_ca) need an etcd+https:// URL"),
    # tooz's zookeeper driver ignores them without use_ssl: conch says so
    ("kazoo://zk1?ca=/ca.pem&use_ssl=false", "TLS options (ca) need use_ssl=true"),
])
def test_tls_options_without_tls_are_refused_by_conch(tooz_url: str, message: str) -> None:
    with pytest.raises(conch.InvalidURL, match=re.escape(message)):
        conch.Coordinator(to_conch_url(tooz_url))


@pytest.mark.parametrize(("tooz_url", "message"), [
    ("redis://db1?namespace=cinder", "namespace= option of redis:// URLs is not supported"),
    ("redis://db1?retry_on_timeout=true", "retry_on_timeout="),
    ("redis://db1?encoding=latin-1", "encoding= option of redis:// URLs can only be utf8"),
    ("redis:///run/redis.sock", "Unix socket"),
    ("redis://db1/1?db=2", "disagree"),
    ("redis://db1?lock_timeout=3&ttl=4", "either tooz's lock_timeout / timeout or conch's ttl"),
    ("etcd3+http://etcd1?api_version=v3alpha", "can only be v3"),
    ("kazoo://zk1?use_ssl=maybe", "use_ssl= option of zookeeper:// URLs must be true or false"),
    ("kazoo://zk1?handler=eventlet", "threading handler"),
    ("kazoo://zk1/chroot?namespace=x", "either a path or tooz's namespace="),
    ("memcached://mc?max_pool_size=4", "max_pool_size="),
    ("ipc://", "no conch backend"),
    ("kubernetes://", "no conch backend"),
    ("consul://host", "unknown backend scheme 'consul'; tooz schemes: etcd3+http"),
])
def test_what_conch_cannot_honour_is_rejected_by_name(tooz_url: str, message: str) -> None:
    with pytest.raises(conch.InvalidURL, match=re.escape(message)):
        to_conch_url(tooz_url)


@pytest.mark.parametrize("tooz_url", [
    "redis://:hunter2@db1?namespace=x",
    "mysql://u:hunter2@db/x?ssl_verify_mode=sometimes",
    "redis://u:hunter2@db1?sentinel_ssl=true",
    "consul://u:hunter2@host",
    "redis://u:hunter2@db1:99999999",
    "kazoo://zk1?use_ssl=true&keyfile_password=hunter2",
])
def test_messages_never_show_the_password(tooz_url: str) -> None:
    with pytest.raises(conch.InvalidURL) as failure:
        conch.Coordinator(to_conch_url(tooz_url))
    assert "hunter2" not in str(failure.value)


def test_a_url_must_be_a_string() -> None:
    with pytest.raises(conch.InvalidURL, match="must be a str"):
        to_conch_url(b"redis://db1")  # type: ignore[arg-type]
