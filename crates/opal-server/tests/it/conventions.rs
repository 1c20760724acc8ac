//! The HTTP conventions every route shares: CORS, response compression, compressed request
//! bodies (and their size limit), the request-body deadline, and `Retry-After` on `503`.
//!
//! Compressed request bodies are made, and compressed responses read, with tower-http's own
//! compression and decompression services, run here as plain clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{
    ACCEPT_ENCODING, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, CONTENT_ENCODING,
    CONTENT_TYPE, ORIGIN, RETRY_AFTER, VARY,
};
use axum::http::{HeaderMap, Request, Response, StatusCode};
use futures_util::StreamExt as _;
use opal_server::{ServerConfig, ServerError};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;
use tower::{Layer as _, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::decompression::DecompressionLayer;

use crate::support::{KEY, TestApp, TestResponse, authed, open_broker, server_config};

/// How long any single wait for the server may take before the test fails.
const WITHIN: Duration = Duration::from_secs(10);

const PUBLISH: &str = "/v1/topics/t/messages";
const APP_ORIGIN: &str = "https://app.example.com";

// ---------------------------------------------------------------------------------------------
// CORS

fn cors_app(origins: &[&str]) -> TestApp {
    TestApp::with_config(|c| c.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect())
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method("OPTIONS")
        .uri(PUBLISH)
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type,idempotency-key,traceparent,ce-type,ce-source",
        )
        .body(Body::empty())
        .unwrap()
}

fn header<'a>(response: &'a TestResponse, name: &axum::http::HeaderName) -> Option<&'a str> {
    response.headers.get(name).map(|v| v.to_str().unwrap())
}

fn no_cors_headers(response: &TestResponse) -> bool {
    !response
        .headers
        .keys()
        .any(|name| name.as_str().starts_with("access-control-allow"))
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_without_a_key() {
    let app = cors_app(&[APP_ORIGIN]);
    let response = app.send(preflight(APP_ORIGIN)).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(APP_ORIGIN)
    );
    let methods = header(&response, &ACCESS_CONTROL_ALLOW_METHODS).unwrap();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    // Mirrored: `ce-*` cannot be listed in advance, and `*` would not cover `Authorization`.
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_HEADERS),
        Some("authorization,content-type,idempotency-key,traceparent,ce-type,ce-source")
    );
    assert_eq!(header(&response, &ACCESS_CONTROL_MAX_AGE), Some("3600"));
    let vary: Vec<_> = response.headers.get_all(VARY).iter().collect();
    assert!(
        vary.iter().any(|v| v.to_str().unwrap().contains("origin")),
        "{vary:?}"
    );
}

#[tokio::test]
async fn an_allowed_origin_can_read_answers_and_errors() {
    let app = cors_app(&[APP_ORIGIN, "https://other.example.com"]);
    app.create_topic("t").await;
    let request = authed("GET", "/v1/topics/t")
        .header(ORIGIN, APP_ORIGIN)
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(APP_ORIGIN)
    );
    let exposed = header(&response, &ACCESS_CONTROL_EXPOSE_HEADERS)
        .unwrap()
        .to_ascii_lowercase();
    for name in ["etag", "link", "retry-after", "x-request-id"] {
        assert!(exposed.contains(name), "{exposed}");
    }

    // An error is readable too: the page learns it needs a key.
    let request = Request::builder()
        .uri("/v1/topics/t")
        .header(ORIGIN, "https://other.example.com")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    response.problem(401, "unauthorized");
    assert_eq!(
        header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
        Some("https://other.example.com")
    );
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers() {
    let app = cors_app(&[APP_ORIGIN]);
    app.create_topic("t").await;
    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
    ] {
        let response = app.send(preflight(origin)).await;
        assert_eq!(
            header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
            None,
            "{origin}"
        );

        let request = authed("GET", "/v1/topics/t")
            .header(ORIGIN, origin)
            .body(Body::empty())
            .unwrap();
        let response = app.send(request).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(
            header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN),
            None,
            "{origin}"
        );
    }
}

