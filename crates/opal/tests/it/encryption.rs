//! Encryption at rest, end to end: with a key file, no byte of the data directory shows message
//! content (payloads, keys, attribute names and values, dedup ids) of immediate, delayed,
//! dead-lettered and nacked messages, while running, after SIGKILL and after a clean stop;
//! without one, the same scenario leaves every marker on disk. Restart, rotation, and keys
//! that do not fit.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::support::{ADMIN_KEY, Server, data_dir, refused_start};

/// Distinctive strings, unique to one run, put wherever a message carries content.
struct Markers {
    payload_now: String,
    key_now: String,
    attr_name_now: String,
    attr_value_now: String,
    dedup_now: String,
    payload_later: String,
    key_later: String,
    attr_name_later: String,
    attr_value_later: String,
    dedup_later: String,
    /// A push endpoint's header value (a subscription row).
    push_header: String,
    /// A task's callback URL path (the task's record, its task row, the callback message).
    callback: String,
    /// A task's result (its task row, the callback message).
    result: String,
}

impl Markers {
    fn new() -> Self {
        let run: u64 = rand::random();
        let m = |label: &str| format!("{label}-{run:016x}");
        Markers {
            payload_now: m("PAYLOAD-NOW"),
            key_now: m("KEY-NOW"),
            attr_name_now: m("ATTRNAME-NOW"),
            attr_value_now: m("ATTRVALUE-NOW"),
            dedup_now: m("DEDUP-NOW"),
            payload_later: m("PAYLOAD-LATER"),
            key_later: m("KEY-LATER"),
            attr_name_later: m("ATTRNAME-LATER"),
            attr_value_later: m("ATTRVALUE-LATER"),
            dedup_later: m("DEDUP-LATER"),
            push_header: m("PUSHHEADER"),
            callback: m("CALLBACK"),
            result: m("RESULT"),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.payload_now,
            &self.key_now,
            &self.attr_name_now,
            &self.attr_value_now,
            &self.dedup_now,
            &self.payload_later,
            &self.key_later,
            &self.attr_name_later,
            &self.attr_value_later,
            &self.dedup_later,
            &self.push_header,
            &self.callback,
            &self.result,
        ]
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// (marker, file relative to `dir`) for each marker found in a file, as is or in standard
/// base64 (how a delayed binary payload is kept in a plaintext metadata row).
fn scan(dir: &Path, markers: &Markers) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        let name = file.strip_prefix(dir).unwrap().display().to_string();
        for marker in markers.all() {
            let encoded = STANDARD.encode(marker);
            let hit = [marker.as_bytes(), encoded.as_bytes()]
                .iter()
                .any(|needle| bytes.windows(needle.len()).any(|w| w == *needle));
            if hit {
                found.push((marker.to_owned(), name.clone()));
            }
        }
    }
    found
}

