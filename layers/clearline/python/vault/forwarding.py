"""Authorizations forwarded to the card processor: the one place a card leaves the vault.

Clearline asks for an authorization naming a payment method; the vault opens the card
and sends it to the processor with Clearline's idempotency key, so a retry after an
unknown outcome returns the first result. The processor's answer (status and JSON body)
goes back to Clearline as it came. A processor that cannot be reached, or whose answer
cannot be read, is a 502: the outcome is unknown and Clearline retries with the same key.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from clearline.errors import InvalidRequestError, ServiceUnavailableError
from vault.authentications import Authentications
from vault.service import CardVault

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class ProcessorUnreachable(ServiceUnavailableError):
    """The processor did not answer, or not readably: the outcome is unknown."""

    def __init__(self) -> None:
        super().__init__(
            "The card processor did not answer; retry with the same Idempotency-Key.",
            code="processor_unavailable",
        )


@dataclass(frozen=True)
class AuthorizationRequest:
    merchant: str
    payment_method: str
    amount: int
    currency: str
    capture: bool
    reference: str
    authentication: str | None = None


@dataclass(frozen=True)
class ProcessorAnswer:
    status: int
    body: dict[str, Any]


def check_idempotency_key(key: str | None) -> str:
    if not key:
        raise InvalidRequestError(
            "An Idempotency-Key header is required, so that a retry never authorizes twice.",
            code="idempotency_key_required",
            param="Idempotency-Key",
        )
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidRequestError(
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters long.",
            code="idempotency_key_invalid",
            param="Idempotency-Key",
        )
    return key


class Forwarder:
    def __init__(
        self,
        cards: CardVault,
        authentications: Authentications,
        processor_url: str,
        timeout_seconds: float,
    ) -> None:
        self.cards = cards
        self.authentications = authentications
        self.processor_url = processor_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        host = urllib.parse.urlsplit(processor_url).hostname
        # A proxy from the environment must not capture calls to a processor on loopback
        # (the local stack), least of all calls that carry a card number.
        handlers: list[urllib.request.BaseHandler] = []
        if host in _LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def authorize(self, request: AuthorizationRequest, idempotency_key: str) -> ProcessorAnswer:
        payment_method = self.cards.payment_method(request.merchant, request.payment_method)
        card = self.cards.open_card(payment_method)
        card_body: dict[str, Any] = {
            "number": card.number,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
        }
        if card.cvc is not None:
            card_body["cvc"] = card.cvc
        body: dict[str, Any] = {
            "card": card_body,
            "amount": request.amount,
            "currency": request.currency,
            "capture": request.capture,
            "reference": request.reference,
        }
        if self.authentications.succeeded_for(
            request.authentication, request.merchant, request.payment_method
        ):
            body["three_d_secure"] = {
                "authenticated": True,
                "authentication": request.authentication,
            }
        answer = self._post("/v1/authorizations", body, idempotency_key)
        if 200 <= answer.status < 300 or answer.status == 402:
            # The processor has seen the CVC; it must not be kept any longer.
            self.cards.discard_cvc(payment_method)
        return answer

    def _post(self, path: str, body: dict[str, Any], idempotency_key: str) -> ProcessorAnswer:
        if not self.processor_url:
            raise ProcessorUnreachable()
        request = urllib.request.Request(
            self.processor_url + path,
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Idempotency-Key": idempotency_key,
            },
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self.timeout_seconds) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            try:
                status, raw = error.code, error.read()
            except (http.client.HTTPException, OSError) as exc:
                raise ProcessorUnreachable() from exc
        except (http.client.HTTPException, OSError) as exc:  # refused, reset, timed out
            raise ProcessorUnreachable() from exc
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProcessorUnreachable() from exc
        if not isinstance(parsed, dict):
            raise ProcessorUnreachable()
        return ProcessorAnswer(status, parsed)
