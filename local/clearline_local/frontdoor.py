"""The local API Gateway: each HTTP request becomes a REST proxy event for the api Lambda.

It does what API Gateway does in front of the api and nothing more: IAM signatures on
the admin routes, and, on the routes that take an API key, the Lambda authorizer (its
answers cached per Authorization header) and the usage plans' throttles (`KeyGate`). It
does not read or log request bodies, so no card number can leak through it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clearline.rate_limits import (
    AUTH_FAILURES,
    AUTH_FAILURES_MESSAGE,
    AUTHORIZER_CACHE_TTL_SECONDS,
    CONTEXT_CODE,
    CONTEXT_MESSAGE,
    CONTEXT_PLAN,
    CONTEXT_RATE,
    GLOBAL_RATE,
    LOCKOUT_PLAN_NAME,
    LOCKOUT_USAGE_KEY,
    MISSING_KEY_MESSAGE,
    RATE_LIMIT_MESSAGE,
    RATE_LIMITED_REASON_HEADER,
    TokenBuckets,
    is_keyless,
)
from clearline_local.lambda_runtime import ACCOUNT, REGION, FunctionError, FunctionTimeout

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024

Invoke = Callable[[dict[str, Any]], Any]
# (method, url, headers, body) -> whether its SigV4 signature verifies
VerifySignature = Callable[[str, str, dict[str, str], bytes], bool]
# Paths API Gateway authorizes with IAM before invoking: the vault's internal routes, and
# the operators' admin routes of the api.
IAM_AUTHORIZED_PREFIXES = ("/internal/", "/admin/")
LOCAL_CALLER_ARN = f"arn:aws:iam::{ACCOUNT}:user/clearline-local"


# (status, headers, body) of an answer the gateway gives itself.
GatewayAnswer = tuple[int, dict[str, list[str]], bytes]


def gateway_error(
    status: int,
    error: dict[str, str],
    request_id: str | None,
    *,
    should_retry: bool | None = None,
    extra_headers: dict[str, str] | None = None,
) -> GatewayAnswer:
    """An answer of the gateway's own, in Stripe's error shape (as the CDK app's gateway
    responses render it)."""
    headers = {"Content-Type": ["application/json"]}
    if request_id:  # every response names its request, the gateway's own errors too
        headers["Request-Id"] = [request_id]
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = ["true" if should_retry else "false"]
    for name, value in (extra_headers or {}).items():
        headers[name] = [value]
    return status, headers, json.dumps({"error": error}).encode()


def rate_limited(reason: str, message: str, request_id: str) -> GatewayAnswer:
    # Stripe-Should-Retry: false, as Stripe's SDKs then raise at once (they do not retry a
    # plain 429 either): retrying into a bucket that is still empty only adds load; the
    # caller backs off on its own schedule.
    return gateway_error(
        429,
        {"type": "invalid_request_error", "code": "rate_limit", "message": message},
        request_id,
        should_retry=False,
        extra_headers={RATE_LIMITED_REASON_HEADER: reason},
    )


class KeyGate:
    """What API Gateway does before invoking the api on a route that takes an API key: no
    Authorization header is a 401 at once; otherwise the authorizer's answer for that
    header (cached for the TTL, refusals too) allows or refuses, and an allowed request
    takes a token from its usage identifier's bucket, at its plan's rate, or is a 429.
    The authorizer's context becomes requestContext.authorizer, replacing anything there."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        invoke_authorizer: Invoke,
        *,
        ttl_seconds: float = AUTHORIZER_CACHE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        buckets: TokenBuckets | None = None,
    ) -> None:
        self.invoke_authorizer = invoke_authorizer
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.buckets = buckets or TokenBuckets(clock)
        self._answers: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def _authorizer_answer(
        self, authorization: str, event: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The cached or fresh answer; None when the authorizer said Unauthorized."""
        now = self.clock()
        with self._lock:
            cached = self._answers.get(authorization)
        if cached is not None and cached[0] > now:
            return cached[1]
        request = {
            "type": "REQUEST",
            "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:local/"
            f"{event['requestContext']['stage']}/{event['httpMethod']}{event['path']}",
            **{k: event[k] for k in ("resource", "path", "httpMethod", "headers")},
            **{k: event[k] for k in ("multiValueHeaders", "queryStringParameters")},
            **{k: event[k] for k in ("pathParameters", "stageVariables", "requestContext")},
        }
        try:
            answer: dict[str, Any] | None = self.invoke_authorizer(request)
        except FunctionError as failed:
            if "Unauthorized" not in str(failed):
                raise
            answer = None
        with self._lock:
            if len(self._answers) >= self.MAX_CACHED:
                self._answers.clear()
            self._answers[authorization] = (now + self.ttl_seconds, answer)
        return answer

    def admit(self, event: dict[str, Any], request_id: str) -> GatewayAnswer | None:
        """None to go on to the api (the event now carries the authorizer's context), or
        the gateway's own answer."""
        # Only the gateway writes requestContext.authorizer: whatever was there goes.
        event["requestContext"].pop("authorizer", None)
        if is_keyless(event["httpMethod"], event["path"]):
            return None
        headers = event.get("headers") or {}
        authorization = next(
            (v for k, v in headers.items() if k.lower() == "authorization" and v), None
        )
        if authorization is None:  # the identity source is missing: UNAUTHORIZED
            return gateway_error(
                401,
                {
                    "type": "invalid_request_error",
                    "code": "api_key_missing",
                    "message": MISSING_KEY_MESSAGE,
                },
                request_id,
            )
        answer = self._authorizer_answer(authorization, event)
        statements = (answer or {}).get("policyDocument", {}).get("Statement", [])
        context = dict((answer or {}).get("context") or {})
        if answer is None or not any(s.get("Effect") == "Allow" for s in statements):
            return gateway_error(  # ACCESS_DENIED, as the CDK app renders it: a 401
                401,
                {
                    "type": "invalid_request_error",
                    "code": str(context.get(CONTEXT_CODE, "api_key_invalid")),
                    "message": str(context.get(CONTEXT_MESSAGE, "Invalid API Key provided.")),
                },
                request_id,
            )
        usage_key = str(answer.get("usageIdentifierKey", ""))
        if usage_key == LOCKOUT_USAGE_KEY or context.get(CONTEXT_PLAN) == LOCKOUT_PLAN_NAME:
            return rate_limited(AUTH_FAILURES, AUTH_FAILURES_MESSAGE, request_id)
        rate = float(context.get(CONTEXT_RATE, 0))
        if not usage_key or rate <= 0:  # API Gateway refuses a method without its key
            return gateway_error(
                403, {"type": "invalid_request_error", "message": "Forbidden"}, request_id
            )
        if not self.buckets.take(usage_key, rate, max(1.0, rate)):
            return rate_limited(GLOBAL_RATE, RATE_LIMIT_MESSAGE, request_id)
        event["requestContext"]["authorizer"] = {
            **context,
            "principalId": answer.get("principalId"),
        }
        return None


def build_event(
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    stage: str,
) -> dict[str, Any]:
    url = urlsplit(raw_path)
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        single_headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    pairs = parse_qsl(url.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for name, value in pairs:
        multi_query.setdefault(name, []).append(value)
    try:
        text: str | None = body.decode("utf-8") if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "resource": "/{proxy+}",
        "path": url.path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": url.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{stage}{url.path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "accountId": ACCOUNT,
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "domainName": single_headers.get("Host", ""),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": source_ip, "userAgent": single_headers.get("User-Agent")},
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


class _Handler(BaseHTTPRequestHandler):
    server: FrontDoorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the Lambda writes the structured request log

    def _reply(self, status: int, headers: dict[str, list[str]], body: bytes) -> None:
        self.send_response(status)
        for name, values in headers.items():
            if name.lower() in ("content-length", "connection", "transfer-encoding"):
                continue
            for value in values:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only
            self.wfile.write(body)

    def _gateway_error(self, status: int, message: str, request_id: str | None = None) -> None:
        body = json.dumps({"error": {"type": "api_error", "message": message}}).encode()
        headers = {"Content-Type": ["application/json"]}
        if request_id:  # every response names its request, the gateway's own errors too
            headers["Request-Id"] = [request_id]
        self._reply(status, headers, body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > API_GATEWAY_MAX_BODY:
            self.close_connection = True
            self._gateway_error(413, "Request Entity Too Large")
            return
        body = self.rfile.read(length) if length else b""
        event = build_event(
            self.command,
            self.path,
            list(self.headers.items()),
            body,
            self.client_address[0],
            self.server.stage,
        )
        request_id = f"req_{event['requestContext']['requestId']}"
        if event["path"].startswith(IAM_AUTHORIZED_PREFIXES):
            caller = self.server.iam_caller(
                self.command, self.headers.get("Host", ""), self.path, self.headers, body
            )
            if caller is None:  # API Gateway refuses before the function is invoked
                self._gateway_error(403, "Missing or invalid request signature", request_id)
                return
            event["requestContext"]["identity"]["userArn"] = caller
        elif self.server.key_gate is not None:
            try:
                refused = self.server.key_gate.admit(event, request_id)
            except Exception:  # a failed authorizer: AUTHORIZER_CONFIGURATION_ERROR, a 500
                self._gateway_error(500, "Internal server error", request_id)
                return
            if refused is not None:
                self._reply(*refused)
                return
        try:
            result = self.server.invoke(event)
        except FunctionTimeout:
            self._gateway_error(504, "Endpoint request timed out", request_id)
            return
        except Exception:  # a crashed handler is a 502 from API Gateway, too
            self._gateway_error(502, "Internal server error", request_id)
            return
        headers: dict[str, list[str]] = {k: [v] for k, v in (result.get("headers") or {}).items()}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = list(values)
        payload = result.get("body") or ""
        raw = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        self._reply(int(result.get("statusCode", 502)), headers, raw)

    # Every method reaches the api, as through API Gateway's ANY method: the api, not the
    # gateway, answers a method it does not support (405, in Stripe's error shape).
    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle
    do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _handle

    def __getattr__(self, name: str) -> Any:
        # Any other method a client invents (QUERY, PROPFIND, ...) reaches the api too.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


class FrontDoorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default listen backlog (5) resets bursts of clients

    def __init__(
        self,
        host: str,
        port: int,
        invoke: Invoke,
        stage: str,
        *,
        verify_signature: VerifySignature | None = None,
        key_gate: KeyGate | None = None,
        name: str = "front-door",
    ) -> None:
        super().__init__((host, port), _Handler)
        self.invoke = invoke
        self.key_gate = key_gate
        self.stage = stage
        self.verify_signature = verify_signature
        self.name = name
        self._thread: threading.Thread | None = None

    def iam_caller(
        self, method: str, host: str, raw_path: str, headers: Any, body: bytes
    ) -> str | None:
        """Who signed a request to an IAM-authorized path, or None: unsigned, or not
        verified (a front door with no verifier refuses every such request)."""
        if self.verify_signature is None:
            return None
        url = f"http://{host}{raw_path}"
        if not self.verify_signature(method, url, dict(headers.items()), body):
            return None
        return LOCAL_CALLER_ARN

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FrontDoorServer:
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a loop that never started
            self.shutdown()
        self.server_close()
