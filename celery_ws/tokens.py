"""Connection tokens: signed, expiring JWTs that name a user.

The web application that serves a page mints a token for its signed-in user
(:func:`issue_token`, or ``celery-ws token USER_ID``) and the page connects
with it; the server trusts the token's ``sub`` and nothing the client says
about who it is. JWT rather than a Python-only format, so any backend
language can mint one. What the page gets is :func:`connection_grant`: the
token, where to connect (``public_url``, the one address every URL handed to
a browser starts from) and when the token expires.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from pydantic import TypeAdapter, ValidationError

from .exceptions import InvalidToken, SettingsError
from .protocol import Identifier
from .settings import CONF_PREFIX, Settings, _variable_names

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "Identity",
    "InvalidToken",
    "TokenVerifier",
    "connection_grant",
    "issue_token",
    "settings_of",
    "verification_keys",
    "websocket_url",
]

_USER_ID: TypeAdapter[str] = TypeAdapter(Identifier)
_LEEWAY = 5.0  # seconds of clock skew tolerated between the minting app and the server
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_ANY_ADDRESS = ("", "0.0.0.0", "::")  # noqa: S104  (bind addresses no browser can open)


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: float


def settings_of(app: Celery | None = None) -> Settings:
    """The settings a process that mints tokens shares with ``celery ws serve``.

    ``app``'s ``app.conf`` when given; otherwise Celery's current app's, when
    it carries any ``ws_*`` setting (a Django project's app configured with
    ``namespace="CELERY"`` does); the environment wins over either, as it does
    for the server. Without this a web process would read only the
    environment, and find no secret where its server found one.

    Raises:
        SettingsError: naming the variable whose value is invalid.
    """
    conf = app.conf if app is not None else _current_conf()
    return Settings.load(conf)


def _current_conf() -> Any:
    """Celery's current app's configuration if it has celery-ws settings.
    A process that never imported Celery has no current app, and asking would
    create Celery's fallback app for nothing."""
    if "celery" not in sys.modules:
        return None
    from celery import current_app

    conf = current_app.conf
    return conf if any(conf.get(CONF_PREFIX + name) is not None for name in Settings.model_fields) else None


def issue_token(
    user_id: str,
    *,
    ttl: float | None = None,
    settings: Settings | None = None,
    app: Celery | None = None,
    private_key: str | None = None,
    **claims: Any,
) -> str:
    """A token for ``user_id`` that expires after ``ttl`` seconds (default the
    ``token_ttl`` setting, 3600).

    Signed with ``CELERY_WS_SECRET`` (HS256 by default); for RS256/ES256 pass
    the ``private_key`` whose public half the server is configured with.
    ``aud``/``iss`` come from the settings unless given in ``claims``. The
    settings are ``settings``, else those of ``app`` (or of Celery's current
    app, then the environment: :func:`settings_of`).

    Raises:
        SettingsError: no key, or one the server would refuse (too short, or
            not a key for the algorithm).
    """
    return _mint(user_id, ttl, settings or settings_of(app), private_key, claims)[0]


def connection_grant(
    user_id: str, *, ttl: float | None = None, settings: Settings | None = None, app: Celery | None = None
) -> dict[str, str | int]:
    """What a web application hands its page to connect as ``user_id``:
    ``{"token", "url", "expires_at"}`` (the server's :func:`websocket_url`, and
    the token's expiry in Unix seconds, so a page can fetch the next one in time).

    Raises:
        SettingsError: as :func:`issue_token`.
    """
    settings = settings or settings_of(app)
    token, expires_at = _mint(user_id, ttl, settings, None, {})
    return {"token": token, "url": websocket_url(settings), "expires_at": expires_at}


def websocket_url(settings: Settings) -> str:
    """The URL a browser opens its WebSocket to: ``public_url`` with a
    WebSocket scheme (``https://ws.example.com`` -> ``wss://ws.example.com/``),
    or, without one, the server's own address (a development set-up: a bind
    address such as 0.0.0.0 becomes 127.0.0.1)."""
    if settings.public_url is None:
        host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{settings.port}/"
    parts = urlsplit(settings.public_url)
    return urlunsplit((_WEBSOCKET_SCHEMES[parts.scheme], parts.netloc, parts.path or "/", parts.query, ""))


