"""Keys that could never verify a token stop the server at start, with the
setting named, instead of closing every connection with 1011 and a traceback:
through ``WebSocketManager.start_server()`` and through ``celery-ws serve``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from celery_ws import Settings, SettingsError, WebSocketManager, issue_token
from celery_ws.testing.redis_server import free_port
from tests.processes import celery_ws_command, run

LONG_SECRET = "startup-checks-secret-0123456789abcdef"


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_PUBLIC = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PUBLIC = public_pem(ec.generate_private_key(ec.SECP256R1()))
SHORT_RSA_PUBLIC = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))

MISCONFIGURED = {
    "a PEM public key with the default HS256": ({"jwt_public_key": RSA_PUBLIC}, "CELERY_WS_JWT_ALGORITHM"),
    "an empty secret": ({"secret": ""}, "CELERY_WS_SECRET / ws_secret: .*empty"),
    "an HS256 secret under 32 bytes": (
        {"secret": "x" * 31},
        "CELERY_WS_SECRET / ws_secret: too short.*RFC 7518",
    ),
    "an HS384 secret under 48 bytes": (
        {"secret": "x" * 47, "jwt_algorithm": "HS384"},
        "CELERY_WS_SECRET / ws_secret: too short.*48 bytes",
    ),
    "an HS512 secret under 64 bytes": (
        {"secret": "x" * 63, "jwt_algorithm": "HS512"},
        "CELERY_WS_SECRET / ws_secret: too short.*64 bytes",
    ),
    "a short previous secret": (
        {"secret": LONG_SECRET, "previous_secrets": f"{LONG_SECRET}-old,short"},
        r"CELERY_WS_PREVIOUS_SECRETS / ws_previous_secrets \(#2\): too short",
    ),
    "a PEM key as the HS256 secret": (
        {"secret": RSA_PUBLIC},
        "CELERY_WS_SECRET / ws_secret: PyJWT cannot use it",
    ),
    "an RSA key with ES256": (
        {"jwt_algorithm": "ES256", "jwt_public_key": RSA_PUBLIC},
        "CELERY_WS_JWT_PUBLIC_KEY.*ES256",
    ),
    "an EC key with RS256": (
        {"jwt_algorithm": "RS256", "jwt_public_key": EC_PUBLIC},
        "CELERY_WS_JWT_PUBLIC_KEY.*RS256",
    ),
    "an RSA key under 2048 bits": (
        {"jwt_algorithm": "RS256", "jwt_public_key": SHORT_RSA_PUBLIC},
        "CELERY_WS_JWT_PUBLIC_KEY.*too short",
    ),
    "a secret with RS256 and no public key": (
        {"jwt_algorithm": "RS256", "secret": LONG_SECRET},
        "set CELERY_WS_JWT_PUBLIC_KEY",
    ),
    "a malformed PEM": (
        {
            "jwt_algorithm": "RS256",
            "jwt_public_key": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
        },
        "CELERY_WS_JWT_PUBLIC_KEY.*PyJWT cannot use it",
    ),
    "a key file that is not there": (
        {"jwt_algorithm": "ES256", "jwt_public_key": "/nonexistent/celery-ws-public.pem"},
        "CELERY_WS_JWT_PUBLIC_KEY.*No such file",
    ),
}


@pytest.mark.parametrize(("overrides", "named"), MISCONFIGURED.values(), ids=MISCONFIGURED.keys())
async def test_start_server_refuses_keys_that_cannot_verify(celery_ws_redis_url, overrides, named):
    manager = WebSocketManager(port=0, settings=Settings.load(redis_url=celery_ws_redis_url, **overrides))
    try:
        with pytest.raises(SettingsError, match=named):
            await manager.start_server()
        assert not manager.running
    finally:
        await manager.stop_server()


@pytest.mark.parametrize(
    "overrides",
    [
        {"secret": "x" * 32},
        {"secret": "x" * 64, "jwt_algorithm": "HS512", "previous_secrets": "y" * 64},
        {"jwt_algorithm": "RS256", "jwt_public_key": RSA_PUBLIC},
        {"jwt_algorithm": "ES256", "jwt_public_key": EC_PUBLIC},
    ],
    ids=["HS256", "HS512 with rotation", "RS256", "ES256"],
)
async def test_start_server_accepts_keys_that_can_verify(celery_ws_redis_url, overrides):
    manager = WebSocketManager(port=0, settings=Settings.load(redis_url=celery_ws_redis_url, **overrides))
    try:
        await manager.start_server()
        assert manager.running
    finally:
        await manager.stop_server()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CELERY_WS_SECRET": "change-me"}, "CELERY_WS_SECRET"),
        ({"CELERY_WS_SECRET": ""}, "CELERY_WS_SECRET"),
        ({"CELERY_WS_JWT_PUBLIC_KEY": RSA_PUBLIC}, "CELERY_WS_JWT_ALGORITHM"),
    ],
    ids=["short secret", "empty secret", "public key with HS256"],
)
def test_serve_prints_one_line_and_exits(celery_ws_redis_url, env, named):
    done = run(
        [*celery_ws_command(), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        CELERY_WS_REDIS_URL=celery_ws_redis_url,
        **env,
    )
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()  # no traceback, no log lines: the reason alone
    assert line.startswith("Error: ")
    assert named in line


def test_issue_token_refuses_a_secret_the_server_would_refuse():
    with pytest.raises(SettingsError, match=r"CELERY_WS_SECRET / ws_secret: too short.*RFC 7518"):
        issue_token("someone", settings=Settings.load(secret="change-me"))
    with pytest.raises(SettingsError, match="private_key: PyJWT cannot use it as a RS256 key"):
        issue_token("someone", settings=Settings.load(jwt_algorithm="RS256"), private_key="not a key")
