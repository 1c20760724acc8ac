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
