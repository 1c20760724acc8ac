//! HTTPS on the real binary: certificates made by a test CA at test time, curl and reqwest as
//! clients, reload on SIGHUP and on file change, and client certificates (mutual TLS).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::support::{ADMIN_KEY, Server, data_dir};
use opal_server::test_pki::{Issued, TestCa, write};

/// A server certificate and key in files, and the CA that signed them.
struct Files {
    ca: TestCa,
    ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    served: Issued,
}

impl Files {
    fn new(dir: &Path) -> Files {
        let ca = TestCa::new("opal test CA");
        let served = ca.server("opal-one");
        Files {
            ca_pem: write(dir, "ca.pem", &ca.pem()),
            cert: write(dir, "cert.pem", &served.cert_pem),
            key: write(dir, "key.pem", &served.key_pem),
            ca,
            served,
        }
    }

    /// Starts the binary serving HTTPS with these files and `extra` flags; its client trusts
    /// the test CA only.
    fn start(&self, dir: &Path, extra: &[&str]) -> Server {
        let mut server = Server::spawn(dir, |c| {
            c.env("OPAL_ADMIN_KEY", ADMIN_KEY)
                .arg("--tls-cert")
                .arg(&self.cert)
                .arg("--tls-key")
                .arg(&self.key)
                .args(extra);
        });
        assert!(
            server.url.starts_with("https://127.0.0.1:"),
            "{}",
            server.url
        );
        server.client = self.client(None);
        server
    }

    /// A client that trusts only the test CA, reports the server's certificate, and presents
    /// `identity` if given.
    fn client(&self, identity: Option<&Issued>) -> reqwest::Client {
        client(&self.ca, identity)
    }
}

