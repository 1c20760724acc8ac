//! The SSE and WebSocket streams, with real clients (reqwest + eventsource-stream,
//! tokio-tungstenite) against `run()` on a real socket and the embedded backend.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource as _};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use opal_core::Broker;
use opal_server::ServerError;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::support::{KEY, open_broker, server_config};

/// How long any single wait for the server may take before the test fails.
const WITHIN: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(800);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `run()` on 127.0.0.1:0 with a fresh embedded broker.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
    http: reqwest::Client,
    _broker: Arc<dyn Broker>,
    _dir: TempDir,
}

impl Server {
    async fn start() -> Self {
        let (dir, broker) = open_broker();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(opal_server::run(
            listener,
            server_config(),
            broker.clone(),
            broker.clone(),
            shutdown.clone(),
        ));
        Server {
            addr,
            shutdown,
            task,
            http: reqwest::Client::new(),
            _broker: broker,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header(AUTHORIZATION, format!("Bearer {KEY}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = timeout(WITHIN, request.send()).await.unwrap().unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// A topic and a subscription on it, both named `name`.
    async fn topic_and_subscription(&self, name: &str, ack_deadline_ms: u64) {
        let put = reqwest::Method::PUT;
        self.send(put.clone(), &format!("/v1/topics/{name}"), Some(json!({})))
            .await;
        let body = json!({"topic": name, "ack_deadline_ms": ack_deadline_ms});
        self.send(put, &format!("/v1/subscriptions/{name}"), Some(body))
            .await;
    }

    /// Publishes `{"n": i}` for each `i` in `range`.
    async fn publish_numbers(&self, topic: &str, range: std::ops::Range<u64>) {
        let messages: Vec<Value> = range.map(|n| json!({"data": {"n": n}})).collect();
        self.post(
            &format!("/v1/topics/{topic}/messages"),
            json!({ "messages": messages }),
        )
        .await;
    }

    async fn stats(&self, subscription: &str) -> Value {
        let path = format!("/v1/subscriptions/{subscription}");
        self.send(reqwest::Method::GET, &path, None).await["stats"].clone()
    }

    async fn ack(&self, subscription: &str, ack_ids: &[String]) -> Value {
        let path = format!("/v1/subscriptions/{subscription}/ack");
        self.post(&path, json!({ "ack_ids": ack_ids })).await
    }

    /// `GET` on a stream endpoint, with or without the key; the response as it comes.
    async fn get(&self, path: &str, authed: bool) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if authed {
            request = request.header(AUTHORIZATION, format!("Bearer {KEY}"));
        }
        timeout(WITHIN, request.send()).await.unwrap().unwrap()
    }

    /// An open SSE stream of a subscription, checked to be one.
    async fn events(&self, subscription: &str) -> impl Stream<Item = Event> + Unpin + use<> {
        let response = self
            .get(&format!("/v1/subscriptions/{subscription}/events"), true)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        response
            .bytes_stream()
            .eventsource()
            .map(|event| event.expect("a well-formed event"))
    }

    async fn websocket(&self, path: &str) -> Ws {
        let request = ws_request(self.addr, path, true);
        let (ws, _) = timeout(WITHIN, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .expect("upgraded");
        ws
    }

    /// Cancels the token and waits for `run` to return.
    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WITHIN, self.task)
            .await
            .expect("run returned after shutdown")
            .unwrap()
            .expect("run ended without error");
    }
}

fn ws_request(
    addr: SocketAddr,
    path: &str,
    authed: bool,
) -> tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if authed {
        let value = format!("Bearer {KEY}").parse().unwrap();
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    request
}

/// The next SSE event, which must come within [`WITHIN`].
async fn next_event(events: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    timeout(WITHIN, events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// A `delivery` event's data, checked against its `id`.
fn delivery_of(event: &Event) -> Value {
    assert_eq!(event.event, "delivery", "{event:?}");
    let delivery: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(delivery["ack_id"], event.id.as_str(), "{event:?}");
    delivery
}

/// The next text frame as JSON (pings and pongs skipped), within [`WITHIN`].
async fn next_json(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let frame = timeout(deadline - Instant::now(), ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a readable frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Asserts that no text frame arrives for [`QUIET`].
async fn assert_quiet(ws: &mut Ws) {
    if let Ok(frame) = timeout(QUIET, ws.next()).await {
        panic!("expected nothing, got {frame:?}");
    }
}

async fn send_json(ws: &mut Ws, frame: Value) {
    timeout(WITHIN, ws.send(Message::text(frame.to_string())))
        .await
        .unwrap()
        .unwrap();
}

/// The close frame that must come next (pings and pongs skipped); the connection ends after it.
async fn expect_close(ws: &mut Ws) -> CloseFrame {
    let deadline = Instant::now() + WITHIN;
    loop {
        let frame = timeout(deadline - Instant::now(), ws.next())
            .await
            .expect("a frame in time")
            .expect("the close frame comes before the end")
            .expect("a readable frame");
        match frame {
            Message::Close(Some(close)) => return close,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn ack_ids(deliveries: &[Value]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d["ack_id"].as_str().unwrap().to_owned())
        .collect()
}

fn numbers(deliveries: &[Value]) -> BTreeSet<u64> {
    deliveries
        .iter()
        .map(|d| d["message"]["data"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn sse_sends_each_delivery_as_an_event_whose_id_is_the_ack_id() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    server.publish_numbers("s", 0..5).await;

    let mut events = server.events("s").await;
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        let delivery = delivery_of(&next_event(&mut events).await);
        assert_eq!(delivery["attempt"], 1, "{delivery}");
        assert_eq!(delivery["message"]["topic"], "s", "{delivery}");
        deliveries.push(delivery);
    }
    assert_eq!(numbers(&deliveries), (0..5).collect());
    // The same JSON as a pull's `deliveries` elements: exactly these members.
    let members: BTreeSet<&str> = deliveries[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(members, BTreeSet::from(["ack_id", "attempt", "message"]));
    assert_eq!(server.stats("s").await["in_flight"], 5);

    let acked = server.ack("s", &ack_ids(&deliveries)).await;
    assert_eq!(acked["acked"], 5, "{acked}");
    if let Ok(more) = timeout(QUIET, events.next()).await {
        panic!("nothing more should arrive, got {more:?}");
    }
    let stats = server.stats("s").await;
    assert_eq!(
        (stats["in_flight"].as_u64(), stats["acked"].as_u64()),
        (Some(0), Some(5))
    );

    // Published while the stream is open: it arrives without a new request.
    server.publish_numbers("s", 5..6).await;
    let late = delivery_of(&next_event(&mut events).await);
    assert_eq!(late["message"]["data"]["n"], 5, "{late}");
    server.stop().await;
}

#[tokio::test]
async fn streams_answer_problems_before_they_start() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    for path in ["/v1/subscriptions/s/events", "/v1/subscriptions/s/ws"] {
        let response = server.get(path, false).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
    for path in ["/v1/subscriptions/nope/events", "/v1/subscriptions/nope/ws"] {
        let response = server.get(path, true).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "urn:opal:problem:not-found", "{body}");
    }
    for (path, parameter) in [
        ("/v1/subscriptions/s/events?batch=0", "batch"),
        ("/v1/subscriptions/s/events?batch=101", "batch"),
        ("/v1/subscriptions/s/events?bach=5", "bach"),
        ("/v1/subscriptions/s/events?batch=1&batch=2", "batch"),
        ("/v1/subscriptions/s/ws?credits=many", "credits"),
        ("/v1/subscriptions/s/ws?credits=10001", "credits"),
    ] {
        let response = server.get(path, true).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["parameter"], parameter, "{path}: {body}");
    }
    // A plain GET on the WebSocket endpoint (no upgrade) is a problem too.
    let response = server.get("/v1/subscriptions/s/ws", true).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");

    // And through a real WebSocket client: the handshake is refused with the problem.
    for (path, authed, status) in [
        ("/v1/subscriptions/s/ws", false, 401),
        ("/v1/subscriptions/nope/ws", true, 404),
    ] {
        let request = ws_request(server.addr, path, authed);
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{path}");
                let body: Value = serde_json::from_slice(response.body().as_deref().unwrap())
                    .expect("a problem body");
                assert_eq!(body["status"], status, "{body}");
            }
            other => panic!("{path}: expected an HTTP refusal, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn sse_sends_a_retry_hint_and_ends_when_the_server_shuts_down() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    server.publish_numbers("s", 0..1).await;
    let response = server.get("/v1/subscriptions/s/events", true).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: delivery") {
        let chunk = timeout(WITHIN, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("retry: 3000\n\n"), "{text:?}");

    let Server { shutdown, task, .. } = server;
    shutdown.cancel();
    let rest = timeout(WITHIN, async {
        let mut chunks = 0;
        while let Some(chunk) = body.next().await {
            chunk.expect("the stream ends cleanly");
            chunks += 1;
        }
        chunks
    })
    .await
    .expect("the stream ends when the server shuts down");
    assert!(
        rest <= 1,
        "nothing but a keep-alive after the delivery ({rest} chunks)"
    );
    timeout(WITHIN, task)
        .await
        .expect("run returned")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn sse_reconnects_continue_with_what_is_unacked() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 1_000).await;
    server.publish_numbers("s", 0..3).await;

    let mut events = server.events("s").await;
    let first = delivery_of(&next_event(&mut events).await);
    let second = next_event(&mut events).await;
    server
        .ack("s", &ack_ids(std::slice::from_ref(&first)))
        .await;
    drop(events);

    // `Last-Event-ID` is accepted and does not position anything: the two unacked messages come
    // back after their ack deadline (1 s), the acked one never does.
    let response = server
        .http
        .get(server.url("/v1/subscriptions/s/events"))
        .header(AUTHORIZATION, format!("Bearer {KEY}"))
        .header("Last-Event-ID", &second.id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response.bytes_stream().eventsource().map(Result::unwrap);
    let again = [
        delivery_of(&next_event(&mut events).await),
        delivery_of(&next_event(&mut events).await),
    ];
    let first_n = first["message"]["data"]["n"].as_u64().unwrap();
    let expected: BTreeSet<u64> = (0..3).filter(|n| *n != first_n).collect();
    assert_eq!(numbers(&again), expected);
    assert!(again.iter().all(|d| d["attempt"] == 2), "{again:?}");
    server.ack("s", &ack_ids(&again)).await;
    if let Ok(more) = timeout(Duration::from_millis(1_500), events.next()).await {
        panic!("all acked, nothing should come back, got {more:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn sse_stops_pulling_when_the_client_disconnects() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    server.publish_numbers("s", 0..1).await;
    let mut events = server.events("s").await;
    next_event(&mut events).await;
    drop(events);
    // Time for the server to see the connection close.
    sleep(Duration::from_millis(500)).await;

    // A pull loop left running would lease these before the pull below (it is already waiting).
    server.publish_numbers("s", 1..31).await;
    let mut pulled = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while pulled.len() < 30 && Instant::now() < deadline {
        let body = json!({"max_messages": 100, "wait_ms": 200});
        let answer = server.post("/v1/subscriptions/s/pull", body).await;
        pulled.extend(answer["deliveries"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(numbers(&pulled), (1..31).collect());
    assert_eq!(server.stats("s").await["delivered"], 31);
    server.stop().await;
}

#[tokio::test]
async fn sse_a_client_that_stops_reading_stops_the_pulling() {
    const MESSAGES: usize = 20_000;
    let server = Server::start().await;
    server.topic_and_subscription("s", 600_000).await;
    server.publish_numbers("s", 0..1).await;
    let mut events = server.events("s").await;
    next_event(&mut events).await;

    // 20k messages of 1 KiB while the client reads nothing.
    let payload = "x".repeat(1024);
    for _ in 0..MESSAGES / 1000 {
        let batch: Vec<Value> = (0..1000).map(|_| json!({ "data": payload })).collect();
        server
            .post("/v1/topics/s/messages", json!({ "messages": batch }))
            .await;
    }
    // Wait until the stream stops leasing (no change for 2 s), at most 30 s.
    let (mut last, mut since) = (u64::MAX, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(30);
    while since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        sleep(Duration::from_millis(200)).await;
        let in_flight = server.stats("s").await["in_flight"].as_u64().unwrap();
        if in_flight != last {
            (last, since) = (in_flight, Instant::now());
        }
    }
    let stats = server.stats("s").await;
    let in_flight = stats["in_flight"].as_u64().unwrap();
    eprintln!("in flight with a stalled reader: {in_flight}");
    assert!(in_flight <= BOUND, "the stream kept pulling: {stats}");
    assert!(
        stats["backlog"].as_u64().unwrap() > MESSAGES as u64 - BOUND,
        "{stats}"
    );

    // Reading again, the stream goes on.
    for _ in 0..100 {
        delivery_of(&next_event(&mut events).await);
    }
    // A client that holds thousands of unread events would hold up the drain (the caller of
    // `run` bounds it); this one leaves first.
    drop(events);
    server.stop().await;
}

/// Deliveries a stalled SSE reader may hold leased. What bounds them is the socket buffers (on
/// Linux the send buffer grows to `net.ipv4.tcp_wmem` max, 4 MiB by default) plus the stream's
/// own two batches: about 3000 events of 1.3 KiB were measured; 8 MiB worth is the limit here.
const BOUND: u64 = 6_000;

#[tokio::test]
async fn ws_sends_only_against_credits_and_acks_over_the_socket() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    server.publish_numbers("s", 0..5).await;

    let mut ws = server.websocket("/v1/subscriptions/s/ws").await;
    assert_quiet(&mut ws).await;
    assert_eq!(
        server.stats("s").await["in_flight"],
        0,
        "nothing pulled without credits"
    );

    send_json(&mut ws, json!({"type": "credit", "n": 3})).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["type"], "delivery", "{frame}");
        assert_eq!(frame["attempt"], 1, "{frame}");
        deliveries.push(frame);
    }
    assert_quiet(&mut ws).await;
    assert_eq!(server.stats("s").await["in_flight"], 3);

    send_json(
        &mut ws,
        json!({"type": "ack", "ack_ids": ack_ids(&deliveries)}),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(
        reply,
        json!({"type": "acked", "applied": 3, "rejected": []})
    );
    assert_eq!(server.stats("s").await["acked"], 3);

    send_json(&mut ws, json!({"type": "credit", "n": 10})).await;
    let rest = [next_json(&mut ws).await, next_json(&mut ws).await];
    let all: Vec<Value> = deliveries.iter().chain(&rest).cloned().collect();
    assert_eq!(numbers(&all), (0..5).collect());
    // Unused credits are kept: a message published later is sent at once.
    server.publish_numbers("s", 5..6).await;
    assert_eq!(next_json(&mut ws).await["message"]["data"]["n"], 5);
    server.stop().await;
}

#[tokio::test]
async fn ws_nack_redelivers_when_credits_allow_and_extend_answers() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    server.publish_numbers("s", 0..1).await;
    let mut ws = server.websocket("/v1/subscriptions/s/ws?credits=1").await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["attempt"], 1, "{first}");

    let ids = ack_ids(std::slice::from_ref(&first));
    send_json(
        &mut ws,
        json!({"type": "nack", "ack_ids": ids, "delay_ms": 0}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "nacked", "applied": 1, "rejected": []})
    );
    // Ready again at once, but the credit is spent.
    assert_quiet(&mut ws).await;

    send_json(&mut ws, json!({"type": "credit", "n": 1})).await;
    let second = next_json(&mut ws).await;
    assert_eq!(second["attempt"], 2, "{second}");
    assert_eq!(second["message"]["id"], first["message"]["id"]);
    assert_ne!(second["ack_id"], first["ack_id"]);

    let ids = ack_ids(std::slice::from_ref(&second));
    let extend = json!({"type": "extend", "ack_ids": ids, "ack_deadline_ms": 120_000});
    send_json(&mut ws, extend).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "extended", "applied": 1, "rejected": []})
    );
    server.stop().await;
}

#[tokio::test]
async fn ws_malformed_frames_get_error_frames_and_the_connection_stays() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    let mut ws = server.websocket("/v1/subscriptions/s/ws").await;
    let bad = [
        (Message::text("not json"), "not a JSON object"),
        (Message::text(r#"{"type":"bogus"}"#), "unknown frame type"),
        (Message::text(r#"{"n":1}"#), "no `type`"),
        (Message::text(r#"{"type":"credit","n":0}"#), "at least 1"),
        (
            Message::text(r#"{"type":"credit","n":10001}"#),
            "at most 10000",
        ),
        (
            Message::text(r#"{"type":"ack","ack_ids":[]}"#),
            "1 to 1000 ack ids",
        ),
        (
            Message::text(r#"{"type":"ack","ack_ids":["a"],"x":1}"#),
            "unknown field `x`",
        ),
        (
            Message::text(r#"{"type":"extend","ack_ids":["a"],"ack_deadline_ms":1}"#),
            "between 100 and",
        ),
    ];
    for (frame, says) in bad {
        timeout(WITHIN, ws.send(frame.clone()))
            .await
            .unwrap()
            .unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error", "{frame:?}: {reply}");
        assert_eq!(reply["status"], 400, "{frame:?}: {reply}");
        let detail = reply["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{frame:?}: {reply}");
    }
    // Still open, and the refused credit frames added nothing: one credit, one delivery.
    server.publish_numbers("s", 0..2).await;
    send_json(&mut ws, json!({"type": "credit", "n": 1})).await;
    assert_eq!(next_json(&mut ws).await["type"], "delivery");
    assert_quiet(&mut ws).await;

    timeout(WITHIN, ws.send(Message::binary(vec![1, 2, 3])))
        .await
        .unwrap()
        .unwrap();
    let close = expect_close(&mut ws).await;
    assert_eq!(u16::from(close.code), 1003, "{close:?}");
    server.stop().await;
}

#[tokio::test]
async fn ws_a_message_over_1_mib_is_closed_with_1008() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    let mut ws = server.websocket("/v1/subscriptions/s/ws").await;
    // Exactly 1 MiB is still read (and refused as JSON); one byte more closes the connection.
    let limit = 1024 * 1024;
    send_json(&mut ws, Value::String("x".repeat(limit - 2))).await;
    assert_eq!(next_json(&mut ws).await["status"], 400);
    let too_big = Message::text("x".repeat(limit + 1));
    // The server may stop reading midway; what was sent does not matter, the close does.
    let _ = timeout(Duration::from_secs(2), ws.send(too_big)).await;
    let close = expect_close(&mut ws).await;
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    server.stop().await;
}

#[tokio::test]
async fn ws_closes_with_1001_when_the_server_shuts_down() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    let mut ws = server.websocket("/v1/subscriptions/s/ws?credits=5").await;
    assert_quiet(&mut ws).await;
    let Server { shutdown, task, .. } = server;
    shutdown.cancel();
    let close = expect_close(&mut ws).await;
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    // The close handshake completes and the connection ends.
    let end = timeout(WITHIN, ws.next())
        .await
        .expect("the connection ends");
    assert!(
        matches!(end, None | Some(Err(tungstenite::Error::ConnectionClosed))),
        "{end:?}"
    );
    timeout(WITHIN, task)
        .await
        .expect("run returned")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn streams_deliver_cloudevents_when_asked() {
    let server = Server::start().await;
    server.topic_and_subscription("s", 60_000).await;
    server.publish_numbers("s", 0..2).await;

    let response = server
        .get("/v1/subscriptions/s/events?format=cloudevents", true)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = response
        .bytes_stream()
        .eventsource()
        .map(|event| event.expect("a well-formed event"));
    let delivery = loop {
        let event = next_event(&mut events).await;
        if event.event == "delivery" {
            break delivery_of(&event);
        }
    };
    assert_eq!(delivery["attempt"], 1, "{delivery}");
    assert_eq!(delivery["event"]["specversion"], "1.0", "{delivery}");
    assert_eq!(delivery["event"]["data"]["n"], 0, "{delivery}");
    assert!(delivery.get("message").is_none(), "{delivery}");
    drop(events);
    // The SSE stream leased both; the WebSocket gets new ones.
    server.publish_numbers("s", 2..3).await;

    let mut ws = server
        .websocket("/v1/subscriptions/s/ws?credits=2&format=cloudevents")
        .await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["type"], "delivery", "{frame}");
    assert_eq!(frame["event"]["specversion"], "1.0", "{frame}");
    assert!(frame["event"]["id"].is_string(), "{frame}");
    assert!(frame.get("message").is_none(), "{frame}");

    for path in [
        "/v1/subscriptions/s/events?format=xml",
        "/v1/subscriptions/s/ws?format=",
    ] {
        let response = server.get(path, true).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["parameter"], "format", "{problem}");
    }
    server.stop().await;
}