#[tokio::test]
async fn without_configured_origins_there_is_no_cors_at_all() {
    let app = TestApp::new();
    app.create_topic("t").await;
    let response = app.send(preflight(APP_ORIGIN)).await;
    assert!(no_cors_headers(&response), "{response:?}");
    // Not answered as a preflight: it reaches the API, which wants a key.
    response.problem(401, "unauthorized");

    let request = authed("GET", "/v1/topics/t")
        .header(ORIGIN, APP_ORIGIN)
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(no_cors_headers(&response), "{response:?}");
}

#[tokio::test]
async fn a_star_allows_every_origin() {
    let app = cors_app(&["*"]);
    let response = app.send(preflight("https://anyone.example")).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(header(&response, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
}

#[tokio::test]
async fn invalid_settings_are_refused_by_validate_and_run() {
    let valid = |origins: &[&str]| {
        let mut config = server_config();
        config.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect();
        config.validate()
    };
    for origins in [
        &["*"][..],
        &["https://app.example.com"],
        &["https://App.Example.com/", "http://localhost:5173"],
        &[],
    ] {
        assert!(valid(origins).is_ok(), "{origins:?}: {:?}", valid(origins));
    }
    for origin in [
        "app.example.com",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "null",
        "https://",
        "",
    ] {
        let err = valid(&[origin]).expect_err(origin);
        assert!(err.to_string().contains("CORS origin"), "{err}");
    }
    let mut config = server_config();
    config.request_timeout_ms = 0;
    assert!(config.validate().is_err());
    let mut config = server_config();
    config.header_timeout_ms = 0;
    assert!(matches!(
        config.validate(),
        Err(opal_server::ConfigError::HeaderTimeout)
    ));

    let (_dir, broker) = open_broker();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = server_config();
    config.cors_origins = vec!["app.example.com".to_owned()];
    let result = timeout(
        WITHIN,
        opal_server::run(
            listener,
            config,
            broker.clone(),
            broker,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("run refuses at once");
    assert!(matches!(result, Err(ServerError::Config(_))), "{result:?}");
}

// ---------------------------------------------------------------------------------------------
// Response compression

/// A topic with enough messages that reading them is well over 1 KiB of JSON.
async fn app_with_messages(adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let app = TestApp::with_config(adjust);
    app.create_topic_and_subscription("t", 30_000).await;
    let messages: Vec<Value> = (0..40)
        .map(|n| json!({"data": {"n": n, "text": "the same few words, over and over"}}))
        .collect();
    app.publish("t", json!(messages)).await;
    app
}

const BROWSE: &str = "/v1/topics/t/messages?partition=0&from_offset=0&limit=100";

async fn get_with(app: &TestApp, uri: &str, accept_encoding: &str) -> TestResponse {
    let request = authed("GET", uri)
        .header(ACCEPT_ENCODING, accept_encoding)
        .body(Body::empty())
        .unwrap();
    app.send(request).await
}

/// Decodes a compressed response body with tower-http's client-side decompression.
async fn decompress(headers: &HeaderMap, body: Bytes) -> Bytes {
    let coding = headers[CONTENT_ENCODING].clone();
    let service = DecompressionLayer::new().layer(tower::service_fn(move |_: Request<Body>| {
        let response = Response::builder()
            .header(CONTENT_ENCODING, coding.clone())
            .body(Body::from(body.clone()))
            .unwrap();
        async move { Ok::<_, Infallible>(response) }
    }));
    let response = service.oneshot(Request::new(Body::empty())).await.unwrap();
    assert!(!response.headers().contains_key(CONTENT_ENCODING));
    axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .expect("decodes")
}

/// Encodes `data` with `coding` (`gzip` or `zstd`) using tower-http's response compression.
async fn compress(coding: &str, data: Vec<u8>) -> Vec<u8> {
    let data = Bytes::from(data);
    let service = CompressionLayer::new()
        .compress_when(SizeAbove::new(0))
        .layer(tower::service_fn(move |_: Request<Body>| {
            let response = Response::new(Body::from(data.clone()));
            async move { Ok::<_, Infallible>(response) }
        }));
    let request = Request::builder()
        .header(ACCEPT_ENCODING, coding)
        .body(Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.headers()[CONTENT_ENCODING], coding);
    axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn gzip_and_zstd_answers_decode_to_the_same_json() {
    let app = app_with_messages(|_| {}).await;
    let plain = get_with(&app, BROWSE, "identity").await;
    assert_eq!(plain.status, StatusCode::OK, "{plain:?}");
    assert!(!plain.headers.contains_key(CONTENT_ENCODING));
    assert!(plain.body.len() > 1024, "{} bytes", plain.body.len());
    let expected = plain.json();
    assert_eq!(expected["messages"].as_array().unwrap().len(), 40);

    for (coding, magic) in [
        ("gzip", &[0x1f, 0x8b][..]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd]),
    ] {
        let response = get_with(&app, BROWSE, coding).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert_eq!(header(&response, &CONTENT_ENCODING), Some(coding));
        assert!(
            response.body.starts_with(magic),
            "{coding}: not {coding} data"
        );
        assert!(
            response.body.len() < plain.body.len() / 2,
            "{coding}: barely smaller"
        );
        let vary: Vec<_> = response.headers.get_all(VARY).iter().collect();
        assert!(
            vary.iter()
                .any(|v| v.to_str().unwrap().eq_ignore_ascii_case("accept-encoding")),
            "{vary:?}"
        );
        let decoded = decompress(&response.headers, response.body.clone()).await;
        let decoded: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(decoded, expected, "{coding}");
    }

    // A preference list picks something the server has.
    let response = get_with(&app, BROWSE, "br;q=1.0, zstd;q=0.8, gzip;q=0.5").await;
    assert_eq!(header(&response, &CONTENT_ENCODING), Some("zstd"));
}

#[tokio::test]
async fn small_answers_and_a_server_without_compression_send_plain_bytes() {
    let app = app_with_messages(|_| {}).await;
    let small = get_with(&app, "/v1/topics/t", "gzip, zstd").await;
    assert_eq!(small.status, StatusCode::OK);
    assert!(small.body.len() < 1024, "{} bytes", small.body.len());
    assert!(!small.headers.contains_key(CONTENT_ENCODING), "{small:?}");
    small.json();

    let app = app_with_messages(|c| c.compression = false).await;
    let large = get_with(&app, BROWSE, "gzip, zstd").await;
    assert_eq!(large.status, StatusCode::OK);
    assert!(large.body.len() > 1024);
    assert!(!large.headers.contains_key(CONTENT_ENCODING), "{large:?}");
    large.json();
}

#[tokio::test]
async fn event_streams_are_not_compressed_even_when_the_client_asks() {
    let (_dir, broker) = open_broker();
    let router = opal_server::router(
        server_config(),
        broker.clone(),
        broker,
        CancellationToken::new(),
    );
    for (method, uri, body) in [
        ("PUT", "/v1/topics/t", json!({})),
        ("PUT", "/v1/subscriptions/s", json!({"topic": "t"})),
        (
            "POST",
            PUBLISH,
            json!({"messages": [{"data": "x".repeat(2000)}]}),
        ),
    ] {
        let request = authed(method, uri)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert!(
            response.status().is_success(),
            "{uri}: {}",
            response.status()
        );
    }

    let request = authed("GET", "/v1/subscriptions/s/events")
        .header(ACCEPT_ENCODING, "gzip, zstd")
        .body(Body::empty())
        .unwrap();
    let response = timeout(WITHIN, router.oneshot(request))
        .await
        .expect("stream opened")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
    assert!(!response.headers().contains_key(CONTENT_ENCODING));
    // The events themselves arrive readable, as they are sent (the stream never ends, so read
    // only until the 2000-byte message has come).
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    while !text.contains(&"x".repeat(2000)) {
        let chunk = timeout(WITHIN, body.next())
            .await
            .expect("an event within the bound")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).expect("plain text, not compressed"));
    }
    assert!(text.starts_with("retry:"), "{text}");
}

#[tokio::test]
async fn an_accept_encoding_nothing_satisfies_is_disregarded_not_406() {
    let app = app_with_messages(|_| {}).await;
    let refuse_all = "br, identity;q=0";
    let response = get_with(&app, BROWSE, refuse_all).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert!(!response.headers.contains_key(CONTENT_ENCODING));
    response.json();

    // A publish is stored once and reported as stored, so the client has no reason to retry.
    let request = authed("POST", PUBLISH)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT_ENCODING, refuse_all)
        .body(Body::from(
            json!({"messages": [{"data": "once"}]}).to_string(),
        ))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.json()["results"][0]["offset"], 40);
}

