//! `run()` on a real socket: it serves, and on shutdown drains (a waiting long-poll answers at
//! once) and returns.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::support::{KEY, open_broker, server_config};

/// One HTTP/1.1 request on its own connection; returns the whole response as text.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn run_serves_then_drains_and_returns_on_shutdown() {
    let (_dir, broker) = open_broker();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(opal_server::run(
        listener,
        server_config(),
        broker.clone(),
        broker,
        shutdown.clone(),
    ));

    let created = http(addr, "PUT", "/v1/topics/t", "{}").await;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let created = http(addr, "PUT", "/v1/subscriptions/t", r#"{"topic":"t"}"#).await;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");

    let poll = tokio::spawn(http(
        addr,
        "POST",
        "/v1/subscriptions/t/pull",
        r#"{"wait_ms":20000}"#,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long-poll should be waiting");

    shutdown.cancel();
    let answer = timeout(Duration::from_secs(5), poll)
        .await
        .expect("long-poll cut short")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"deliveries":[]}"#), "{answer}");
    timeout(Duration::from_secs(5), server)
        .await
        .expect("run returned after draining")
        .unwrap()
        .expect("run ended without error");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// Reads until the server closes the connection; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    match timeout(within, stream.read_to_end(&mut seen)).await {
        Err(_) => None,
        // A reset counts as closed too.
        Ok(_) => Some(String::from_utf8_lossy(&seen).into_owned()),
    }
}

#[tokio::test]
async fn request_heads_that_stall_are_cut_off_while_other_connections_are_served() {
    let (_dir, broker) = open_broker();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = server_config();
    config.header_timeout_ms = 500;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(opal_server::run(
        listener,
        config,
        broker.clone(),
        broker,
        shutdown.clone(),
    ));

    let started = tokio::time::Instant::now();
    // Nothing at all; half a request line; a request line and some headers, never finished.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half_line = TcpStream::connect(addr).await.unwrap();
    half_line.write_all(b"GET /heal").await.unwrap();
    let mut half_head = TcpStream::connect(addr).await.unwrap();
    half_head
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n").as_bytes())
        .await
        .unwrap();
    // A complete request, then the connection idles (keep-alive).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = [0_u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    // While they stall, other connections are served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let healthy = http(addr, "GET", "/healthz", "").await;
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");

    for (name, stream) in [
        ("silent", &mut silent),
        ("half a request line", &mut half_line),
        ("unfinished headers", &mut half_head),
    ] {
        let seen = closed_within(stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{name}: still open"));
        assert!(!seen.contains("200"), "{name}: {seen}");
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .is_some(),
        "the idle keep-alive connection is still open"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );

    // And the server still works afterwards.
    let healthy = http(addr, "GET", "/healthz", "").await;
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    shutdown.cancel();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("run returned")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_request_head_sent_in_time_is_not_cut_off_by_the_header_timeout() {
    let (_dir, broker) = open_broker();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = server_config();
    config.header_timeout_ms = 1_000;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(opal_server::run(
        listener,
        config,
        broker.clone(),
        broker,
        shutdown.clone(),
    ));
    // Trickled in pieces well inside the limit: served.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    for piece in [
        "GET /heal".to_owned(),
        format!("thz HTTP/1.1\r\nHost: {addr}\r\n"),
        "Connection: close\r\n\r\n".to_owned(),
    ] {
        slow.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = closed_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    shutdown.cancel();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("run returned")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn http2_requests_are_refused_with_505() {
    let (_dir, broker) = open_broker();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(opal_server::run(
        listener,
        server_config(),
        broker.clone(),
        broker,
        shutdown.clone(),
    ));
    // HTTP/2 with prior knowledge, which would otherwise escape the per-request header timeout.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 505);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], 505);

    let healthy = http(addr, "GET", "/healthz", "").await;
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    shutdown.cancel();
    timeout(Duration::from_secs(5), server)
        .await
        .expect("run returned")
        .unwrap()
        .unwrap();
}
