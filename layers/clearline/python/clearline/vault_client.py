"""Client for the card vault's internal API: the only way Clearline touches a card.

Clearline never holds a card number. It holds the vault's references (`pm_...`, `tok_...`)
and asks the vault to act on them: tell what card a reference stands for (brand, last
four, fingerprint), turn a test alias or a single-use token into a stored payment method,
run a 3-D Secure authentication, and forward an authorization to the processor with the
card swapped in. The vault's internal routes are IAM-authorized, so every request is
signed (SigV4, `execute-api`) with the function's own role.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from clearline.models import PaymentMethodCard
from clearline.processor import (
    ProcessorError,
    ProcessorRejected,
    ProcessorUnavailable,
    UnknownToken,
    _check_key,
    _http_error,
    _reason,
    _segment,
)
from clearline.topology import VAULT_URL_ENV, VAULT_URL_PARAMETER_ENV

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The vault's single-use tokens start so, as Stripe's own do; Stripe's test tokens are names.
VAULT_TOKEN_PREFIX = "tok_1"


class VaultUnavailable(ProcessorUnavailable):
    """The vault could not be reached or failed: nothing it was asked is known to be done."""


class TokenAlreadyUsed(ProcessorRejected):
    """A single-use token was redeemed before, for something else."""


class VaultClient:
    """Signed JSON calls to the vault. `base_url` locally; in AWS the URL is read once from
    the SSM parameter its stack writes (it deploys after Clearline's)."""

    def __init__(
        self,
        base_url: str = "",
        *,
        parameter_name: str = "",
        timeout_seconds: float = 10.0,
        region: str | None = None,
    ) -> None:
        if not base_url and not parameter_name:
            raise ValueError("the vault needs a URL or the name of the parameter holding it")
        self._base_url = base_url.rstrip("/")
        self.parameter_name = parameter_name
        self.timeout_seconds = timeout_seconds
        self.region = region or os.environ.get("AWS_REGION", "us-east-1")
        self._lock = threading.Lock()
        self._opener: urllib.request.OpenerDirector | None = None
        self._test_cards: dict[str, PaymentMethodCard | None] = {}

    @classmethod
    def from_env(cls, timeout_seconds: float = 10.0) -> VaultClient | None:
        """The vault of this function's environment, or None where it has none (a unit test
        of the charge path on processor tokens alone)."""
        url = os.environ.get(VAULT_URL_ENV, "")
        parameter = os.environ.get(VAULT_URL_PARAMETER_ENV, "")
        if not url and not parameter:
            return None
        return cls(url, parameter_name=parameter, timeout_seconds=timeout_seconds)

    @property
    def base_url(self) -> str:
        with self._lock:
            if not self._base_url:
                import boto3

                answer = boto3.client("ssm").get_parameter(Name=self.parameter_name)
                self._base_url = str(answer["Parameter"]["Value"]).rstrip("/")
            return self._base_url

    # -- what a reference stands for -------------------------------------------------------

    def payment_method(self, merchant: str, payment_method: str) -> dict[str, Any] | None:
        """The card a payment method of this merchant's stands for (no number), or None."""
        query = urllib.parse.urlencode({"merchant": merchant})
        path = f"/internal/payment_methods/{_segment(payment_method)}?{query}"
        return self._maybe("GET", path)

    def test_payment_method(
        self, merchant: str, alias: str, reference: str
    ) -> dict[str, Any] | None:
        """A stored payment method made from the test card a Stripe alias (`pm_card_visa`,
        `tok_visa`) names; the same reference gives the same one. None: not an alias."""
        body = {"merchant": merchant, "test_card": alias, "reference": reference}
        return self._maybe("POST", "/internal/payment_methods", body)

    def test_card(self, alias: str) -> PaymentMethodCard | None:
        """The card a Stripe test alias (`tok_visa`) stands for, as the vault describes that
        number (brand, country, BIN, fingerprint; never the number); None for what is not an
        alias. Kept for the life of the process: the aliases and their numbers never change."""
        with self._lock:
            if alias in self._test_cards:
                return self._test_cards[alias]
        answer = self._maybe("GET", f"/internal/test_cards/{_segment(alias)}")
        card = None if answer is None else PaymentMethodCard.model_validate(answer)
        with self._lock:
            if len(self._test_cards) < 1000:  # aliases are few; anything else is not
                self._test_cards[alias] = card
        return card

    def test_card_fingerprint(self, alias: str) -> str | None:
        card = self.test_card(alias)
        return card.fingerprint if card is not None else None

    def redeem_token(self, merchant: str, token: str, reference: str) -> dict[str, Any] | None:
        """The payment method a single-use token becomes, or None when the vault did not
        issue it (a processor's test token). Raises TokenAlreadyUsed."""
        if not token.startswith(VAULT_TOKEN_PREFIX):
            return None  # not one of the vault's: Stripe's test tokens are names (tok_visa)
        body = {"merchant": merchant, "reference": reference}
        try:
            return self._maybe("POST", f"/internal/tokens/{_segment(token)}/redeem", body)
        except ProcessorRejected as exc:
            if exc.code == "token_already_used":
                raise TokenAlreadyUsed(exc.code, exc.message, exc.status) from None
            raise

    # -- 3-D Secure ------------------------------------------------------------------------

    def authenticate(
        self,
        *,
        idempotency_key: str,
        merchant: str,
        payment_method: str,
        amount: int,
        currency: str,
        reference: str,
        complete_url: str,
    ) -> dict[str, Any]:
        """Whether the card needs a challenge for this payment, and where it is. The same
        key is the same authentication."""
        body = {
            "merchant": merchant,
            "payment_method": payment_method,
            "amount": amount,
            "currency": currency,
            "reference": reference,
            "complete_url": complete_url,
        }
        return self._request("POST", "/internal/authentications", body, idempotency_key)

    def authentication(self, authentication_id: str) -> dict[str, Any] | None:
        return self._maybe("GET", f"/internal/authentications/{_segment(authentication_id)}")

    # -- money -----------------------------------------------------------------------------

    def forward_authorization(
        self, *, idempotency_key: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The processor's answer to an authorization of a stored card, which the vault
        sends with the number in place of the reference, under the same key. Fails the way
        the processor's own client does (unknown card: UnknownToken)."""
        try:
            return self._request("POST", "/internal/authorizations", body, idempotency_key)
        except ProcessorRejected as exc:
            if exc.status == 404:
                raise UnknownToken(str(body.get("payment_method")), exc.message) from None
            raise

    # -- transport ---------------------------------------------------------------------------

    def _maybe(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        try:
            return self._request(method, path, body)
        except ProcessorRejected as exc:
            if exc.status == 404:
                return None
            raise

    def _signed_headers(self, method: str, url: str, data: bytes | None) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import get_session

        credentials = get_session().get_credentials()
        if credentials is None:
            raise VaultUnavailable("no AWS credentials to sign requests to the vault with")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(
            request
        )
        return dict(request.headers.items())

    def _open(self, request: urllib.request.Request) -> bytes:
        if self._opener is None:
            handlers: list[urllib.request.BaseHandler] = []
            if urllib.parse.urlsplit(self.base_url).hostname in _LOOPBACK_HOSTS:
                handlers.append(urllib.request.ProxyHandler({}))  # the local stack's vault
            self._opener = urllib.request.build_opener(*handlers)
        with self._opener.open(request, timeout=self.timeout_seconds) as response:
            return bytes(response.read())

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        headers = self._signed_headers(method, url, data)
        if idempotency_key is not None:
            _check_key(idempotency_key)
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            raw = self._open(request)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, None) from None
        except (http.client.HTTPException, OSError) as exc:
            raise VaultUnavailable(f"vault {method} {path}: {_reason(exc)}") from exc
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VaultUnavailable(f"vault {method} {path}: response is not JSON") from exc
        if not isinstance(parsed, dict):
            raise ProcessorError(f"vault {method} {path}: response is not a JSON object")
        return parsed
