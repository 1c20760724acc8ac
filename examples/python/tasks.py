"""The whole task cycle against a running Opal, with asyncio and httpx.

- a **producer** submits tasks (messages with a callback URL) to the topic ``thumbnails``;
- **workers** pull them from the subscription ``thumbnail-workers``, do the work, and ack each
  with its result (``data``) or why it failed (``error``);
- a small **callback receiver** gets every result as a signed POST from Opal and verifies it
  with the ``standardwebhooks`` package before trusting it.

Run it against a server that may call back to this machine (loopback is refused by default)::

    opal serve --push-allow-nets 127.0.0.0/8
    OPAL_URL=http://127.0.0.1:7400 OPAL_KEY=<admin or app key> python examples/python/tasks.py

Needs ``httpx`` and ``standardwebhooks`` (``pip install httpx standardwebhooks``).
"""

import asyncio
import http.server
import json
import os
import sys
import threading

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

URL = os.environ.get("OPAL_URL", "http://127.0.0.1:7400")
KEY = os.environ["OPAL_KEY"]
TOPIC = "thumbnails"
WORKERS = "thumbnail-workers"
IMAGES = ["cat.png", "dog.png", "broken.png", "bird.png"]


class CallbackReceiver:
    """An HTTP server on 127.0.0.1 that accepts only correctly signed results."""

    def __init__(self):
        self.webhook = None  # set once the secret is known
        self.results = {}  # task id -> callback body
        self.rejected = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    event = receiver.webhook.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                # The body is a CloudEvent; its data is the task's outcome.
                outcome = event["data"]
                with receiver.lock:
                    receiver.results[outcome["task_id"]] = outcome
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/results"


async def setup(opal):
    for path, body in [
        (f"/v1/topics/{TOPIC}", {}),
        (f"/v1/subscriptions/{WORKERS}", {"topic": TOPIC, "ack_deadline_ms": 30000}),
    ]:
        response = await opal.put(path, json=body)
        response.raise_for_status()


async def produce(opal, callback_url):
    """Submits one task per image; returns the task ids."""
    messages = [{"data": {"image": image}, "callback": {"url": callback_url}} for image in IMAGES]
    response = await opal.post(f"/v1/topics/{TOPIC}/messages", json={"messages": messages})
    response.raise_for_status()
    return [r["id"] for r in response.json()["results"]]


def make_thumbnail(image):
    if image.startswith("broken"):
        raise ValueError(f"{image} is not an image")
    return {"thumbnail": image.replace(".png", "-small.png"), "width": 128}


async def work(opal, stop):
    """Pulls tasks, does the work, and acks each with its result."""
    while not stop.is_set():
        response = await opal.post(
            f"/v1/subscriptions/{WORKERS}/pull", json={"max_messages": 10, "wait_ms": 1000}
        )
        response.raise_for_status()
        deliveries = response.json()["deliveries"]
        if not deliveries:
            continue
        results = {}
        for d in deliveries:
            try:
                results[d["ack_id"]] = {"data": make_thumbnail(d["message"]["data"]["image"])}
            except ValueError as e:
                results[d["ack_id"]] = {"error": str(e)}
        ack = await opal.post(
            f"/v1/subscriptions/{WORKERS}/ack",
            json={"ack_ids": [d["ack_id"] for d in deliveries], "results": results},
        )
        ack.raise_for_status()


async def main():
    headers = {"Authorization": f"Bearer {KEY}"}
    receiver = CallbackReceiver()
    async with httpx.AsyncClient(base_url=URL, headers=headers, timeout=30) as opal:
        await setup(opal)
        ids = await produce(opal, receiver.url)
        # Results are signed with the app's callback secret (the `opal.callbacks` subscription).
        secret = (await opal.get("/v1/subscriptions/opal.callbacks/secret")).json()["secret"]
        receiver.webhook = Webhook(secret)

        stop = asyncio.Event()
        workers = [asyncio.create_task(work(opal, stop)) for _ in range(2)]
        for _ in range(300):
            with receiver.lock:
                if all(i in receiver.results for i in ids):
                    break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*workers)

        missing = [i for i in ids if i not in receiver.results]
        if missing:
            print(f"no callback for {len(missing)} task(s): {missing}", file=sys.stderr)
            return 1
        for task_id, image in zip(ids, IMAGES):
            outcome = receiver.results[task_id]
            task = (await opal.get(f"/v1/tasks/{task_id}")).json()
            print(f"{image}: {outcome['state']} {json.dumps(outcome.get('data') or outcome.get('error'))}"
                  f" (task {task['state']}, callback {task['callback']['state']})")
        print(f"{len(ids)} results verified, {receiver.rejected} rejected")
        return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