// ---------------------------------------------------------------------------------------------
// Compressed request bodies

async fn app_with_topic(adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let app = TestApp::with_config(adjust);
    app.create_topic_and_subscription("t", 30_000).await;
    app
}

async fn publish_encoded(app: &TestApp, coding: &str, body: impl Into<Body>) -> TestResponse {
    let request = authed("POST", PUBLISH)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, coding)
        .body(body.into())
        .unwrap();
    app.send(request).await
}

async fn stored(app: &TestApp) -> Vec<Value> {
    app.pull("t", 100, 300)
        .await
        .iter()
        .map(|d| d["message"]["data"].clone())
        .collect()
}

#[tokio::test]
async fn gzip_and_zstd_publish_bodies_are_accepted_and_stored() {
    let app = app_with_topic(|_| {}).await;
    for coding in ["gzip", "zstd", "GZIP", "x-gzip"] {
        let body = json!({"messages": [{"data": {"coding": coding, "pad": "y".repeat(3000)}}]});
        let wire = compress(
            &coding.to_ascii_lowercase().replace("x-", ""),
            body.to_string().into_bytes(),
        )
        .await;
        assert!(wire.len() < 500, "{coding}: {} bytes", wire.len());
        let response = publish_encoded(&app, coding, wire).await;
        assert_eq!(response.status, StatusCode::OK, "{coding}: {response:?}");
    }
    let response = publish_encoded(
        &app,
        "identity",
        json!({"messages": [{"data": 1}]}).to_string(),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");

    let data = stored(&app).await;
    let codings: Vec<_> = data.iter().map(|d| d["coding"].clone()).collect();
    assert_eq!(
        codings,
        [
            json!("gzip"),
            json!("zstd"),
            json!("GZIP"),
            json!("x-gzip"),
            Value::Null
        ]
    );
    assert_eq!(data[1]["pad"].as_str().unwrap().len(), 3000);
    assert_eq!(data[4], json!(1));
}

#[tokio::test]
async fn a_body_that_inflates_past_the_limit_is_413_and_stores_nothing() {
    const LIMIT: usize = 64 * 1024;
    let app = app_with_topic(|c| c.max_body_bytes = LIMIT).await;
    // 16 MiB of JSON, 256 times the limit, in a few kilobytes on the wire; and a body just over
    // the limit (under any default a layer might fall back to).
    let json_of_size = |size: usize| {
        let mut body = br#"{"messages": [{"data": ""#.to_vec();
        body.resize(size - 4, b'a');
        body.extend_from_slice(br#""}]}"#);
        body
    };
    for (coding, size) in [
        ("gzip", 16 * 1024 * 1024),
        ("zstd", 16 * 1024 * 1024),
        ("gzip", LIMIT + 1),
        ("zstd", LIMIT + 1),
    ] {
        let wire = compress(coding, json_of_size(size)).await;
        assert!(wire.len() < LIMIT / 2, "{coding}: {} bytes", wire.len());
        let started = Instant::now();
        let response = timeout(WITHIN, publish_encoded(&app, coding, wire))
            .await
            .expect("answered in bounded time");
        let problem = response.problem(413, "payload-too-large");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(&LIMIT.to_string()),
            "{problem}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    // The same limit lets a body that fits through.
    let fits = json!({"messages": [{"data": "a".repeat(LIMIT / 2)}]});
    let wire = compress("gzip", fits.to_string().into_bytes()).await;
    let response = publish_encoded(&app, "gzip", wire).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    let data = stored(&app).await;
    assert_eq!(data.len(), 1, "only the body that fits is stored");
}

/// CRC-32 (IEEE), as the gzip trailer needs.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid gzip member holding `content`, padded with `empty_blocks` empty stored deflate
/// blocks of 5 bytes each: as large on the wire as wanted, no larger once inflated.
fn padded_gzip(content: &[u8], empty_blocks: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..empty_blocks {
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
    }
    let len = u16::try_from(content.len()).expect("one stored block");
    out.push(0x01); // the final block, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(content);
    out.extend_from_slice(&crc32(content).to_le_bytes());
    out.extend_from_slice(&u32::try_from(content.len()).unwrap().to_le_bytes());
    out
}

#[tokio::test]
async fn the_limit_also_applies_to_the_bytes_on_the_wire() {
    const LIMIT: usize = 64 * 1024;
    let app = app_with_topic(|c| c.max_body_bytes = LIMIT).await;
    let body = json!({"messages": [{"data": "small"}]}).to_string();

    let fits = padded_gzip(body.as_bytes(), 100);
    let response = publish_encoded(&app, "gzip", fits).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "a padded gzip is valid: {response:?}"
    );

    // Inflates to the same small body, but 100 KB must be read to get there.
    let padded = padded_gzip(body.as_bytes(), 20_000);
    assert!(padded.len() > LIMIT);
    publish_encoded(&app, "gzip", padded)
        .await
        .problem(413, "payload-too-large");
    assert_eq!(stored(&app).await.len(), 1);
}

#[tokio::test]
async fn unsupported_or_broken_encodings_are_refused_and_store_nothing() {
    let app = app_with_topic(|_| {}).await;
    let body = json!({"messages": [{"data": 1}]}).to_string();
    for coding in [
        "br",
        "deflate",
        "compress",
        "gzip, zstd",
        "zstd, gzip",
        "gzip;q=1",
    ] {
        let response = publish_encoded(&app, coding, body.clone()).await;
        let problem = response.problem(415, "unsupported-media-type");
        assert!(
            problem["detail"].as_str().unwrap().contains("gzip, zstd"),
            "{problem}"
        );
        assert_eq!(
            header(&response, &ACCEPT_ENCODING),
            Some("gzip, zstd"),
            "{coding}"
        );
    }
    // Declared gzip, but is not.
    let problem = publish_encoded(&app, "gzip", body.clone())
        .await
        .problem(400, "invalid-request");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{problem}"
    );
    // Cut short.
    let mut wire = compress("zstd", body.clone().into_bytes()).await;
    wire.truncate(wire.len() / 2);
    publish_encoded(&app, "zstd", wire)
        .await
        .problem(400, "invalid-request");
    assert!(stored(&app).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Timeouts, on a real socket

/// `run()` on 127.0.0.1:0 with a fresh embedded broker.
struct Served {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
    _dir: TempDir,
}

impl Served {
    async fn start(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let (dir, broker) = open_broker();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = server_config();
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(opal_server::run(
            listener,
            config,
            broker.clone(),
            broker,
            shutdown.clone(),
        ));
        let served = Served {
            addr,
            shutdown,
            task,
            _dir: dir,
        };
        assert!(
            served
                .request("PUT", "/v1/topics/t", "{}")
                .await
                .starts_with("HTTP/1.1 201")
        );
        let created = served
            .request("PUT", "/v1/subscriptions/t", r#"{"topic":"t"}"#)
            .await;
        assert!(created.starts_with("HTTP/1.1 201"), "{created}");
        served
    }

    async fn open(&self, method: &str, path: &str, content_length: usize) -> TcpStream {
        open(self.addr, method, path, content_length).await
    }

    async fn request(&self, method: &str, path: &str, body: &str) -> String {
        request(self.addr, method, path, body).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WITHIN, self.task)
            .await
            .expect("run returned")
            .unwrap()
            .expect("run ended without error");
    }
}

/// The head of a request with a body of `content_length` bytes, on a new connection.
async fn open(addr: SocketAddr, method: &str, path: &str, content_length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// One whole request on its own connection; the whole response as text.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut stream = open(addr, method, path, body.len()).await;
    stream.write_all(body.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    // The connection stays open (keep-alive): read until the body is complete.
    loop {
        let n = timeout(WITHIN, stream.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("read");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if n == 0 || head_and_body_complete(&text) {
            return text.into_owned();
        }
    }
}

fn head_and_body_complete(text: &str) -> bool {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    body.len() >= length
}

/// Reads what the server sends until it closes the connection (or resets it); bounded.
async fn read_until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf) -> String {
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match timeout(WITHIN, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection was neither answered nor closed within {WITHIN:?}: {:?}",
                String::from_utf8_lossy(&response)
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_body_is_answered_408_and_disconnected() {
    let served = Served::start(|c| c.request_timeout_ms = 1000).await;
    let body = json!({"messages": [{"data": "z".repeat(100)}]}).to_string();
    let stream = served.open("POST", PUBLISH, body.len()).await;
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    // A byte every 100 ms: it would take over 10 s to send the ~130 bytes.
    let trickle = tokio::spawn(async move {
        for byte in body.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    let response = read_until_closed(&mut read).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("connection: close"), "{response}");
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{response}"
    );
    assert!(
        response.contains("urn:opal:problem:request-timeout"),
        "{response}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "cut off early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "cut off late: {elapsed:?}"
    );

    // A client that sends the head and then nothing at all.
    let stream = served.open("POST", PUBLISH, 50).await;
    let (mut read, _write) = stream.into_split();
    let response = read_until_closed(&mut read).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");

    // Nothing was stored, and clients at normal speed are served.
    let pulled = served
        .request("POST", "/v1/subscriptions/t/pull", "{}")
        .await;
    assert!(pulled.ends_with(r#"{"deliveries":[]}"#), "{pulled}");
    served.stop().await;
}

#[tokio::test]
async fn a_long_poll_outlives_the_request_timeout() {
    let served = Served::start(|c| c.request_timeout_ms = 1000).await;
    let started = Instant::now();
    let empty = served
        .request("POST", "/v1/subscriptions/t/pull", r#"{"wait_ms":2000}"#)
        .await;
    let elapsed = started.elapsed();
    assert!(empty.starts_with("HTTP/1.1 200"), "{empty}");
    assert!(empty.ends_with(r#"{"deliveries":[]}"#), "{empty}");
    assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");

    // A message published after the timeout has passed still reaches the waiting pull.
    let addr = served.addr;
    let waiting = tokio::spawn(async move {
        request(
            addr,
            "POST",
            "/v1/subscriptions/t/pull",
            r#"{"wait_ms":3000}"#,
        )
        .await
    });
    sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished());
    let published = served
        .request("POST", PUBLISH, r#"{"messages":[{"data":"late"}]}"#)
        .await;
    assert!(published.starts_with("HTTP/1.1 200"), "{published}");
    let answer = timeout(WITHIN, waiting).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""data":"late""#), "{answer}");
    served.stop().await;
}

#[tokio::test]
async fn a_websocket_upgrade_is_not_compressed() {
    let served = Served::start(|_| {}).await;
    let mut request = format!("ws://{}/v1/subscriptions/t/ws", served.addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(AUTHORIZATION, format!("Bearer {KEY}").parse().unwrap());
    headers.insert(ACCEPT_ENCODING, "gzip, zstd".parse().unwrap());
    let (mut ws, response) = timeout(WITHIN, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .expect("upgraded");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(!response.headers().contains_key(CONTENT_ENCODING));
    ws.close(None).await.ok();
    served.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Retry-After

#[tokio::test]
async fn a_503_carries_retry_after() {
    let app = TestApp::new();
    app.shutdown.cancel();
    let response = app
        .send(
            Request::builder()
                .uri("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    response.problem(503, "unavailable");
    let seconds: u64 = header(&response, &RETRY_AFTER)
        .expect("Retry-After")
        .parse()
        .expect("delay-seconds");
    assert!((1..=60).contains(&seconds), "{seconds}");
}
