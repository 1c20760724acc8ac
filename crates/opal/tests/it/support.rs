//! Starts the real `opal` binary on a free loopback port and talks to it over HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub(crate) const ADMIN_KEY: &str = "opal-test-admin-key-0123456789";

/// A running server process. Killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    /// What the server printed on stdout at start, up to and including the admin key line.
    pub(crate) banner: Vec<String>,
    pub(crate) client: reqwest::Client,
}

impl Server {
    pub(crate) fn start(data_dir: &Path) -> Server {
        Self::spawn(data_dir, |c| {
            c.env("OPAL_ADMIN_KEY", ADMIN_KEY);
        })
    }

    pub(crate) fn spawn(data_dir: &Path, configure: impl FnOnce(&mut Command)) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .expect("server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_opal"));
        command
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("OPAL_ADMIN_KEY")
            .env_remove("OPAL_ENCRYPTION_KEY_FILE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        configure(&mut command);
        let mut child = command.spawn().expect("spawn opal");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let mut url = None;
        loop {
            let line = lines
                .next()
                .expect("opal exited before announcing itself")
                .expect("read stdout");
            let trimmed = line.trim().to_owned();
            if let Some(rest) = trimmed.strip_prefix("http:") {
                url = Some(rest.trim().trim_end_matches("/v1").to_owned());
            }
            let done = trimmed.starts_with("admin key");
            banner.push(trimmed);
            if done {
                break;
            }
        }
        let url = url.expect("opal announced no http address");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        Server {
            child,
            url,
            banner,
            client,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL opal");
        self.child.wait().expect("reap opal");
    }

    /// SIGTERM, then waits for a clean exit (at most 30 s).
    pub(crate) fn stop(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let status = wait_bounded(&mut self.child, Duration::from_secs(30));
        assert!(
            status.success(),
            "opal exited with {status:?} after SIGTERM"
        );
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.url)))
            .await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.client.put(format!("{}{path}", self.url)).json(&body))
            .await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.client.post(format!("{}{path}", self.url)).json(&body))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub(crate) async fn create_topic(&self, topic: &str) {
        let (status, body) = self
            .put(&format!("/v1/topics/{topic}"), json!({"partitions": 1}))
            .await;
        assert!(
            status == 201 || status == 200,
            "create topic: {status} {body}"
        );
    }

    pub(crate) async fn create_subscription(&self, sub: &str, topic: &str, ack_deadline_ms: u64) {
        let (status, body) = self
            .put(
                &format!("/v1/subscriptions/{sub}"),
                json!({"topic": topic, "ack_deadline_ms": ack_deadline_ms}),
            )
            .await;
        assert!(
            status == 201 || status == 200,
            "create subscription: {status} {body}"
        );
    }

    /// Pulls and acks until a pull waiting `wait_ms` comes back empty; returns every delivery's message.
    pub(crate) async fn drain(&self, sub: &str, wait_ms: u64, max_rounds: usize) -> Vec<Value> {
        let mut messages = Vec::new();
        for _ in 0..max_rounds {
            let (status, body) = self
                .post(
                    &format!("/v1/subscriptions/{sub}/pull"),
                    json!({"max_messages": 1000, "wait_ms": wait_ms}),
                )
                .await;
            assert_eq!(status, 200, "pull: {body}");
            let deliveries = body["deliveries"].as_array().expect("deliveries").clone();
            if deliveries.is_empty() {
                return messages;
            }
            let ack_ids: Vec<Value> = deliveries.iter().map(|d| d["ack_id"].clone()).collect();
            let (status, body) = self
                .post(
                    &format!("/v1/subscriptions/{sub}/ack"),
                    json!({"ack_ids": ack_ids}),
                )
                .await;
            assert_eq!(status, 200, "ack: {body}");
            assert_eq!(
                body["acked"].as_u64(),
                Some(ack_ids.len() as u64),
                "ack: {body}"
            );
            messages.extend(deliveries.into_iter().map(|mut d| d["message"].take()));
        }
        panic!("subscription {sub} did not drain within {max_rounds} pulls");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn data_dir(root: &tempfile::TempDir) -> PathBuf {
    root.path().join("data")
}

/// Waits for `child` to exit; kills it and fails the test if it takes longer than `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for opal") {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("opal did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `opal serve` on `data_dir` expecting it to refuse to start; returns its stderr.
pub(crate) fn refused_start(data_dir: &Path, configure: impl FnOnce(&mut Command)) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opal"));
    command
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("OPAL_ADMIN_KEY", ADMIN_KEY)
        .env_remove("OPAL_ENCRYPTION_KEY_FILE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().expect("spawn opal");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let text = reader.join().expect("stderr reader");
    assert!(
        !status.success(),
        "opal started although it should not: {text}"
    );
    text
}
