"""Connection tokens: signed, expiring JWTs that name a user.

The web application that serves a page mints a token for its signed-in user
(:func:`issue_token`, or ``celery-ws token USER_ID``) and the page connects
with it; the server trusts the token's ``sub`` and nothing the client says
about who it is. JWT rather than a Python-only format, so any backend
language can mint one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from pydantic import TypeAdapter, ValidationError

from .exceptions import CeleryWSError, SettingsError
from .protocol import Identifier
from .settings import Settings

__all__ = ["Identity", "InvalidToken", "TokenVerifier", "issue_token"]

_USER_ID: TypeAdapter[str] = TypeAdapter(Identifier)
_LEEWAY = 5.0  # seconds of clock skew tolerated between the minting app and the server


class InvalidToken(CeleryWSError):
    """A token that is missing, malformed, wrongly signed or expired."""


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: float


def issue_token(
    user_id: str,
    *,
    ttl: float = 3600,
    settings: Settings | None = None,
    private_key: str | None = None,
    **claims: Any,
) -> str:
    """A token for ``user_id`` that expires after ``ttl`` seconds.

    Signed with ``CELERY_WS_SECRET`` (HS256 by default); for RS256/ES256 pass
    the ``private_key`` whose public half the server is configured with.
    ``aud``/``iss`` come from the settings unless given in ``claims``.
    """
    settings = settings or Settings.load()
    key = private_key or (settings.secret.get_secret_value() if settings.secret else None)
    if key is None:
        raise SettingsError("CELERY_WS_SECRET is not set: cannot sign a token")
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
    if settings.jwt_audience:
        payload["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        payload["iss"] = settings.jwt_issuer
    payload.update(claims)
    return jwt.encode(payload, key, algorithm=settings.jwt_algorithm)


class TokenVerifier:
    """Checks tokens against the configured keys; several keys allow rotation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.jwt_public_key:
            key = settings.jwt_public_key
            if not key.lstrip().startswith("-----BEGIN"):
                key = Path(key).read_text()
            self._keys: list[Any] = [key]
        else:
            secrets = [settings.secret, *settings.previous_secrets] if settings.secret else []
            self._keys = [secret.get_secret_value() for secret in secrets]

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
