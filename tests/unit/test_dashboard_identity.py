"""Signing in to the deployed dashboard with Cognito (moto in-process): ID tokens that moto's
user pool issues, verified against its published keys; the code exchanged with the PKCE
verifier only the starting browser holds; and every way it must fail."""

from __future__ import annotations

import gzip
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jwt
import moto.cognitoidp
import pytest

from clearline.dashboard import DashboardSessions
from clearline.dashboard_identity import Attempt, CognitoSignIn, SignInFailed
from clearline.store import Store

PASSWORD = "Correct-Horse-42"


@dataclass
class Pool:
    client: Any
    pool_id: str
    client_id: str
    issuer: str

    def id_token(self, email: str, merchant: str | None, *groups: str) -> str:
        attributes = [{"Name": "email", "Value": email}]
        if merchant is not None:
            attributes.append({"Name": "custom:merchant", "Value": merchant})
        self.client.admin_create_user(
            UserPoolId=self.pool_id, Username=email, UserAttributes=attributes
        )
        self.client.admin_set_user_password(
            UserPoolId=self.pool_id, Username=email, Password=PASSWORD, Permanent=True
        )
        for group in groups:
            self.client.admin_add_user_to_group(
                UserPoolId=self.pool_id, Username=email, GroupName=group
            )
        signed_in = self.client.admin_initiate_auth(
            UserPoolId=self.pool_id,
            ClientId=self.client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": email, "PASSWORD": PASSWORD},
        )
        return str(signed_in["AuthenticationResult"]["IdToken"])


@pytest.fixture
def pool(aws: Any) -> Pool:
    client = boto3.client("cognito-idp", region_name="us-east-1")
    pool_id = client.create_user_pool(
        PoolName="dashboard",
        UsernameAttributes=["email"],  # as the CDK app's pool: people sign in by email
        Schema=[{"Name": "merchant", "AttributeDataType": "String", "Mutable": True}],
    )["UserPool"]["Id"]
    client.create_group(UserPoolId=pool_id, GroupName="operations")
    client_id = client.create_user_pool_client(UserPoolId=pool_id, ClientName="dashboard")[
        "UserPoolClient"
    ]["ClientId"]
    return Pool(
        client, pool_id, client_id, f"https://cognito-idp.us-east-1.amazonaws.com/{pool_id}"
    )


def moto_signing_key(_: str) -> Any:
    """The public key of moto's user pools, as a pool's jwks.json publishes it."""
    resources = Path(moto.cognitoidp.__file__).parent / "resources" / "jwks-public.json.gz"
    (key,) = jwt.PyJWKSet.from_dict(json.loads(gzip.decompress(resources.read_bytes()))).keys
    return key.key


class TokenEndpoint:
    """The pool's /oauth2/token, as Cognito answers it: a code is good once, and only with
    the verifier whose challenge the sign-in started with."""

    def __init__(self) -> None:
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (challenge, id token)

    def issue(self, attempt: Attempt, id_token: str) -> str:
        code = f"code-{len(self.codes)}"
        self.codes[code] = (attempt.challenge, id_token)
        return code

    def __call__(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        assert url.endswith("/oauth2/token") and form["grant_type"] == "authorization_code"
        challenge, id_token = self.codes.pop(form["code"], ("", ""))
        if not id_token or Attempt("", form["code_verifier"]).challenge != challenge:
            raise OSError("HTTP Error 400: invalid_grant")
        return {"id_token": id_token, "token_type": "Bearer"}


def sign_in(pool: Pool, endpoint: TokenEndpoint | None = None) -> CognitoSignIn:
    return CognitoSignIn(
        "https://clearline-test.auth.us-east-1.amazoncognito.com",
        pool.client_id,
        pool.issuer,
        "https://api.example/v1/dashboard/callback",
        signing_key=moto_signing_key,
        post_form=endpoint or TokenEndpoint(),
    )


def test_a_merchants_person_and_an_operator_sign_in(pool: Pool, store: Store) -> None:
    endpoint = TokenEndpoint()
    cognito = sign_in(pool, endpoint)
    attempt = Attempt.new()
    asked = urllib.parse.urlsplit(cognito.authorize_url(attempt))
    query = dict(urllib.parse.parse_qsl(asked.query))
    assert asked.path == "/oauth2/authorize" and query["code_challenge_method"] == "S256"
    assert (query["state"], query["code_challenge"]) == (attempt.state, attempt.challenge)
    assert attempt.verifier not in cognito.authorize_url(attempt)  # never leaves the browser

    code = endpoint.issue(attempt, pool.id_token("ann@shop.example", "acct_shop"))
    person = cognito.identity(code, attempt.state, attempt)
    assert (person.merchant_id, person.operations, person.person) == (
        "acct_shop",
        False,
        "ann@shop.example",
    )
    operator = cognito.verify(pool.id_token("olu@clearline.example", "acct_shop", "operations"))
    assert operator.operations
    # The session it opens names the person in the audit trail.
    session_id, session = DashboardSessions(store).open_for(
        operator.merchant_id, operations=True, person=operator.person
    )
    assert DashboardSessions(store).session(session_id) == session
    assert session.actor == f"dashboard {session.id} (olu@clearline.example)"


def test_a_sign_in_not_started_here_or_with_a_used_code_fails(pool: Pool) -> None:
    endpoint = TokenEndpoint()
    cognito = sign_in(pool, endpoint)
    attempt = Attempt.new()
    code = endpoint.issue(attempt, pool.id_token("ann@shop.example", "acct_shop"))
    with pytest.raises(SignInFailed, match="not started from this browser"):
        cognito.identity(code, attempt.state, None)  # no cookie: another browser
    with pytest.raises(SignInFailed, match="not started from this browser"):
        cognito.identity(code, "another-state", attempt)
    stolen = Attempt(attempt.state, "a-verifier-guessed-by-someone-else")
    with pytest.raises(SignInFailed, match="did not accept"):
        cognito.identity(code, attempt.state, stolen)
    with pytest.raises(SignInFailed, match="did not accept"):
        cognito.identity(code, attempt.state, attempt)  # the code went with the failed try


def test_tokens_that_must_not_sign_anyone_in(pool: Pool) -> None:
    cognito = sign_in(pool)
    good = pool.id_token("ann@shop.example", "acct_shop")
    header, payload, signature = good.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    forged_payload = jwt.utils.base64url_encode(
        json.dumps({**claims, "custom:merchant": "acct_someone_else"}).encode()
    ).decode()
    bad = {
        "forged": f"{header}.{forged_payload}.{signature}",
        "not a token": "nonsense",
        "another app's": CognitoSignIn(
            "https://d", "another-client", pool.issuer, "https://r", signing_key=moto_signing_key
        ),
        "no merchant": pool.id_token("nobody@shop.example", None),
    }
    for name, token in bad.items():
        with pytest.raises(SignInFailed):
            if isinstance(token, CognitoSignIn):
                token.verify(good)  # audience: another app client
            else:
                cognito.verify(token)
        assert name
    other_issuer = CognitoSignIn(
        "https://d", pool.client_id, pool.issuer + "x", "https://r", signing_key=moto_signing_key
    )
    with pytest.raises(SignInFailed):
        other_issuer.verify(good)
