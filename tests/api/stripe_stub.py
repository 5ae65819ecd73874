"""A local stub of the parts of Stripe's API the billing router calls (form-encoded POSTs, JSON answers, as
api.stripe.com does), and a webhook signer that follows Stripe's documented `Stripe-Signature` scheme."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

WEBHOOK_SECRET = "whsec_test_secret"


class StripeStub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []  # (path, form, headers)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = dict(parse_qsl(body, keep_blank_values=True))
                outer.requests.append((self.path, form, dict(self.headers)))
                if not (self.headers.get("Authorization") or "").startswith("Bearer sk_test_"):
                    return self._send(401, {"error": {"type": "invalid_request_error", "message": "bad key"}})
                if self.path == "/v1/customers":
                    return self._send(
                        200,
                        {
                            "id": f"cus_{uuid.uuid4().hex[:14]}",
                            "object": "customer",
                            "name": form.get("name"),
                        },
                    )
                if self.path == "/v1/checkout/sessions":
                    sid = f"cs_test_{uuid.uuid4().hex}"
                    return self._send(
                        200,
                        {
                            "id": sid,
                            "object": "checkout.session",
                            "mode": form.get("mode"),
                            "customer": form.get("customer"),
                            "url": f"https://checkout.stripe.test/c/pay/{sid}",
                        },
                    )
                if self.path == "/v1/billing_portal/sessions":
                    sid = f"bps_{uuid.uuid4().hex[:14]}"
                    return self._send(
                        200,
                        {
                            "id": sid,
                            "object": "billing_portal.session",
                            "customer": form.get("customer"),
                            "url": f"https://billing.stripe.test/p/session/{sid}",
                        },
                    )
                self._send(404, {"error": {"type": "invalid_request_error", "message": "no such route"}})

            def _send(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:10]}")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sign_webhook(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """`Stripe-Signature: t=…,v1=…` — HMAC-SHA256 of "{t}.{payload}" with the endpoint secret."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(event_type: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:20]}",
            "object": "event",
            "type": event_type,
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()
