"""What a ``CELERY_WS_REDIS_URL`` names: one Redis, a Redis Cluster, or a
master found through Sentinel.

redis-py reads only single-server URLs, so the two multi-host forms are parsed
here, into the host list and one single-server URL whose credentials, TLS and
query options redis-py then reads as usual::

    redis://[user:password@]host:port[/db]              one server (also rediss://, unix://)
    redis+cluster://[user:password@]h1:p1,h2:p2[/]      a cluster; any reachable node will do
    redis+sentinel://[user:password@]s1:p1,s2:p2/service[/db]
                                                        the master Sentinel names for service

``rediss+cluster://`` and ``rediss+sentinel://`` speak TLS. With Sentinel the
credentials are the Redis servers'; sentinels that want a password of their
own get it as ``?sentinel_password=...``. Errors name the part that is wrong
and never show the password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from .exceptions import SettingsError

__all__ = ["SCHEMES", "RedisTarget", "parse_redis_url", "redact_url"]

Kind = Literal["standalone", "cluster", "sentinel"]

SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT: dict[Kind, int] = {"standalone": 6379, "cluster": 6379, "sentinel": 26379}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL.

    Attributes:
        kind: ``standalone``, ``cluster`` or ``sentinel``.
        server_url: a single-server ``redis://``/``rediss://``/``unix://`` URL
            with the credentials, database and query options, for redis-py's
            ``from_url`` parsing: the URL itself for one server, the first host
            for a cluster, a placeholder host for Sentinel (the master's address
            comes from the sentinels).
        hosts: the cluster's startup nodes or the sentinels, as ``(host, port)``.
        service: the Sentinel service name.
        sentinel_password: the sentinels' own password, if any.
    """

    kind: Kind
    server_url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_password: str | None = None

    @property
    def tls(self) -> bool:
        return urlsplit(self.server_url).scheme == "rediss"

    def describe(self) -> str:
        """Where this URL leads, without its password: ``127.0.0.1:6379 db 0``,
        ``cluster 10.0.0.1:7000,10.0.0.2:7001``, ``sentinel service mymaster
        via s1:26379,s2:26379 db 0``, plus ``(TLS, password [redacted])``."""
        parts = urlsplit(self.server_url)
        query = dict(parse_qsl(parts.query))
        db = parts.path.strip("/") or query.get("db", "0")
        hosts = ",".join(_join(host, port) for host, port in self.hosts)
        if self.kind == "cluster":
            where = f"cluster {hosts}"
        elif self.kind == "sentinel":
            where = f"sentinel service {self.service} via {hosts} db {db}"
        elif parts.scheme == "unix":
            where = f"socket {parts.path} db {query.get('db', '0')}"
        else:
            where = f"{_join(parts.hostname or '127.0.0.1', parts.port or 6379)} db {db}"
        secured = [word for word, on in (("TLS", self.tls), ("password [redacted]", parts.password)) if on]
        return where + (f" ({', '.join(secured)})" if secured else "")


def redact_url(url: str) -> str:
    """``url`` with the password between ``:`` and ``@`` replaced by ``[redacted]``."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:[redacted]@{hosts}{slash}{tail}"


def parse_redis_url(url: str) -> RedisTarget:
    """Read a celery-ws Redis URL (forms in the module docstring).

    Raises:
        SettingsError: naming the part that is wrong (scheme, a host, the
            service name, the database), with the password redacted.
    """
    scheme, sep, rest = url.partition("://")
    kind, tls = SCHEMES.get(scheme.lower(), (None, False)) if sep else (None, False)
    if kind is None:
        raise _error(
            url, f"unknown scheme {scheme + sep!r}; use one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    if kind == "standalone":
        _check_standalone(url)
        return RedisTarget("standalone", url)
    authority, _, path = rest.partition("/")
    authority, _, query = authority.partition("?")
    path, _, path_query = path.partition("?")
    userinfo, at, netloc = authority.rpartition("@")
    query = query or path_query
    hosts = tuple(_host(url, item, _DEFAULT_PORT[kind]) for item in netloc.split(","))
    credentials = userinfo + at
    single = "rediss" if tls else "redis"
    options = dict(parse_qsl(query, keep_blank_values=True))
    if kind == "cluster":
        if path.strip("/") not in ("", "0"):
            raise _error(url, f"a cluster has only database 0; the path must be empty or '/' (got '/{path}')")
        server = f"{single}://{credentials}{_join(*hosts[0])}/0"
        return RedisTarget("cluster", _with_query(server, options), hosts)
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise _error(url, "the Sentinel service name is missing: redis+sentinel://host:port/<service>[/<db>]")
    if db and not db.isdigit():
        raise _error(url, f"the database after the service name must be a number (got {db!r})")
    sentinel_password = options.pop("sentinel_password", None)
    server = f"{single}://{credentials}sentinel-master/{db or 0}"
    return RedisTarget("sentinel", _with_query(server, options), hosts, service, sentinel_password)


def _check_standalone(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "unix" and "," in parts.netloc:
        raise _error(url, "several hosts need redis+cluster:// or redis+sentinel://")
    try:
        port = parts.port
    except ValueError:
        raise _error(url, "the port is not a number from 1 to 65535") from None
    if port == 0:
        raise _error(url, "the port is not a number from 1 to 65535")
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise _error(url, f"the database must be a number (got {db!r})")


def _host(url: str, item: str, default_port: int) -> tuple[str, int]:
    if not item:
        raise _error(url, "a host is missing in the host list (host1:port1,host2:port2)")
    parts = urlsplit("//" + item)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or port == 0 or parts.path:
        raise _error(url, f"host {item!r} is not host:port with a port from 1 to 65535")
    return parts.hostname, port or default_port


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _with_query(url: str, options: dict[str, str]) -> str:
    return f"{url}?{urlencode(options)}" if options else url


def _error(url: str, problem: str) -> SettingsError:
    return SettingsError(f"invalid Redis URL {redact_url(url)}: {problem}")