fn write_key_file(path: &Path, keys: &[(u16, [u8; 32])]) {
    let text: String = keys
        .iter()
        .map(|(id, key)| format!("{id} {}\n", STANDARD.encode(key)))
        .collect();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn start(dir: &Path, key_file: Option<&Path>) -> Server {
    Server::spawn(dir, |c| {
        // Push endpoints and callbacks here name hosts that must never be looked up.
        c.env("OPAL_ADMIN_KEY", ADMIN_KEY)
            .env("OPAL_PUSH_NO_DNS", "true")
            .env("OPAL_PUSH_ONLY_ALLOWED_NETS", "true");
        if let Some(path) = key_file {
            c.arg("--encryption-key-file").arg(path);
        }
    })
}

async fn put_ok(server: &Server, path: &str, body: Value) {
    let (status, body) = server.put(path, body).await;
    assert!(status == 200 || status == 201, "{path}: {status} {body}");
}

async fn pull(server: &Server, sub: &str, wait_ms: u64) -> Vec<Value> {
    let (status, body) = server
        .post(
            &format!("/v1/subscriptions/{sub}/pull"),
            json!({"max_messages": 10, "wait_ms": wait_ms}),
        )
        .await;
    assert_eq!(status, 200, "pull {sub}: {body}");
    body["deliveries"].as_array().unwrap().clone()
}

async fn nack(server: &Server, sub: &str, delivery: &Value, delay_ms: u64) {
    let (status, body) = server
        .post(
            &format!("/v1/subscriptions/{sub}/nack"),
            json!({"ack_ids": [delivery["ack_id"]], "delay_ms": delay_ms}),
        )
        .await;
    assert_eq!((status, &body["nacked"]), (200, &json!(1)), "{body}");
}

async fn browse(server: &Server, topic: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/topics/{topic}/messages")).await;
    assert_eq!(status, 200, "browse {topic}: {body}");
    body["messages"].as_array().unwrap().clone()
}

fn publish_body(m: &Markers) -> Value {
    json!({"messages": [
        {"data": m.payload_now, "key": m.key_now,
         "attributes": {m.attr_name_now.as_str(): m.attr_value_now}, "dedup_id": m.dedup_now},
        {"data_base64": STANDARD.encode(&m.payload_later), "key": m.key_later,
         "attributes": {m.attr_name_later.as_str(): m.attr_value_later},
         "dedup_id": m.dedup_later, "delay_ms": 86_400_000},
    ]})
}

/// Publishes the marked messages and puts them everywhere content is kept: the topic's log,
/// a delayed message and dedup ids in `meta.redb`, a nack on an ordered subscription (a retry
/// row with its ordering key), and a dead letter in the dead-letter topic's log.
async fn marked_scenario(server: &Server, m: &Markers) {
    for topic in ["orders", "orders.dead"] {
        put_ok(
            server,
            &format!("/v1/topics/{topic}"),
            json!({"partitions": 1}),
        )
        .await;
    }
    put_ok(
        server,
        "/v1/subscriptions/audit",
        json!({"topic": "orders"}),
    )
    .await;
    put_ok(
        server,
        "/v1/subscriptions/ordered",
        json!({"topic": "orders", "ordered": true}),
    )
    .await;
    put_ok(
        server,
        "/v1/subscriptions/fragile",
        json!({"topic": "orders", "max_deliveries": 1, "dead_letter_topic": "orders.dead"}),
    )
    .await;
    let (status, body) = server
        .post("/v1/topics/orders/messages", publish_body(m))
        .await;
    assert_eq!(status, 200, "{body}");

    let in_flight = pull(server, "ordered", 0).await;
    assert_eq!(in_flight.len(), 1, "{in_flight:?}");
    nack(server, "ordered", &in_flight[0], 3_000).await;
    let fragile = pull(server, "fragile", 0).await;
    assert_eq!(fragile.len(), 1, "{fragile:?}");
    nack(server, "fragile", &fragile[0], 0).await;
    assert_eq!(
        browse(server, "orders.dead").await.len(),
        1,
        "dead-lettered"
    );
    task_and_push_scenario(server, m).await;
}

/// A push endpoint with a marked header, and a task with a marked callback URL acked with a
/// marked result: subscription rows, task rows, attempt rows and the callback message.
async fn task_and_push_scenario(server: &Server, m: &Markers) {
    put_ok(server, "/v1/topics/jobs", json!({"partitions": 1})).await;
    put_ok(
        server,
        "/v1/subscriptions/workers",
        json!({"topic": "jobs"}),
    )
    .await;
    put_ok(
        server,
        "/v1/subscriptions/hooked",
        json!({"topic": "jobs", "push": {
            "url": "https://hooks.example.com/in",
            "headers": {"x-marker": m.push_header},
            "retry_schedule_ms": [0, 600_000],
        }}),
    )
    .await;
    let task = json!({"messages": [{"data": 1,
        "callback": {"url": format!("https://client.example.com/{}", m.callback)}}]});
    let (status, body) = server.post("/v1/topics/jobs/messages", task).await;
    assert_eq!(status, 200, "{body}");
    let delivered = pull(server, "workers", 2_000).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let ack_id = delivered[0]["ack_id"].as_str().unwrap();
    let (status, body) = server
        .post(
            "/v1/subscriptions/workers/ack",
            json!({"ack_ids": [ack_id], "results": {ack_id: {"data": m.result}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body_id(&delivered[0]);
    let (status, task) = server.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["data"], json!(m.result), "{task}");
}

fn body_id(delivery: &Value) -> String {
    delivery["message"]["id"].as_str().unwrap().to_owned()
}

fn assert_now_message(message: &Value, m: &Markers) {
    assert_eq!(message["data"], json!(m.payload_now), "{message}");
    assert_eq!(message["key"], json!(m.key_now), "{message}");
    assert_eq!(
        message["attributes"][m.attr_name_now.as_str()],
        json!(m.attr_value_now),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_data_dir_shows_no_message_content_and_reads_back_intact() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let key_file = root.path().join("opal.keys");
    write_key_file(&key_file, &[(1, rand::random())]);
    let m = Markers::new();

    let mut server = start(&dir, Some(&key_file));
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("encryption at rest: on")),
        "{:?}",
        server.banner
    );
    marked_scenario(&server, &m).await;
    assert_eq!(scan(&dir, &m), vec![], "while running");
    let nacked_at = Instant::now();
    server.kill();
    assert_eq!(scan(&dir, &m), vec![], "after SIGKILL");

    // Restart with the same key file: everything reads back.
    let mut server = start(&dir, Some(&key_file));
    assert_eq!(scan(&dir, &m), vec![], "after recovery");
    let orders = browse(&server, "orders").await;
    assert_eq!(orders.len(), 1);
    assert_now_message(&orders[0], &m);
    let dead = browse(&server, "orders.dead").await;
    assert_eq!(dead.len(), 1);
    assert_now_message(&dead[0], &m);
    assert_eq!(
        dead[0]["attributes"]["dead_letter.reason"],
        "max_deliveries"
    );
    let (_, topic) = server.get("/v1/topics/orders").await;
    assert_eq!(
        topic["stats"]["scheduled"], 1,
        "the delayed message waits: {topic}"
    );
    let (status, repeat) = server
        .post("/v1/topics/orders/messages", publish_body(&m))
        .await;
    assert_eq!(status, 200, "{repeat}");
    for result in repeat["results"].as_array().unwrap() {
        assert_eq!(
            result["duplicate"], true,
            "both dedup ids are known: {repeat}"
        );
    }
    // The nacked delivery comes back to the ordered subscription with its key.
    let wait = Duration::from_millis(3_500).saturating_sub(nacked_at.elapsed());
    tokio::time::sleep(wait).await;
    let again = pull(&server, "ordered", 5_000).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["attempt"], 2);
    assert_now_message(&again[0]["message"], &m);

    server.stop();
    assert_eq!(scan(&dir, &m), vec![], "after a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_encryption_the_same_scan_finds_every_marker() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let m = Markers::new();
    let mut server = start(&dir, None);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("encryption at rest: off")),
        "{:?}",
        server.banner
    );
    marked_scenario(&server, &m).await;
    server.stop();
    let found = scan(&dir, &m);
    let in_file = |marker: &str, prefix: &str| {
        found
            .iter()
            .any(|(mk, file)| mk == marker && file.starts_with(prefix))
    };
    for marker in m.all() {
        assert!(
            found.iter().any(|(mk, _)| mk == marker),
            "{marker} not found: {found:?}"
        );
    }
    // Every place the encrypted test relies on was really written to.
    for marker in [
        &m.payload_now,
        &m.key_now,
        &m.attr_name_now,
        &m.attr_value_now,
    ] {
        assert!(
            in_file(marker, "topics/default+orders/"),
            "{marker} in the log"
        );
        assert!(
            in_file(marker, "topics/default+orders.dead/"),
            "{marker} in the dead letter"
        );
    }
    assert!(
        in_file(&m.key_now, "meta.redb"),
        "ordering key in a retry row"
    );
    for marker in [
        &m.dedup_now,
        &m.dedup_later,
        &m.payload_later,
        &m.key_later,
        &m.attr_name_later,
        &m.attr_value_later,
    ] {
        assert!(in_file(marker, "meta.redb"), "{marker} in meta.redb");
    }
    assert!(
        in_file(&m.push_header, "meta.redb"),
        "push header in meta.redb"
    );
    assert!(in_file(&m.result, "meta.redb"), "result in a task row");
    assert!(
        in_file(&m.callback, "topics/default+jobs/"),
        "callback URL in the task's record"
    );
    assert!(
        in_file(&m.result, "topics/default+opal.callbacks/"),
        "result in the callback message"
    );
}

/// The key id in the header of every batch of a segment data file.
async fn publish_three(server: &Server, label: &str) {
    for _ in 0..3 {
        let (status, body) = server
            .post(
                "/v1/topics/t/messages",
                json!({"messages": [{"data": label}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

fn batch_key_ids(file: &Path) -> Vec<u16> {
    let bytes = std::fs::read(file).unwrap();
    let mut ids = Vec::new();
    let mut pos = 0;
    while pos + 40 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        ids.push(u16::from_le_bytes([bytes[pos + 18], bytes[pos + 19]]));
        pos += len.max(40);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_data_readable_and_wrong_keys_refuse_to_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = data_dir(&root);
    let key_file = root.path().join("opal.keys");
    let (k1, k2): ([u8; 32], [u8; 32]) = (rand::random(), rand::random());
    let with_env = |path: PathBuf| {
        move |c: &mut std::process::Command| {
            c.env("OPAL_ADMIN_KEY", ADMIN_KEY)
                .env("OPAL_ENCRYPTION_KEY_FILE", &path);
        }
    };
    write_key_file(&key_file, &[(1, k1)]);
    let mut server = Server::spawn(&dir, with_env(key_file.clone()));
    server.create_topic("t").await;
    publish_three(&server, "before rotation").await;
    server.stop();

    // Rotate: key 2 becomes current (the highest id), key 1 stays to read what it sealed.
    write_key_file(&key_file, &[(1, k1), (2, k2)]);
    let mut server = Server::spawn(&dir, with_env(key_file.clone()));
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("key ids [1, 2], current 2")),
        "{:?}",
        server.banner
    );
    publish_three(&server, "after rotation").await;
    let data: Vec<Value> = browse(&server, "t")
        .await
        .into_iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(
        data,
        [["before rotation"; 3], ["after rotation"; 3]].concat(),
    );
    server.stop();
    let segment = dir.join("topics/default+t/0/00000000000000000000.log");
    assert_eq!(batch_key_ids(&segment), vec![1, 1, 1, 2, 2, 2]);

    // Keys that do not fit refuse to start, saying why; nothing is damaged by trying.
    let other = root.path().join("other.keys");
    let stranger: [u8; 32] = rand::random();
    let missing_one = [(2, k2)];
    let wrong_one = [(1, stranger), (2, k2)];
    let cases = [
        (&missing_one[..], "key ids [1]"),
        (&wrong_one[..], "key id 1 in the key file is not the key"),
    ];
    for (keys, expected) in cases {
        write_key_file(&other, keys);
        let stderr = refused_start(&dir, with_env(other.clone()));
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    let stderr = refused_start(&dir, |_| {});
    assert!(stderr.contains("no encryption keys were given"), "{stderr}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = refused_start(&dir, with_env(key_file.clone()));
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let server = Server::spawn(&dir, with_env(key_file.clone()));
    assert_eq!(browse(&server, "t").await.len(), 6);
}
