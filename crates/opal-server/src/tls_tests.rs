//! The TLS path of `connections::serve` on 127.0.0.1 with a tiny router that shows what a handler
//! sees, and `ServerTls` reloads.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::client_cert::hex;
use crate::test_pki::{Issued, TestCa, write};
use crate::{ClientAuth, ClientCertificate, ConfigError, ServerTls, TlsSettings};

/// What the handler sees of the client certificate: `<sha256 hex> <cn>`, or `none`.
async fn who(client: Option<Extension<ClientCertificate>>) -> String {
    match client {
        Some(Extension(client)) => format!(
            "{} {}",
            client.sha256_hex(),
            client.subject_cn.as_deref().unwrap_or("-")
        ),
        None => "none".to_owned(),
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(tls: ServerTls, header_timeout: Duration) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let app = Router::new().route("/who", get(who));
        let task = tokio::spawn(crate::connections::serve(
            listener,
            app,
            Some(tls),
            header_timeout,
            shutdown.clone(),
        ));
        Running {
            addr,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("drained")
            .unwrap()
            .unwrap();
    }
}

fn client(ca: &TestCa, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(issued) = identity {
        let pem = format!("{}{}", issued.cert_pem, issued.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn get_who(client: &reqwest::Client, addr: SocketAddr) -> reqwest::Result<String> {
    let response = client
        .get(format!("https://127.0.0.1:{}/who", addr.port()))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    response.text().await
}

fn settings(dir: &Path, ca: &TestCa, client_ca: Option<&TestCa>, auth: ClientAuth) -> TlsSettings {
    let server = ca.server("opal-test");
    let mut settings = TlsSettings::new(
        write(dir, "cert.pem", &server.cert_pem),
        write(dir, "key.pem", &server.key_pem),
    );
    settings.client_ca = client_ca.map(|ca| write(dir, "client-ca.pem", &ca.pem()));
    settings.client_auth = auth;
    settings.reload_check = None;
    settings
}

#[tokio::test]
async fn a_verified_client_certificate_reaches_handlers_as_an_extension() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let tls = ServerTls::load(settings(
        dir.path(),
        &server_ca,
        Some(&client_ca),
        ClientAuth::Required,
    ))
    .unwrap();
    let server = Running::start(tls, Duration::from_secs(10)).await;

    let billing = client_ca.client("billing");
    let body = get_who(&client(&server_ca, Some(&billing)), server.addr)
        .await
        .unwrap();
    let expected = hex(&Sha256::digest(&billing.der));
    assert_eq!(body, format!("{expected} billing"));

    // Required: no certificate, or one from another CA, ends in the handshake.
    assert!(
        get_who(&client(&server_ca, None), server.addr)
            .await
            .is_err()
    );
    let stranger = TestCa::new("other CA").client("billing");
    assert!(
        get_who(&client(&server_ca, Some(&stranger)), server.addr)
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_let_anonymous_clients_in_without_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let tls = ServerTls::load(settings(
        dir.path(),
        &server_ca,
        Some(&client_ca),
        ClientAuth::Optional,
    ))
    .unwrap();
    let server = Running::start(tls, Duration::from_secs(10)).await;

    assert_eq!(
        get_who(&client(&server_ca, None), server.addr)
            .await
            .unwrap(),
        "none"
    );
    let worker = client_ca.client("worker");
    assert_eq!(
        get_who(&client(&server_ca, Some(&worker)), server.addr)
            .await
            .unwrap(),
        format!("{} worker", hex(&Sha256::digest(&worker.der)))
    );
    let stranger = TestCa::new("other CA").client("worker");
    assert!(
        get_who(&client(&server_ca, Some(&stranger)), server.addr)
            .await
            .is_err(),
        "a certificate the CA does not vouch for is refused even when optional"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_a_client_ca_no_identity_is_attached() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let tls = ServerTls::load(settings(dir.path(), &ca, None, ClientAuth::Required)).unwrap();
    let server = Running::start(tls, Duration::from_secs(10)).await;
    // The server never asks, so the client's certificate is not even sent.
    let identity = ca.client("anyone");
    assert_eq!(
        get_who(&client(&ca, Some(&identity)), server.addr)
            .await
            .unwrap(),
        "none"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_starts_the_handshake_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let tls = ServerTls::load(settings(dir.path(), &ca, None, ClientAuth::Required)).unwrap();
    let server = Running::start(tls, Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0_u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server closed the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Meanwhile the server still answers.
    assert_eq!(
        get_who(&client(&ca, None), server.addr).await.unwrap(),
        "none"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_reload_keeps_the_certificate_and_a_good_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let settings = settings(dir.path(), &ca, None, ClientAuth::Required);
    let tls = ServerTls::load(settings.clone()).unwrap();
    let first = tls.current();
    assert_eq!(first.subject_cn.as_deref(), Some("opal-test"));

    let next = ca.server("opal-next");
    // Not PEM at all.
    std::fs::write(&settings.cert, "garbage").unwrap();
    assert!(matches!(
        tls.reload().await,
        Err(ConfigError::TlsPem {
            what: "certificate",
            ..
        })
    ));
    assert_eq!(tls.current(), first);
    // A certificate with somebody else's key.
    std::fs::write(&settings.cert, &next.cert_pem).unwrap();
    let err = tls.reload().await.unwrap_err();
    assert!(
        matches!(&err, ConfigError::TlsKey { reason } if reason.contains("does not belong")),
        "{err}"
    );
    assert_eq!(tls.current(), first);
    // A missing key file.
    std::fs::remove_file(&settings.key).unwrap();
    assert!(matches!(
        tls.reload().await,
        Err(ConfigError::TlsFile {
            what: "private key",
            ..
        })
    ));
    // The matching key: the new certificate is served.
    std::fs::write(&settings.key, &next.key_pem).unwrap();
    let loaded = tls.reload().await.unwrap();
    assert_eq!(loaded.subject_cn.as_deref(), Some("opal-next"));
    assert_eq!(loaded.sha256_hex, hex(&Sha256::digest(&next.der)));
    assert_eq!(tls.current(), loaded);
}

#[test]
fn unusable_files_are_refused_at_load_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let good = settings(dir.path(), &ca, None, ClientAuth::Required);

    let mut missing = good.clone();
    missing.cert = dir.path().join("nope.pem");
    let err = ServerTls::load(missing).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let mut no_key = good.clone();
    no_key.key = write(dir.path(), "empty.pem", "");
    let err = ServerTls::load(no_key).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::TlsPem {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );

    let mut bad_ca = good.clone();
    bad_ca.client_ca = Some(write(dir.path(), "ca.pem", "not a CA"));
    let err = ServerTls::load(bad_ca).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::TlsPem {
                what: "client CA",
                ..
            }
        ),
        "{err}"
    );

    let mut too_often = good;
    too_often.reload_check = Some(Duration::from_millis(10));
    assert!(matches!(
        ServerTls::load(too_often),
        Err(ConfigError::TlsReloadCheck)
    ));
}

#[tokio::test]
async fn changed_files_are_picked_up_by_the_periodic_check() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let mut settings = settings(dir.path(), &ca, None, ClientAuth::Required);
    settings.reload_check = Some(Duration::from_secs(1));
    let tls = ServerTls::load(settings.clone()).unwrap();
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(tls.clone().watch(stop.clone()));

    let next = ca.server("opal-rotated");
    // Key first, then certificate, as a careless deploy might: the check in between may see a
    // mismatch (logged, old one kept) and must still pick up the finished pair.
    std::fs::write(&settings.key, &next.key_pem).unwrap();
    std::fs::write(&settings.cert, &next.cert_pem).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tls.current().subject_cn.as_deref() != Some("opal-rotated") {
        assert!(
            std::time::Instant::now() < deadline,
            "the change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher stops")
        .unwrap();
}
