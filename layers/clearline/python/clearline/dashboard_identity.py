"""Signing in to the deployed dashboard with Cognito: the hosted sign-in page, OAuth 2.0's
authorization code flow with PKCE, and the ID token it ends with, verified here.

A user is a merchant's person: the pool's `custom:merchant` attribute names the merchant
(acct_...) whose dashboard they see; a member of the `operations` group also sees the
operations views. The token's signature is checked against the pool's published keys, and
its issuer, audience, use and expiry against this pool and app client: nothing the browser
carries is believed without that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clearline.errors import InvalidRequestError

OPERATIONS_GROUP = "operations"
MERCHANT_ATTRIBUTE = "custom:merchant"
# Where a deployed api function learns the pool (set by the CDK app; unset locally, where
# the dashboard signs in with one-time links instead).
DOMAIN_ENV = "CLEARLINE_DASHBOARD_SIGN_IN_DOMAIN"
CLIENT_ID_ENV = "CLEARLINE_DASHBOARD_CLIENT_ID"
ISSUER_ENV = "CLEARLINE_DASHBOARD_ISSUER"


class SignInFailed(InvalidRequestError):
    def __init__(self, why: str) -> None:
        super().__init__(f"Signing in did not work: {why} Try again.", code="sign_in_failed")


@dataclass(frozen=True)
class Identity:
    merchant_id: str
    operations: bool
    person: str  # the user's email, or their id


@dataclass(frozen=True)
class Attempt:
    """What the browser keeps (in a short-lived HttpOnly cookie) between leaving for the
    sign-in page and coming back: the state it must come back with, and the PKCE verifier."""

    state: str
    verifier: str

    @classmethod
    def new(cls) -> Attempt:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def as_cookie(self) -> str:
        return f"{self.state}.{self.verifier}"

    @classmethod
    def from_cookie(cls, value: str | None) -> Attempt | None:
        state, _, verifier = (value or "").partition(".")
        return cls(state, verifier) if state and verifier else None


def _post_form(url: str, form: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


class CognitoSignIn:
    def __init__(
        self,
        domain: str,
        client_id: str,
        issuer: str,
        redirect_uri: str,
        *,
        signing_key: Callable[[str], Any] | None = None,
        post_form: Callable[[str, dict[str, str]], dict[str, Any]] = _post_form,
    ) -> None:
        self.domain = domain.rstrip("/")
        self.client_id = client_id
        self.issuer = issuer.rstrip("/")
        self.redirect_uri = redirect_uri
        self.post_form = post_form
        if signing_key is None:
            import jwt

            keys = jwt.PyJWKClient(f"{self.issuer}/.well-known/jwks.json", cache_keys=True)
            signing_key = lambda token: keys.get_signing_key_from_jwt(token).key  # noqa: E731
        self.signing_key = signing_key

    def authorize_url(self, attempt: Attempt) -> str:
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid email",
            "state": attempt.state,
            "code_challenge": attempt.challenge,
            "code_challenge_method": "S256",
        }
        return f"{self.domain}/oauth2/authorize?{urllib.parse.urlencode(query)}"

    def identity(self, code: str, state: str, attempt: Attempt | None) -> Identity:
        """Who came back from the sign-in page: the code exchanged (with the verifier only
        this browser holds) for an ID token, and the token verified."""
        if attempt is None or not secrets.compare_digest(attempt.state, state or ""):
            raise SignInFailed("this sign-in was not started from this browser.")
        try:
            tokens = self.post_form(
                f"{self.domain}/oauth2/token",
                {
                    "grant_type": "authorization_code",
                    "client_id": self.client_id,
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "code_verifier": attempt.verifier,
                },
            )
        except OSError as exc:  # refused (a used or made-up code), or unreachable
            raise SignInFailed("the sign-in service did not accept it.") from exc
        return self.verify(str(tokens.get("id_token") or ""))

    def verify(self, id_token: str) -> Identity:
        import jwt

        try:
            claims = jwt.decode(
                id_token,
                self.signing_key(id_token),
                algorithms=["RS256"],
                audience=self.client_id,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "aud", "iss", "token_use"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise SignInFailed("its identity token did not verify.") from exc
        if claims.get("token_use") != "id":
            raise SignInFailed("that is not an identity token.")
        merchant_id = str(claims.get(MERCHANT_ATTRIBUTE) or "")
        if not merchant_id.startswith("acct_"):
            raise SignInFailed("your user names no merchant; ask an administrator.")
        return Identity(
            merchant_id,
            OPERATIONS_GROUP in (claims.get("cognito:groups") or []),
            str(claims.get("email") or claims.get("cognito:username") or claims["sub"]),
        )
