"""CloudEvents interoperability, from a third-party developer's side.

Events are built with the CloudEvents Python SDK (2.x API), published to a running Opal in
structured, batched and binary mode with httpx, pulled back with ``"format": "cloudevents"``,
and parsed with the SDK again: attributes and data must come back equal.

Needs ``OPAL_URL`` (e.g. ``http://127.0.0.1:7400``) and ``OPAL_KEY`` (the admin key);
``scripts/python-tests`` starts a server and sets both.
"""

import json
import os
import time
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from cloudevents.core.bindings.http import (
    HTTPMessage,
    from_http_event,
    to_binary_event,
    to_structured_event,
)
from cloudevents.core.v1.event import CloudEvent

URL = os.environ["OPAL_URL"]
KEY = os.environ["OPAL_KEY"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture
def client():
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=URL, headers=headers, timeout=15.0) as c:
        yield c


@pytest.fixture
def topic(client):
    """A fresh topic with a subscription of the same name."""
    name = f"py-{uuid.uuid4().hex[:12]}"
    response = client.put(f"/v1/topics/{name}", json={})
    assert response.status_code == 201, response.text
    response = client.put(f"/v1/subscriptions/{name}", json={"topic": name})
    assert response.status_code == 201, response.text
    return name


def event(data=None, **attributes):
    base = {
        "id": str(uuid.uuid4()),
        "source": "/python/tests",
        "type": "com.example.python.test",
        "time": datetime(2025, 11, 27, 13, 32, 5, 123456, tzinfo=timezone.utc),
    }
    base.update(attributes)
    return CloudEvent(attributes=base, data=data)


def publish(client, topic, message: HTTPMessage, extra_headers=None) -> dict:
    headers = dict(message.headers)
    headers.update(extra_headers or {})
    response = client.post(
        f"/v1/topics/{topic}/messages", headers=headers, content=message.body
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"results"}, answer
    return answer