fn client(ca: &TestCa, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .tls_info(true)
        .timeout(Duration::from_secs(30));
    if let Some(issued) = identity {
        let pem = format!("{}{}", issued.cert_pem, issued.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// `GET /healthz`; the DER of the certificate the server presented on that connection.
async fn peer_certificate(client: &reqwest::Client, url: &str) -> reqwest::Result<Vec<u8>> {
    let response = client.get(format!("{url}/healthz")).send().await?;
    assert_eq!(response.status(), 200);
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info");
    Ok(info
        .peer_certificate()
        .expect("a server certificate")
        .to_vec())
}

/// Waits until the server's log (stderr) contains `needle`.
fn wait_for_log(dir: &Path, needle: &str) {
    let log = dir.with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_count(dir: &Path, needle: &str) -> usize {
    std::fs::read_to_string(dir.with_extension("log"))
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn sighup(server: &Server) {
    let sent = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn curl_available() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_trusts_the_test_ca_and_plain_http_is_refused() {
    if !curl_available() {
        eprintln!("SKIPPED: curl is not installed; this test needs it as an independent client");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let files = Files::new(root.path());
    let server = files.start(&data_dir(&root), &[]);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap()
    };

    let https = curl(&[
        "--cacert",
        files.ca_pem.to_str().unwrap(),
        &format!("https://127.0.0.1:{port}/healthz"),
    ]);
    assert!(
        https.status.success(),
        "{}",
        String::from_utf8_lossy(&https.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&https.stdout), r#"{"status":"ok"}"#);

    // Without the test CA curl cannot verify the server.
    let untrusted = curl(&[&format!("https://127.0.0.1:{port}/healthz")]);
    assert!(!untrusted.status.success());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(
        !plain.status.success(),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&plain.stdout)
    );
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_pull_over_https() {
    let root = tempfile::tempdir().unwrap();
    let files = Files::new(root.path());
    let server = files.start(&data_dir(&root), &[]);
    server.create_topic("orders").await;
    server
        .create_subscription("billing", "orders", 30_000)
        .await;
    let (status, body) = server
        .post(
            "/v1/topics/orders/messages",
            json!({"messages": [{"data": {"order": 42}}, {"data": "two"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = server.drain("billing", 200, 10).await;
    let data: Vec<_> = messages.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, [json!({"order": 42}), json!("two")]);

    // A client that does not trust the test CA gets nowhere.
    let stranger = client(&TestCa::new("another CA"), None);
    assert!(
        stranger
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let files = Files::new(root.path());
    // SIGHUP only: the periodic check must not be what reloads here.
    let server = files.start(&dir, &["--tls-reload-check-s", "0"]);

    let before = files.client(None);
    assert_eq!(
        peer_certificate(&before, &server.url).await.unwrap(),
        files.served.der
    );

    let next = files.ca.server("opal-two");
    assert_ne!(next.der, files.served.der);
    std::fs::write(&files.key, &next.key_pem).unwrap();
    std::fs::write(&files.cert, &next.cert_pem).unwrap();
    // Nothing happens until the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        peer_certificate(&files.client(None), &server.url)
            .await
            .unwrap(),
        files.served.der
    );

    sighup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A new client, so a new connection and handshake each time.
        let seen = peer_certificate(&files.client(None), &server.url)
            .await
            .unwrap();
        if seen == next.der {
            break;
        }
        assert_eq!(seen, files.served.der);
        assert!(Instant::now() < deadline, "the new certificate never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the reload is still there and still works, with the
    // certificate it was set up with.
    assert_eq!(
        peer_certificate(&before, &server.url).await.unwrap(),
        files.served.der,
        "the open connection was replaced"
    );

    // A broken certificate file: the reload fails, is logged, and the last good one stays.
    let failures = log_count(&dir, "TLS reload failed");
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    sighup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log_count(&dir, "TLS reload failed") == failures {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        peer_certificate(&files.client(None), &server.url)
            .await
            .unwrap(),
        next.der
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_files_are_reloaded_without_a_signal() {
    let root = tempfile::tempdir().unwrap();
    let files = Files::new(root.path());
    let server = files.start(&data_dir(&root), &["--tls-reload-check-s", "1"]);
    let next = files.ca.server("opal-rotated");
    // Written elsewhere and renamed into place, as certificate tools do.
    let staged_key = write(root.path(), "key.pem.new", &next.key_pem);
    let staged_cert = write(root.path(), "cert.pem.new", &next.cert_pem);
    std::fs::rename(staged_key, &files.key).unwrap();
    std::fs::rename(staged_cert, &files.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(&files.client(None), &server.url)
        .await
        .unwrap()
        != next.der
    {
        assert!(
            Instant::now() < deadline,
            "the changed files were not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_the_client_ca_are_required_and_identified() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let files = Files::new(root.path());
    let client_ca = TestCa::new("opal client CA");
    let client_ca_pem = write(root.path(), "client-ca.pem", &client_ca.pem());
    let mut server = files.start(&dir, &["--tls-client-ca", client_ca_pem.to_str().unwrap()]);

    let billing = client_ca.client("billing-service");
    server.client = files.client(Some(&billing));
    server.create_topic("orders").await;
    let (status, body) = server
        .post(
            "/v1/topics/orders/messages",
            json!({"messages": [{"data": 1}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The request span carries the certificate's identity.
    let fingerprint: String = Sha256::digest(&billing.der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    wait_for_log(&dir, &format!("client_cert={fingerprint}"));
    wait_for_log(&dir, r#"client_cn="billing-service""#);

    // A certificate from another CA, and no certificate at all, end in the handshake.
    let stranger = TestCa::new("someone else's CA").client("billing-service");
    for (who, client) in [
        ("a foreign certificate", files.client(Some(&stranger))),
        ("no certificate", files.client(None)),
    ] {
        let result = client.get(format!("{}/healthz", server.url)).send().await;
        let err = result.expect_err(who);
        assert!(
            !err.is_status() && err.status().is_none(),
            "{who}: got an HTTP answer: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_admit_clients_without_one() {
    let root = tempfile::tempdir().unwrap();
    let files = Files::new(root.path());
    let client_ca = TestCa::new("opal client CA");
    let client_ca_pem = write(root.path(), "client-ca.pem", &client_ca.pem());
    let server = files.start(
        &data_dir(&root),
        &[
            "--tls-client-ca",
            client_ca_pem.to_str().unwrap(),
            "--tls-client-auth",
            "optional",
        ],
    );
    assert!(
        peer_certificate(&files.client(None), &server.url)
            .await
            .is_ok()
    );
    let worker = client_ca.client("worker");
    assert!(
        peer_certificate(&files.client(Some(&worker)), &server.url)
            .await
            .is_ok()
    );
    let stranger = TestCa::new("someone else's CA").client("worker");
    assert!(
        files
            .client(Some(&stranger))
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_err()
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    let root = tempfile::tempdir().unwrap();
    let files = Files::new(root.path());
    let other = files.ca.server("other");
    std::fs::write(&files.key, other.key_pem).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_opal"))
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir(&root))
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .env("OPAL_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(
        !data_dir(&root).exists(),
        "storage was opened before the TLS files were checked"
    );
}

/// A request with `client` (no `Authorization` header unless `bearer`): status and JSON body.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = client.request(method, url);
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_stands_for_the_app_key_it_is_bound_to() {
    let root = tempfile::tempdir().unwrap();
    let files = Files::new(root.path());
    let client_ca = TestCa::new("opal client CA");
    let client_ca_pem = write(root.path(), "client-ca.pem", &client_ca.pem());
    let server = files.start(
        &data_dir(&root),
        &[
            "--tls-client-ca",
            client_ca_pem.to_str().unwrap(),
            "--tls-client-auth",
            "optional",
        ],
    );
    let url = |path: &str| format!("{}{path}", server.url);
    let admin = files.client(None);
    let worker = client_ca.client("worker");
    let fingerprint: String = Sha256::digest(&worker.der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    use reqwest::Method;
    let (status, _) = call(
        &admin,
        Method::POST,
        url("/v1/apps"),
        Some(ADMIN_KEY),
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, key) = call(
        &admin,
        Method::POST,
        url("/v1/apps/acme/keys"),
        Some(ADMIN_KEY),
        Some(json!({"name": "worker", "scopes": ["manage"], "client_certificate_sha256": fingerprint})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(
        key["client_certificate_sha256"].as_str().unwrap(),
        fingerprint.replace(':', "").to_lowercase()
    );

    // The certificate alone acts as acme's key: its short names are acme's.
    let with_cert = files.client(Some(&worker));
    let (status, topic) = call(
        &with_cert,
        Method::PUT,
        url("/v1/topics/orders"),
        None,
        None,
    )
    .await;
    assert_eq!((status, &topic["name"]), (201, &json!("orders")), "{topic}");
    let (status, listed) = call(
        &admin,
        Method::GET,
        url("/v1/topics/acme%2Forders"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!((status, &listed["name"]), (200, &json!("acme/orders")));
    // A bearer key on the same connection wins: the admin's `orders` is the default app's.
    let (status, _) = call(
        &with_cert,
        Method::GET,
        url("/v1/topics/orders"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Another certificate of the same CA stands for nothing.
    let other = files.client(Some(&client_ca.client("someone")));
    let (status, problem) = call(&other, Method::GET, url("/v1/topics"), None, None).await;
    assert_eq!(status, 401, "{problem}");
    // The same certificate cannot stand for a second key.
    let (status, _) = call(
        &admin,
        Method::POST,
        url("/v1/apps/acme/keys"),
        Some(ADMIN_KEY),
        Some(
            json!({"name": "again", "scopes": ["read"], "client_certificate_sha256": fingerprint}),
        ),
    )
    .await;
    assert_eq!(status, 409);
    // Revoked: refused at once.
    let id = key["id"].as_str().unwrap();
    let (status, _) = call(
        &admin,
        Method::DELETE,
        url(&format!("/v1/apps/acme/keys/{id}")),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, problem) = call(&with_cert, Method::GET, url("/v1/topics"), None, None).await;
    assert_eq!(status, 401);
    assert!(
        problem["detail"].as_str().unwrap().contains("revoked"),
        "{problem}"
    );
}
