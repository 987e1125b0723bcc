"""Redis URLs: the cluster and Sentinel forms read into hosts and one
single-server URL; malformed ones refused with the part named, never the password."""

from __future__ import annotations

import pytest

from celery_ws.exceptions import SettingsError
from celery_ws.redis_urls import parse_redis_url, redact_url
from celery_ws.settings import Settings


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/2", "unix:///tmp/r.sock?db=1"]
)
def test_single_server_urls_stay_as_they_are(url: str) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.server_url, target.hosts) == ("standalone", url, ())


def test_cluster_url_lists_its_nodes_and_keeps_credentials() -> None:
    target = parse_redis_url("redis+cluster://alice:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/")
    assert target.kind == "cluster"
    assert target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert target.server_url == "redis://alice:s3cret@10.0.0.1:7000/0"
    assert not target.tls
    assert target.describe() == "cluster 10.0.0.1:7000,10.0.0.2:7001,[::1]:7002 (password [redacted])"


def test_tls_cluster_without_a_path_and_with_query_options() -> None:
    target = parse_redis_url("rediss+cluster://h1:7000,h2?ssl_cert_reqs=none")
    assert target.hosts == (("h1", 7000), ("h2", 6379))
    assert target.tls
    assert target.server_url == "rediss://h1:7000/0?ssl_cert_reqs=none"


def test_sentinel_url_names_the_service_and_database() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1:26379,s2/mymaster/3?sentinel_password=spw")
    assert target.kind == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379))
    assert target.service == "mymaster"
    assert target.sentinel_password == "spw"
    assert target.server_url == "redis://:pw@sentinel-master/3"
    assert target.describe() == "sentinel service mymaster via s1:26379,s2:26379 db 3 (password [redacted])"
    assert parse_redis_url("rediss+sentinel://s1:26379/mymaster").server_url == "rediss://sentinel-master/0"


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("http://:hunter2@h:1/0", "unknown scheme 'http://'"),
        ("redis+cluster://:hunter2@", "a host is missing"),
        ("redis+cluster://:hunter2@h1:7000,,h2:7001/", "a host is missing"),
        ("redis+cluster://:hunter2@h1:70x0/", "host 'h1:70x0' is not host:port"),
        ("redis+cluster://:hunter2@h1:0/", "host 'h1:0' is not host:port"),
        ("redis+cluster://:hunter2@h1:7000/2", "a cluster has only database 0"),
        ("redis+sentinel://:hunter2@s1:26379", "the Sentinel service name is missing"),
        ("redis+sentinel://:hunter2@s1:26379/", "the Sentinel service name is missing"),
        ("redis+sentinel://:hunter2@s1:26379/mymaster/zero", "the database after the service name"),
        ("redis://:hunter2@h:port/0", "the port is not a number"),
        ("redis://:hunter2@h1:6379,h2:6379/0", "several hosts need redis+cluster://"),
        ("redis://:hunter2@h:6379/x", "the database must be a number"),
    ],
)
def test_malformed_urls_name_the_part_and_hide_the_password(url: str, names: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_redis_url(url)
    assert names in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert "[redacted]" in str(raised.value)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis+sentinel://u:p@ss@s1:1,s2:2/m") == "redis+sentinel://u:[redacted]@s1:1,s2:2/m"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_settings_take_cluster_and_sentinel_urls_and_refuse_bad_ones_by_name() -> None:
    for url in ("redis+cluster://h1:7000,h2:7001/", "rediss+sentinel://s1:26379/mymaster/0"):
        assert Settings.load(redis_url=url, secret="s" * 32).redis_url == url
    with pytest.raises(SettingsError) as raised:
        Settings.load(redis_url="redis+sentinel://:hunter2@s1:26379/")
    assert "CELERY_WS_REDIS_URL" in str(raised.value)
    assert "service name is missing" in str(raised.value)
    assert "hunter2" not in str(raised.value)