def _mint(
    user_id: str, ttl: float | None, settings: Settings, private_key: str | None, claims: dict[str, Any]
) -> tuple[str, int]:
    key = _signing_key(settings, private_key)
    now = int(time.time())
    lifetime = settings.token_ttl if ttl is None else ttl
    payload: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(lifetime)}
    if settings.jwt_audience:
        payload["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        payload["iss"] = settings.jwt_issuer
    payload.update(claims)
    return jwt.encode(payload, key, algorithm=settings.jwt_algorithm), int(payload["exp"])


def _signing_key(settings: Settings, private_key: str | None) -> Any:
    if private_key is not None:
        return _prepared(private_key, settings.jwt_algorithm, "private_key")
    if settings.secret is None:
        raise SettingsError(f"{_variable_names('secret')} is not set: cannot sign a token")
    return _prepared(settings.secret.get_secret_value(), settings.jwt_algorithm, _variable_names("secret"))


def verification_keys(settings: Settings) -> list[Any]:
    """The keys that verify tokens, current first, each as PyJWT uses it.

    ``WebSocketManager.start_server()`` calls this before listening, so a key
    no token could pass stops the server at start instead of failing every
    connection with 1011.

    Raises:
        SettingsError: naming the setting to fix.
    """
    algorithm = settings.jwt_algorithm
    if algorithm.startswith("HS"):
        if settings.jwt_public_key is not None:
            raise SettingsError(
                f"{_variable_names('jwt_public_key')} is set but {_variable_names('jwt_algorithm')} is "
                f"{algorithm}, which verifies with a shared secret: set the algorithm the key was made "
                "for (RS256, ES256), or unset the key and use CELERY_WS_SECRET"
            )
        if settings.secret is None:
            raise SettingsError(f"{_variable_names('secret')} is not set: no key verifies {algorithm} tokens")
        named = [(settings.secret, _variable_names("secret"))]
        named += [
            (old, f"{_variable_names('previous_secrets')} (#{number})")
            for number, old in enumerate(settings.previous_secrets, 1)
        ]
        return [_prepared(secret.get_secret_value(), algorithm, name) for secret, name in named]
    if settings.jwt_public_key is None:
        raise SettingsError(
            f"{_variable_names('jwt_algorithm')} is {algorithm}, which verifies with a public key: "
            f"set {_variable_names('jwt_public_key')}"
        )
    return [_prepared(_pem(settings.jwt_public_key), algorithm, _variable_names("jwt_public_key"))]


def _pem(value: str) -> str:
    """A public key setting holds the PEM itself or a path to it."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return Path(value).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{_variable_names('jwt_public_key')}: neither a PEM key nor a readable file: {exc}"
        ) from None


def _prepared(key: str, algorithm: str, name: str) -> Any:
    """``key`` parsed by PyJWT for ``algorithm`` and long enough for it: an HMAC
    secret at least as long as its hash (32, 48, 64 bytes for HS256/384/512,
    RFC 7518 §3.2), an RSA key at least 2048 bits. PyJWT only warns about a
    short key; a server that accepted one would be as weak as it.

    Raises:
        SettingsError: naming ``name`` and the reason, never the key.
    """
    try:
        checks = jwt.get_algorithm_by_name(algorithm)
        prepared = checks.prepare_key(key)
    except (jwt.PyJWTError, NotImplementedError, ValueError, TypeError) as exc:
        raise SettingsError(f"{name}: PyJWT cannot use it as a {algorithm} key: {exc}") from None
    if too_short := checks.check_key_length(prepared):
        raise SettingsError(f"{name}: too short for {algorithm}: {too_short}")
    return prepared


class TokenVerifier:
    """Checks tokens against the configured keys; several keys allow rotation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def _keys(self) -> list[Any]:
        """Read at the first token rather than here, so that building a server
        never fails: its ``start_server()`` reports a bad key."""
        return verification_keys(self.settings)

    def verify(self, token: str) -> Identity:
        """Raises:
        InvalidToken: with a reason safe to show the client.
        """
        if not token or len(token) > 8192:
            raise InvalidToken("missing or oversized token")
        error: Exception | None = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[self.settings.jwt_algorithm],
                    audience=self.settings.jwt_audience,
                    issuer=self.settings.jwt_issuer,
                    leeway=_LEEWAY,
                    options={"require": ["exp", "sub"]},
                )
            except jwt.ExpiredSignatureError:
                raise InvalidToken("token expired") from None
            except jwt.InvalidSignatureError as exc:
                error = exc
                continue
            except jwt.InvalidTokenError as exc:
                raise InvalidToken(f"invalid token: {exc}") from None
            try:
                user_id = _USER_ID.validate_python(claims["sub"])
            except ValidationError:
                raise InvalidToken("invalid token: sub is not a valid user id") from None
            return Identity(user_id=user_id, expires_at=float(claims["exp"]))
        raise InvalidToken("invalid token: bad signature") from error