def pull_events(client, topic, expected):
    """Pulls (for at most 15 s) until `expected` deliveries came, acks them, and parses each
    delivered event with the SDK, as a structured-mode HTTP message."""
    deliveries = []
    deadline = time.monotonic() + 15
    while len(deliveries) < expected and time.monotonic() < deadline:
        response = client.post(
            f"/v1/subscriptions/{topic}/pull",
            json={"max_messages": 100, "wait_ms": 1000, "format": "cloudevents"},
        )
        assert response.status_code == 200, response.text
        deliveries += response.json()["deliveries"]
    assert len(deliveries) == expected, deliveries
    for delivery in deliveries:
        assert set(delivery) == {"ack_id", "attempt", "event"}, delivery
        assert delivery["attempt"] == 1
    response = client.post(
        f"/v1/subscriptions/{topic}/ack",
        json={"ack_ids": [d["ack_id"] for d in deliveries]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["acked"] == expected
    return [
        from_http_event(
            HTTPMessage(
                headers={"content-type": STRUCTURED},
                body=json.dumps(d["event"]).encode(),
            )
        )
        for d in deliveries
    ]


def assert_same(got, sent):
    assert got.get_attributes() == sent.get_attributes()
    assert got.get_data() == sent.get_data()


def test_structured_events_round_trip(client, topic):
    sent = [
        event(
            {"order": 42, "items": [1, 2.5], "note": "caf\u00e9"},
            subject="order/42",
            dataschema="https://example.com/schemas/order",
            datacontenttype="application/json",
            region="eu",
            count=42,
            urgent=True,
            traceparent=TRACEPARENT,
        ),
        event(bytes(range(256)), datacontenttype="application/octet-stream"),
        event("plain text", datacontenttype="text/plain"),
        event(),  # no data at all
    ]
    for e in sent:
        publish(client, topic, to_structured_event(e))
    got = pull_events(client, topic, len(sent))
    for g, s in zip(got, sent):
        assert_same(g, s)
    assert got[0].get_extension("count") == 42
    assert got[0].get_extension("urgent") is True
    assert got[3].get_data() is None


def test_a_batch_of_structured_events(client, topic):
    sent = [event({"n": n}) for n in range(3)]
    body = json.dumps([json.loads(to_structured_event(e).body) for e in sent])
    response = client.post(
        f"/v1/topics/{topic}/messages",
        headers={"content-type": BATCH},
        content=body.encode(),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["offset"] for r in results] == [0, 1, 2]
    for g, s in zip(pull_events(client, topic, 3), sent):
        assert_same(g, s)


def test_binary_mode_events_round_trip(client, topic):
    sent = [
        event({"celsius": 21.5}, datacontenttype="application/json", sensor="t-7"),
        event(b"\x89PNG\r\n\x1a\n\x00", datacontenttype="image/png",
              subject="r\u00e9sum\u00e9 with spaces & \"quotes\" 100%"),
        event(traceparent=TRACEPARENT),
    ]
    for e in sent:
        message = to_binary_event(e)
        assert any(h.startswith("ce-") for h in message.headers)
        publish(client, topic, message)
    got = pull_events(client, topic, len(sent))
    for g, s in zip(got, sent):
        assert_same(g, s)


def test_binary_mode_extensions_come_back_as_strings(client, topic):
    # Headers carry no JSON types: a number sent in binary mode is the string "7" afterwards.
    publish(client, topic, to_binary_event(event({"x": 1}, count=7)))
    [got] = pull_events(client, topic, 1)
    assert got.get_extension("count") == "7"


def test_the_event_id_makes_a_retry_a_duplicate(client, topic):
    e = event({"order": 1})
    first = publish(client, topic, to_structured_event(e))["results"][0]
    again = publish(client, topic, to_structured_event(e))["results"][0]
    assert first["duplicate"] is False
    assert again["duplicate"] is True
    assert again["id"] == first["id"]
    # The same event in binary mode is the same event too.
    binary = publish(client, topic, to_binary_event(e))["results"][0]
    assert binary["duplicate"] is True
    [got] = pull_events(client, topic, 1)
    assert_same(got, e)


def test_the_traceparent_header_becomes_the_extension(client, topic):
    e = event({"traced": True})
    publish(client, topic, to_structured_event(e), {"traceparent": TRACEPARENT})
    [got] = pull_events(client, topic, 1)
    assert got.get_extension("traceparent") == TRACEPARENT
    assert got.get_data() == {"traced": True}
    response = client.post(
        f"/v1/topics/{topic}/messages",
        headers={**to_structured_event(event()).headers, "traceparent": "00-bad"},
        content=to_structured_event(event()).body,
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["header"] == "traceparent"


def test_plain_messages_are_delivered_as_events(client, topic):
    response = client.post(
        f"/v1/topics/{topic}/messages",
        json={"messages": [{"data": {"plain": 1}, "key": "k", "attributes": {"kind": "x"}}]},
    )
    assert response.status_code == 200, response.text
    message_id = response.json()["results"][0]["id"]
    response = client.post(
        f"/v1/topics/{topic}/messages",
        headers={"content-type": "text/csv", "opal-attr-rows": "2"},
        content=b"a,b\n1,2\n",
    )
    assert response.status_code == 200, response.text
    got = pull_events(client, topic, 2)
    assert got[0].get_id() == message_id
    assert got[0].get_source() == f"/topics/{topic}"
    assert got[0].get_type() == "opal.message"
    assert got[0].get_datacontenttype() == "application/json"
    assert got[0].get_time() is not None
    assert got[0].get_extension("partitionkey") == "k"
    assert got[0].get_extension("kind") == "x"
    assert got[0].get_data() == {"plain": 1}
    assert got[1].get_datacontenttype() == "text/csv"
    assert got[1].get_extension("rows") == "2"
    assert got[1].get_data() == b"a,b\n1,2\n"


def test_an_invalid_event_is_a_problem_with_pointers(client, topic):
    body = {"specversion": "1.0", "id": "", "source": "/s", "type": "t", "Bad": 1}
    response = client.post(
        f"/v1/topics/{topic}/messages",
        headers={"content-type": STRUCTURED},
        content=json.dumps(body).encode(),
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    pointers = sorted(e["pointer"] for e in response.json()["errors"])
    assert pointers == ["/Bad", "/id"]


def sse_events(client, topic, expected):
    """Reads `expected` deliveries from the subscription's SSE stream with
    ``format=cloudevents`` (for at most 15 s), acks them, and parses each with the SDK."""
    deliveries = []
    with client.stream(
        "GET",
        f"/v1/subscriptions/{topic}/events",
        params={"format": "cloudevents"},
        timeout=httpx.Timeout(15.0),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event_name, data, event_id = None, [], None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event_name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].lstrip())
            elif line.startswith("id:"):
                event_id = line[len("id:") :].strip()
            elif line == "":
                if event_name == "delivery":
                    delivery = json.loads("\n".join(data))
                    assert delivery["ack_id"] == event_id
                    deliveries.append(delivery)
                    if len(deliveries) == expected:
                        break
                event_name, data, event_id = None, [], None
    for delivery in deliveries:
        assert set(delivery) == {"ack_id", "attempt", "event"}, delivery
    response = client.post(
        f"/v1/subscriptions/{topic}/ack",
        json={"ack_ids": [d["ack_id"] for d in deliveries]},
    )
    assert response.json()["acked"] == expected
    return [
        from_http_event(
            HTTPMessage(
                headers={"content-type": STRUCTURED},
                body=json.dumps(d["event"]).encode(),
            )
        )
        for d in deliveries
    ]


def test_events_come_back_the_same_over_the_sse_stream(client, topic):
    sent = [
        event({"n": 1}, datacontenttype="application/json", region="eu", count=7),
        event(b"\x00\x01binary", datacontenttype="application/octet-stream"),
    ]
    for e in sent:
        publish(client, topic, to_structured_event(e))
    got = sse_events(client, topic, len(sent))
    for g, s in zip(got, sent):
        assert_same(g, s)


def test_an_unknown_stream_format_is_a_problem(client, topic):
    response = client.get(
        f"/v1/subscriptions/{topic}/events", params={"format": "xml"}
    )
    assert response.status_code == 400
    problem = response.json()
    assert problem["errors"][0]["parameter"] == "format", problem
