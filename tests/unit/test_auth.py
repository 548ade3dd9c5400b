"""Bearer tokens into principals: what verifies, what does not, and the secrets kept on disk."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from commerce.auth import ADMIN_TOKEN, InvalidCredentials, Principal, Role, Verifier, issue
from commerce.runtime import resolve_secrets
from commerce.settings import Settings, SettingsError

SECRET = "unit-test-secret-0123456789abcdef0123456789"
CUSTOMER = str(uuid.uuid4())


def settings(**overrides: object) -> Settings:
    return Settings(admin_token="the-admin-token", jwt_secret=SECRET, **overrides)  # type: ignore[arg-type]


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def signed(claims: dict[str, object], key: object = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode({"sub": CUSTOMER, "exp": ago(-300), **claims}, key,  # type: ignore[arg-type]
                      algorithm=algorithm)


def test_a_customer_token_names_the_customer() -> None:
    assert Verifier(settings()).principal(signed({})) == Principal(Role.CUSTOMER, CUSTOMER)


def test_the_admin_token_and_an_admin_jwt_are_both_admins() -> None:
    verifier = Verifier(settings())
    assert verifier.principal("the-admin-token") == ADMIN_TOKEN
    assert verifier.principal(signed({"sub": "ops", "role": "admin"})).is_admin


def test_a_token_issued_by_the_cli_verifies() -> None:
    s = settings()
    assert Verifier(s).principal(issue(s, "pos-1", Role.SERVICE, ttl=60)) == Principal(Role.SERVICE, "pos-1")


@pytest.mark.parametrize("claims", [
    {"exp": "31 seconds ago"},
    {"role": "superuser"},
    {"sub": "not-a-uuid"},
    {"sub": 42},
    {"sub": "warehouse 1", "role": "service"},
    {"aud": "another-application"},
])
def test_claims_that_do_not_hold_are_refused(claims: dict[str, object]) -> None:
    if claims.get("exp") == "31 seconds ago":
        claims = {**claims, "exp": ago(31)}
    with pytest.raises(InvalidCredentials):
        Verifier(settings()).principal(signed(claims))


def test_thirty_seconds_of_clock_skew_are_forgiven() -> None:
    assert Verifier(settings()).principal(signed({"exp": ago(20)})).subject == CUSTOMER


def test_a_token_without_expiry_is_refused() -> None:
    with pytest.raises(InvalidCredentials):
        Verifier(settings()).principal(jwt.encode({"sub": CUSTOMER}, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("value", ["", "x" * 9000, "caf\u00e9", "a.b.c", "\u0000"])
def test_malformed_tokens_are_refused_not_crashed_on(value: str) -> None:
    with pytest.raises(InvalidCredentials):
        Verifier(settings()).principal(value)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = Verifier(settings(jwt_issuer="https://id.example", jwt_audience="commerce"))
    good = signed({"iss": "https://id.example", "aud": "commerce"})
    assert verifier.principal(good).subject == CUSTOMER
    for claims in ({"iss": "https://evil.example", "aud": "commerce"}, {"iss": "https://id.example", "aud": "x"},
                   {}):
        with pytest.raises(InvalidCredentials):
            verifier.principal(signed(claims))


@pytest.mark.parametrize(("private", "algorithm"), [
    (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    (ec.generate_private_key(ec.SECP256R1()), "ES256"),
])
def test_an_identity_providers_tokens_verify_with_its_public_key_and_hs256_no_longer_does(
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str, tmp_path: Path) -> None:
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(public)
    for configured in (public, str(pem_file)):
        verifier = Verifier(settings(jwt_public_key=configured))
        assert verifier.principal(signed({}, private, algorithm)).subject == CUSTOMER
        with pytest.raises(InvalidCredentials):
            verifier.principal(signed({}))  # an HS256 token, even one signed with the local secret
        with pytest.raises(InvalidCredentials):
            verifier.principal(hs256_by_hand({"sub": CUSTOMER, "exp": int(ago(-300).timestamp())}, public.encode()))


def hs256_by_hand(claims: dict[str, object], key: bytes) -> str:
    """An HS256 token keyed with the public key's PEM: the algorithm-confusion attack (PyJWT will not make one)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(claims).encode())}"
    return f"{signing_input}.{part(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def test_secrets_are_made_once_with_mode_0600(tmp_path: Path) -> None:
    first, files = resolve_secrets(Settings(data_dir=tmp_path))
    again, _ = resolve_secrets(Settings(data_dir=tmp_path))
    assert set(files) == {"admin_token", "jwt_secret", "server_secret"}
    assert (first.admin_token, first.jwt_secret, first.server_secret) == (
        again.admin_token, again.jwt_secret, again.server_secret)
    assert len({first.admin_token, first.jwt_secret, first.server_secret}) == 3
    assert all(os.stat(path).st_mode & 0o777 == 0o600 for path in files.values())


def test_a_secret_file_that_others_may_read_is_refused(tmp_path: Path) -> None:
    _, files = resolve_secrets(Settings(data_dir=tmp_path))
    files["jwt_secret"].chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        resolve_secrets(Settings(data_dir=tmp_path))


def test_configured_secrets_are_not_written_to_disk(tmp_path: Path) -> None:
    s, files = resolve_secrets(Settings(data_dir=tmp_path, admin_token="a", jwt_secret="j", server_secret="s"))
    assert files == {} and list(tmp_path.iterdir()) == []
    assert (s.admin_token, s.jwt_secret, s.server_secret) == ("a", "j", "s")
