"""Webhooks from a receiver's side: a push subscription delivers to a small HTTP server on
loopback, which verifies every delivery with the ``standardwebhooks`` package (the Standard
Webhooks reference library) and parses its body with the CloudEvents SDK, before, during and
after a secret rotation.

``scripts/python-tests`` starts the server allowed to reach loopback only
(``OPAL_PUSH_ALLOW_NETS=127.0.0.0/8,::1/128``, nothing else, no DNS).
"""

import http.server
import json
import os
import threading
import time
import uuid

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

URL = os.environ["OPAL_URL"]
KEY = os.environ["OPAL_KEY"]
WAIT_S = 20


class Receiver:
    """An HTTP server on 127.0.0.1:0 that answers 204 and keeps every request."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.requests.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, n):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} deliveries, got {len(self.requests)}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def client():
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=URL, headers=headers, timeout=15.0) as c:
        yield c


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hook(client, receiver):
    """A topic and a push subscription on it delivering to the receiver."""
    name = f"py-hook-{uuid.uuid4().hex[:12]}"
    assert client.put(f"/v1/topics/{name}", json={}).status_code == 201
    response = client.put(
        f"/v1/subscriptions/{name}",
        json={"topic": name, "push": {"url": receiver.url, "timeout_ms": 5000}},
    )
    assert response.status_code == 201, response.text
    yield name
    client.delete(f"/v1/subscriptions/{name}")
    client.delete(f"/v1/topics/{name}")


def publish(client, topic, values):
    messages = [{"data": v, "attributes": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}} for v in values]
    response = client.post(f"/v1/topics/{topic}/messages", json={"messages": messages})
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def secret_of(client, hook):
    response = client.get(f"/v1/subscriptions/{hook}/secret")
    assert response.status_code == 200, response.text
    return response.json()


def test_every_delivery_verifies_with_the_standard_webhooks_library(client, receiver, hook):
    secret = secret_of(client, hook)["secret"]
    ids = publish(client, hook, [{"n": 1}, {"n": 2}, {"n": 3}])
    deliveries = receiver.wait_for(3)
    seen = set()
    for headers, body in deliveries:
        payload = Webhook(secret).verify(body, headers)
        assert payload["specversion"] == "1.0"
        assert headers["webhook-id"] == payload["id"]
        seen.add(headers["webhook-id"])
        event = from_http_event(HTTPMessage(headers=headers, body=body))
        assert event.get_id() == headers["webhook-id"]
        assert event.get_extension("traceparent") is not None
        assert headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736")
    assert seen == set(ids)
    # A forged body or another secret does not verify.
    headers, body = deliveries[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=").verify(body, headers)


def test_both_secrets_verify_during_a_rotation(client, receiver, hook):
    old = secret_of(client, hook)["secret"]
    publish(client, hook, [{"before": True}])
    receiver.wait_for(1)
    response = client.post(f"/v1/subscriptions/{hook}/secret/rotate", json={"overlap_ms": 600000})
    assert response.status_code == 200, response.text
    new = response.json()["secret"]
    assert new != old and response.json()["previous"][0]["secret"] == old
    publish(client, hook, [{"during": True}])
    headers, body = receiver.wait_for(2)[1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers)["data"] == {"during": True}
    assert Webhook(new).verify(body, headers)["data"] == {"during": True}

    # Without an overlap the old secret stops at once.
    response = client.post(f"/v1/subscriptions/{hook}/secret/rotate", json={"overlap_ms": 0})
    newest = response.json()["secret"]
    publish(client, hook, [{"after": True}])
    headers, body = receiver.wait_for(3)[2]
    assert Webhook(newest).verify(body, headers)["data"] == {"after": True}
    for stale in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(body, headers)


def test_the_attempt_log_shows_each_delivery(client, receiver, hook):
    ids = publish(client, hook, [{"logged": 1}])
    receiver.wait_for(1)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        attempts = client.get(f"/v1/subscriptions/{hook}/attempts").json()["attempts"]
        if attempts:
            break
        time.sleep(0.05)
    assert attempts[0]["message_id"] == ids[0]
    assert attempts[0]["status"] == "succeeded"
    assert attempts[0]["status_code"] == 204
    assert attempts[0]["url"] == receiver.url
