"""A merchant's webhook endpoint on loopback, for the tests that need deliveries."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe

from .conftest import WEBHOOK_TIMEOUT_SECONDS


class Receiver:
    """A merchant's webhook endpoint: verifies each delivery with the stripe SDK, and
    answers with the scripted behaviours first ("500", "timeout"), then 200."""

    def __init__(self, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.secret = ""
        self.accepted: list[stripe.Event] = []
        self.refused = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.lock:
                    behaviour = receiver.script.pop(0) if receiver.script else "ok"
                if behaviour == "timeout":
                    time.sleep(WEBHOOK_TIMEOUT_SECONDS + 1)
                    return
                if behaviour == "500":
                    receiver.refused += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                event = stripe.Webhook.construct_event(
                    payload, self.headers["Stripe-Signature"], receiver.secret
                )
                with receiver.lock:
                    receiver.accepted.append(event)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(e.id for e in self.accepted)
