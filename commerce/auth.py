"""Who is calling: bearer tokens turned into principals.

Three kinds of caller (API.md, identity and access): customers and services carry a JWT; admins carry
the admin token or a JWT with ``role: admin``. HS256 tokens are verified with the service's secret;
when ``COMMERCE_JWT_PUBLIC_KEY`` is set, RS256/ES256 tokens of an external identity provider are
verified with it instead. Anything that does not verify is :class:`InvalidCredentials`, never a 500.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hmac
import uuid
from pathlib import Path
from typing import Any

import jwt

from commerce.settings import ResolvedSettings, Settings

LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 8192
MAX_SUBJECT_LENGTH = 200


class InvalidCredentials(Exception):
    """The bearer token is missing where required, malformed, expired or badly signed."""


class Forbidden(Exception):
    """The caller is known but may not do this."""


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    SERVICE = "service"
    ADMIN = "admin"


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    subject: str

    @property
    def key(self) -> str:
        """The caller's identity as one string: it scopes idempotency keys and owns reservations."""
        return f"{self.role}:{self.subject}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def customer_id(self) -> uuid.UUID:
        return uuid.UUID(self.subject)


# A subject no JWT can have (subjects are never empty): the admin token is a caller of its own.
ADMIN_TOKEN = Principal(Role.ADMIN, "")


class Verifier:
    """Turns a bearer token into a :class:`Principal`."""

    def __init__(self, settings: ResolvedSettings) -> None:
        self.admin_token = settings.admin_token
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        if settings.jwt_public_key:
            self.key: Any = public_key_text(settings.jwt_public_key)
            self.algorithms = ["RS256", "ES256"]
        else:
            self.key = settings.jwt_secret
            self.algorithms = ["HS256"]

    def principal(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidCredentials("the bearer token is malformed")
        if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return ADMIN_TOKEN
        if not self.key:
            raise InvalidCredentials("the bearer token is not valid")
        try:
            claims = jwt.decode(
                token, self.key, algorithms=self.algorithms, leeway=LEEWAY_SECONDS,
                issuer=self.issuer, audience=self.audience,
                # With no audience configured, a token that names one (another application's) is refused.
                options={"require": ["exp", "sub"]})
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise InvalidCredentials(f"the bearer token is not valid: {type(e).__name__}") from e
        return principal_of(claims)


def principal_of(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(claims.get("role", Role.CUSTOMER.value))
    except ValueError as e:
        raise InvalidCredentials("the token's role is not customer, service or admin") from e
    subject = claims["sub"]
    if (not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH or not subject.isprintable()
            or any(c.isspace() for c in subject)):
        raise InvalidCredentials("the token's subject is not valid")
    if role is Role.CUSTOMER:
        try:
            subject = str(uuid.UUID(subject))
        except ValueError as e:
            raise InvalidCredentials("a customer token's subject must be the customer's UUID") from e
    return Principal(role, subject)


def public_key_text(value: str) -> str:
    """COMMERCE_JWT_PUBLIC_KEY holds a PEM key, or the path of a file holding one."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()


def issue(settings: Settings, subject: str, role: Role = Role.CUSTOMER, ttl: float = 3600.0,
          now: dt.datetime | None = None) -> str:
    """A signed HS256 token for development and tests (``commerce token``)."""
    if not settings.jwt_secret:
        raise ValueError("no JWT secret to sign with")
    issued = now or dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {"sub": subject, "role": role.value, "iat": issued,
                              "exp": issued + dt.timedelta(seconds=ttl)}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
