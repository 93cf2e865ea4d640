"""The local API Gateway: each HTTP request becomes a REST proxy event for the api Lambda.

It does what API Gateway does in front of a `{proxy+}` resource and nothing more: it
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

from clearline_local.lambda_runtime import ACCOUNT, FunctionTimeout

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024

Invoke = Callable[[dict[str, Any]], Any]
# (method, url, headers, body) -> whether its SigV4 signature verifies
VerifySignature = Callable[[str, str, dict[str, str], bytes], bool]
# Paths API Gateway authorizes with IAM before invoking: the vault's internal routes, and
# the operators' admin routes of the api.
IAM_AUTHORIZED_PREFIXES = ("/internal/", "/admin/")
LOCAL_CALLER_ARN = f"arn:aws:iam::{ACCOUNT}:user/clearline-local"


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
        name: str = "front-door",
    ) -> None:
        super().__init__((host, port), _Handler)
        self.invoke = invoke
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
