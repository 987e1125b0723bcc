"""Settings, read from the environment, from Celery's ``app.conf`` and from code.

Precedence, highest first: keyword arguments in code, environment variables,
``app.conf`` keys (``ws_<name>``; with Django's ``namespace="CELERY"`` that is
``CELERY_WS_<NAME>`` in settings.py), then defaults. The seed's
``WEBSOCKET_*`` variable names work; celery-ws' own use ``CELERY_WS_*``.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .exceptions import SettingsError
from .keys import CLUSTER_HOMES, Keys
from .redis_urls import parse_redis_url, redact_url

__all__ = ["DEFAULT_REDIS_URL", "Settings"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONF_PREFIX = "ws_"
ENV_PREFIX = "CELERY_WS_"
#: ``CELERY_WS_*`` variables that are not settings: read by one command
#: (``watch``'s token, ``serve``'s log format), or by test suites (a prefix)
_COMMAND_VARIABLES = frozenset({"CELERY_WS_TOKEN", "CELERY_WS_LOG_FORMAT"})
_TEST_VARIABLES = "CELERY_WS_TEST_"

logger = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()  # (name, where)


@functools.lru_cache(maxsize=64)
def _keys(prefix: str, homes: int) -> Keys:
    """One ``Keys`` per layout: publishers read it once per event."""
    return Keys(prefix, homes)


def _setting(default: Any, name: str, *env: str, **constraints: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(*env, name), **constraints)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # -- server (the seed's names) --
    host: str = _setting("127.0.0.1", "host", "WEBSOCKET_HOST", "CELERY_WS_HOST")
    port: int = _setting(8765, "port", "WEBSOCKET_PORT", "CELERY_WS_PORT", ge=0, le=65535)
    max_connections: int = _setting(
        10_000, "max_connections", "WEBSOCKET_MAX_CONNECTIONS", "CELERY_WS_MAX_CONNECTIONS", ge=1
    )
    ping_interval: float | None = _setting(
        20.0, "ping_interval", "WEBSOCKET_PING_INTERVAL", "CELERY_WS_PING_INTERVAL", gt=0
    )
    ping_timeout: float | None = _setting(
        20.0, "ping_timeout", "WEBSOCKET_PING_TIMEOUT", "CELERY_WS_PING_TIMEOUT", gt=0
    )
    callback_timeout: float = _setting(
        300.0, "callback_timeout", "WEBSOCKET_CALLBACK_TIMEOUT", "CELERY_WS_CALLBACK_TIMEOUT", gt=0
    )
    #: server processes sharing the port (SO_REUSEPORT) under one supervisor;
    #: "auto" is one per CPU this process may run on
    workers: int = _setting(1, "workers", "CELERY_WS_WORKERS", ge=1)

    # -- Redis --
    redis_url: str = _setting(DEFAULT_REDIS_URL, "redis_url", "CELERY_WS_REDIS_URL")
    key_prefix: str = _setting(
        "cws", "key_prefix", "CELERY_WS_KEY_PREFIX", pattern=r"^[A-Za-z0-9_.\-]{1,32}$"
    )
    history_max_events: int = _setting(1_000, "history_max_events", "CELERY_WS_HISTORY_MAX_EVENTS", ge=1)
    history_ttl: int = _setting(86_400, "history_ttl", "CELERY_WS_HISTORY_TTL", ge=60)

    # -- worker --
    progress_interval: float = _setting(0.1, "progress_interval", "CELERY_WS_PROGRESS_INTERVAL", ge=0)
    emit_buffer: int = _setting(10_000, "emit_buffer", "CELERY_WS_EMIT_BUFFER", ge=10)
    #: a running task's heartbeat; servers report it lost after three missed beats
    heartbeat_interval: float = _setting(10.0, "heartbeat_interval", "CELERY_WS_HEARTBEAT_INTERVAL", ge=0.05)
    #: what a task's owner is told of its exceptions: "message" (class and text)
    #: or "class" (the class name only: a text can carry SQL, paths, other users' data)
    error_detail: Literal["message", "class"] = _setting("message", "error_detail", "CELERY_WS_ERROR_DETAIL")

    # -- deferred questions --
    #: seconds a server replica holds its claim on sending a continuation; one
    #: killed between its claim and the send leaves it to another after this
    continuation_lease: float = _setting(
        10.0, "continuation_lease", "CELERY_WS_CONTINUATION_LEASE", ge=0.5, le=3600
    )

    # -- security --
    secret: SecretStr | None = _setting(None, "secret", "CELERY_WS_SECRET")
    #: older secrets still accepted while tokens signed with them expire (rotation)
    previous_secrets: Annotated[list[SecretStr], NoDecode] = _setting(
        [], "previous_secrets", "CELERY_WS_PREVIOUS_SECRETS"
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = _setting(
        "HS256", "jwt_algorithm", "CELERY_WS_JWT_ALGORITHM"
    )
    #: PEM public key (or a path to one) that verifies RS256/ES256 tokens
    jwt_public_key: str | None = _setting(None, "jwt_public_key", "CELERY_WS_JWT_PUBLIC_KEY")
    jwt_audience: str | None = _setting(None, "jwt_audience", "CELERY_WS_JWT_AUDIENCE")
    jwt_issuer: str | None = _setting(None, "jwt_issuer", "CELERY_WS_JWT_ISSUER")
    #: seconds a new connection has for its HTTP handshake, and then (token mode) for its auth frame
    auth_timeout: float = _setting(5.0, "auth_timeout", "CELERY_WS_AUTH_TIMEOUT", gt=0)
    #: seconds a closing connection has to finish the closing handshake before it is cut
    close_timeout: float = _setting(5.0, "close_timeout", "CELERY_WS_CLOSE_TIMEOUT", gt=0)
    insecure: bool = _setting(False, "insecure", "CELERY_WS_INSECURE")
    allowed_origins: Annotated[list[str], NoDecode] = _setting(
        [], "allowed_origins", "WEBSOCKET_ALLOWED_ORIGINS", "CELERY_WS_ALLOWED_ORIGINS"
    )
    #: the URL browsers use to reach this server (e.g. https://ws.example.com,
    #: the proxy's address when behind one): the origin of the server's own
    #: pages in the Origin check, and the base of every URL handed to a browser
    public_url: str | None = _setting(None, "public_url", "CELERY_WS_PUBLIC_URL")
    #: seconds a token lives: issue_token()'s, `celery-ws token`'s and the Django token view's default
    token_ttl: int = _setting(3600, "token_ttl", "CELERY_WS_TOKEN_TTL", ge=1)
    #: import path (module.attribute) of the callable that turns a web framework's
    #: user into a celery-ws user id; unset: str(user.pk) (celery_ws.contrib.django)
    user_id_function: str | None = _setting(None, "user_id_function", "CELERY_WS_USER_ID_FUNCTION")
    max_message_size: int = _setting(
        65_536, "max_message_size", "WEBSOCKET_MAX_MESSAGE_SIZE", "CELERY_WS_MAX_MESSAGE_SIZE", ge=256
    )
    max_connections_per_user: int = _setting(
        50, "max_connections_per_user", "CELERY_WS_MAX_CONNECTIONS_PER_USER", ge=1
    )
    #: sustained client messages per second, and the burst allowed above it
    rate_limit: float = _setting(20.0, "rate_limit", "CELERY_WS_RATE_LIMIT", gt=0)
    rate_burst: int = _setting(60, "rate_burst", "CELERY_WS_RATE_BURST", ge=1)
    #: unsent bytes after which a client that stopped reading is disconnected
    write_buffer_limit: int = _setting(1 << 20, "write_buffer_limit", "CELERY_WS_WRITE_BUFFER_LIMIT", ge=4096)

    # -- protocol and page --
    #: permessage-deflate, per message (no context takeover): less bandwidth,
    #: about 15 % more CPU per frame, about 1 KiB more memory per idle connection
    compression: bool = _setting(True, "compression", "WEBSOCKET_COMPRESSION", "CELERY_WS_COMPRESSION")
    #: events shorter than this many bytes go out uncompressed even when a
    #: connection negotiated compression: deflating a few hundred bytes of JSON
    #: saves a few dozen of them and costs more CPU than writing them
    compression_threshold: int = _setting(
        1024, "compression_threshold", "CELERY_WS_COMPRESSION_THRESHOLD", ge=0
    )
    serve_page: bool = _setting(True, "serve_page", "CELERY_WS_SERVE_PAGE")

    @field_validator("allowed_origins", "previous_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _cpu_count(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parse_redis_url(value)  # a SettingsError names the wrong part (scheme, a host, the service...)
        return value

    @field_validator("public_url")
    @classmethod
    def _browser_url(cls, value: str | None) -> str | None:
        if value is not None and not _is_browser_url(value):
            raise ValueError("must be an absolute http(s):// or ws(s):// URL, such as https://ws.example.com")
        return value

    @property
    def sharded_pubsub(self) -> bool:
        """Events travel on sharded pub/sub (``SPUBLISH``) on a Redis Cluster,
        where a plain ``PUBLISH`` would go to every node; elsewhere plain pub/sub
        does the same work and needs no Redis 7."""
        return self.redis_url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")

    @property
    def token_mode(self) -> bool:
        """Whether clients must authenticate: a secret or a public key is set."""
        return self.secret is not None or self.jwt_public_key is not None

    @property
    def keys(self) -> Keys:
        return _keys(self.key_prefix, CLUSTER_HOMES if self.sharded_pubsub else 1)

    @classmethod
    def load(cls, conf: Mapping[str, Any] | None = None, **overrides: Any) -> Settings:
        """Build settings from code, the environment and a Celery ``app.conf``.

        Raises:
            SettingsError: naming the variable whose value is invalid.
        """
        _warn_unknown(conf)
        from_conf = _from_conf(conf) if conf is not None else {}
        try:
            explicit = cls(**overrides)
            missing = {k: v for k, v in from_conf.items() if k not in explicit.model_fields_set}
            settings = cls(**missing, **overrides) if missing else explicit
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None
        if settings.sharded_pubsub and not settings.token_mode:
            raise SettingsError(
                "a Redis Cluster (redis+cluster://) needs token mode: set CELERY_WS_SECRET (or "
                "CELERY_WS_JWT_PUBLIC_KEY) for every worker, publisher and server. Open mode writes "
                "each event to one firehose stream too, which a cluster cannot do atomically"
            )
        return settings


def _is_browser_url(value: str) -> bool:
    """Whether a browser can open ``value``: a web or WebSocket scheme, a host,
    and a port that parses (port 0 is none a browser can reach)."""
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https", "ws", "wss") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number or out of range, an unclosed [
        return False


def _from_conf(conf: Mapping[str, Any]) -> dict[str, Any]:
    values = {
        name: conf.get(CONF_PREFIX + name)
        for name in Settings.model_fields
        if conf.get(CONF_PREFIX + name) is not None
    }
    broker = conf.get("broker_url")
    if "redis_url" not in values and isinstance(broker, str) and broker.startswith(("redis://", "rediss://")):
        values["redis_url"] = broker
    return values


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        loc = str(error["loc"][0]) if error["loc"] else ""
        shown = redact_url(value) if isinstance(value := error.get("input"), str) else value
        problems.append(f"{_variable_names(loc)}: {error['msg']} (got {shown!r})")
    return "invalid celery-ws setting: " + "; ".join(problems)


def _variable_names(loc: str) -> str:
    """Every name a user may have set the setting under, e.g. WEBSOCKET_PORT / ws_port."""
    for name, field in Settings.model_fields.items():
        choices = tuple(getattr(field.validation_alias, "choices", ()))
        if loc == name or loc in choices:
            return " / ".join([*(c for c in choices if c.isupper()), CONF_PREFIX + name])
    return loc


def _warn_unknown(conf: Mapping[str, Any] | None) -> None:
    """Log a warning (once per process) for each ``ws_*`` key of ``conf``
    (``CELERY_WS_*`` under Celery's ``namespace="CELERY"``, Django's way, which
    keeps the keys as settings.py spells them) and each ``CELERY_WS_*``
    environment variable that names no setting: a misspelled one is otherwise
    ignored without a word. It names the closest valid setting."""
    keys = [CONF_PREFIX + name for name in Settings.model_fields]
    namespaced = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
    variables = [
        alias
        for field in Settings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", ())
        if isinstance(alias, str) and alias.startswith(ENV_PREFIX)
    ]
    found = [
        (str(key), CONF_PREFIX, "in app.conf", keys) for key in conf or () if str(key).startswith(CONF_PREFIX)
    ]
    found += [
        (str(key), ENV_PREFIX, "in app.conf", namespaced)
        for key in conf or ()
        if str(key).startswith(ENV_PREFIX)
    ]
    found += [
        (name, ENV_PREFIX, "in the environment", variables)
        for name in os.environ
        if name.startswith(ENV_PREFIX)
    ]
    for name, prefix, where, valid in found:
        if name not in _COMMAND_VARIABLES and not name.startswith(_TEST_VARIABLES):
            warn_unknown(name, prefix, where, valid)


def warn_unknown(name: str, prefix: str, where: str, valid: Sequence[str]) -> None:
    """Warn once per process and place that ``name`` (found ``where``) names
    none of ``valid`` and is ignored, with the closest of them: the names are
    those the user wrote (``celery_ws.contrib.django`` passes Django's)."""
    if name in valid or (name, where) in _warned:
        return
    _warned.add((name, where))
    # compared without the prefix all share, which would make any two names look alike
    close = difflib.get_close_matches(
        name.removeprefix(prefix), [v.removeprefix(prefix) for v in valid], n=1, cutoff=0.6
    )
    hint = f"did you mean {prefix}{close[0]}?" if close else "see the Configuration table in the README"
    logger.warning("unknown celery-ws setting %s %s is ignored: %s", name, where, hint)
