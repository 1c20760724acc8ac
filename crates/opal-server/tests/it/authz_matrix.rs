//! The authorization matrix: every `/v1` route of the OpenAPI document, called on app `acme`'s
//! resources with no key, a malformed key, a revoked key, an expired key, another app's key and
//! every key of `acme` without the scope the route needs. The first four must get `401`, the
//! others `403`, and none may change anything: the whole readable state (apps, keys, topics and
//! subscriptions with their stats, grants, the audit trail) is read back with the admin key after
//! each call and compared. Then the key the route is meant for must succeed.
//!
//! [`table`] says, for each route, what it needs. A route of the document missing from the table
//! fails the test (and so does an entry the document lacks): a new route cannot come without
//! deciding who may call it.
//!
//! Each route gets its own server (`run()` on 127.0.0.1:0) with the same fixtures, so that one
//! route's successful call cannot disturb the next route's comparisons. The servers run on a
//! manual clock: advancing it expires a key without waiting, and refills the limit on failed
//! authentications per address between attempts without sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use opal_core::{Broker, Clock};
use opal_server::ServerError;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

use crate::support::{KEY, open_broker, server_config};

/// How long any single exchange with a server may take before the test fails.
const WITHIN: Duration = Duration::from_secs(10);
/// Routes checked at once (each on its own server).
const PARALLEL: usize = 4;
/// The manual clock's start; the expired key expires a second later.
const START: &str = "2026-11-27T12:00:00Z";
const EXPIRY: &str = "2026-11-27T12:00:01Z";
/// `acme`'s names as another app names them: qualified, with the `/` percent-encoded.
const ACME: &str = "acme%2F";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_wrong_caller_and_changes_nothing() {
    let table = table();
    let documented = documented_routes().await;
    let listed: BTreeSet<(String, String)> = table
        .iter()
        .map(|r| (r.method.to_owned(), r.template.to_owned()))
        .collect();
    assert_eq!(listed.len(), table.len(), "a route is listed twice");
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "routes of the OpenAPI document missing from the authorization matrix (give each a rule \
         in authz.rs and an entry in table()): {unlisted:?}"
    );
    let stale: Vec<_> = listed.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "entries of the authorization matrix that the OpenAPI document lacks: {stale:?}"
    );

    let failures: Vec<String> = futures_util::stream::iter(table.iter().map(check))
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every (method, path) under `/v1` in the served OpenAPI document.
async fn documented_routes() -> BTreeSet<(String, String)> {
    let server = Server::start().await;
    let reply = server
        .call(None, "GET", "/openapi.json", None, Kind::Plain)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let document: Value = serde_json::from_str(&reply.body).unwrap();
    server.stop().await;
    let paths = document["paths"]
        .as_object()
        .expect("paths in the document");
    let mut routes = BTreeSet::new();
    for (path, item) in paths.iter().filter(|(path, _)| path.starts_with("/v1")) {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() > 30, "too few routes found: {routes:?}");
    routes
}

// ------------------------------------------------------------------------------------------------
// The table.

/// Who may call a route, as the test states it (independently of `authz.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The `admin` scope (here: the bootstrap admin key).
    Admin,
    Manage,
    Read,
    /// A `publish:` pattern matching the topic.
    Publish,
    /// A `consume:` pattern matching the subscription.
    Consume,
    /// A key of the app named in the path with `read` (or the admin key).
    OwnApp,
}

impl Need {
    /// The key the route is meant for.
    fn right(self, f: &Fixture) -> (&'static str, String) {
        match self {
            Need::Admin => ("the admin key", KEY.to_owned()),
            Need::Manage => ("acme's `manage` key", f.manage.clone()),
            Need::Read | Need::OwnApp => ("acme's `read` key", f.read.clone()),
            Need::Publish => ("acme's `publish:orders*` key", f.publish.clone()),
            Need::Consume => ("acme's `consume:billing*` key", f.consume.clone()),
        }
    }

    /// Every key of acme that must be refused here.
    fn wrong(self, f: &Fixture) -> Vec<(&'static str, String)> {
        let manage = ("manage", f.manage.clone());
        let read = ("read", f.read.clone());
        let publish = ("publish:orders*", f.publish.clone());
        let consume = ("consume:billing*", f.consume.clone());
        let miss = ("publish:other* and consume:other*", f.pattern_miss.clone());
        match self {
            Need::Admin => vec![manage, read, publish, consume, miss],
            Need::Manage => vec![read, publish, consume, miss],
            Need::Read | Need::OwnApp => vec![publish, consume, miss],
            Need::Publish => vec![manage, read, consume, miss],
            Need::Consume => vec![manage, read, publish, miss],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// Server-Sent Events: success is `200` with `text/event-stream`.
    Sse,
    /// A real WebSocket handshake: success is `101`.
    WebSocket,
}

/// What the right key's call does to the readable state. A call that changes it shows that the
/// comparisons after the wrong calls would have seen the same change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Nothing,
    Changes,
    /// Its change cannot be read back (the reason is the argument).
    Unreadable(&'static str),
}

#[derive(Debug)]
struct Route {
    method: &'static str,
    /// As in the OpenAPI document.
    template: &'static str,
    /// The request: `{p}` is where a name of acme's starts (empty for acme's own keys, `acme%2F`
    /// for another app's); `{spare}` is the id of acme's spare key.
    path: &'static str,
    body: fn(&Fixture) -> Option<Value>,
    need: Need,
    kind: Kind,
    effect: Effect,
    /// For a list without a name in its path, another app's key is not refused: it lists its own
    /// (empty) resources under this member.
    own_list: Option<&'static str>,
    /// What another app's key gets: 403, or 404 where nothing in the path names the app (a
    /// task's id), so that another app's resource answers like a missing one.
    other_app_status: u16,
}

fn route(method: &'static str, template: &'static str, path: &'static str, need: Need) -> Route {
    Route {
        method,
        template,
        path,
        body: |_| None,
        need,
        kind: Kind::Plain,
        effect: Effect::Nothing,
        own_list: None,
        other_app_status: 403,
    }
}

impl Route {
    fn body(self, body: fn(&Fixture) -> Option<Value>) -> Self {
        Route { body, ..self }
    }

    fn changes(self) -> Self {
        Route {
            effect: Effect::Changes,
            ..self
        }
    }

    fn stream(self, kind: Kind) -> Self {
        Route {
            kind,
            effect: Effect::Unreadable("a stream leases deliveries in the background"),
            ..self
        }
    }

    fn other_app_answers(self, status: u16) -> Self {
        Route {
            other_app_status: status,
            ..self
        }
    }

    fn own_list(self, member: &'static str) -> Self {
        Route {
            own_list: Some(member),
            ..self
        }
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

fn table() -> Vec<Route> {
    use Need::*;
    vec![
        // Topics.
        route("GET", "/v1/topics", "/v1/topics", Read).own_list("topics"),
        route("PUT", "/v1/topics/{topic}", "/v1/topics/{p}fresh", Manage)
            .body(|_| Some(json!({"partitions": 2})))
            .changes(),
        route("GET", "/v1/topics/{topic}", "/v1/topics/{p}orders", Read),
        route(
            "PATCH",
            "/v1/topics/{topic}",
            "/v1/topics/{p}orders",
            Manage,
        )
        .body(|_| Some(json!({"dedup_window_ms": 300_000})))
        .changes(),
        route(
            "DELETE",
            "/v1/topics/{topic}",
            "/v1/topics/{p}spare",
            Manage,
        )
        .changes(),
        route(
            "POST",
            "/v1/topics/{topic}/messages",
            "/v1/topics/{p}orders/messages",
            Publish,
        )
        .body(|_| Some(json!({"messages": [{"data": {"n": 9}}]})))
        .changes(),
        route(
            "GET",
            "/v1/topics/{topic}/messages",
            "/v1/topics/{p}orders/messages",
            Read,
        ),
        // Grants.
        route(
            "GET",
            "/v1/topics/{topic}/grants",
            "/v1/topics/{p}orders/grants",
            Read,
        ),
        route(
            "POST",
            "/v1/topics/{topic}/grants",
            "/v1/topics/{p}orders.dead/grants",
            Manage,
        )
        .body(|_| Some(json!({"app": "isv", "rights": ["subscribe"]})))
        .changes(),
        route(
            "DELETE",
            "/v1/topics/{topic}/grants/{app}",
            "/v1/topics/{p}orders/grants/isv",
            Manage,
        )
        .changes(),
        // Subscriptions.
        route("GET", "/v1/subscriptions", "/v1/subscriptions", Read).own_list("subscriptions"),
        route(
            "PUT",
            "/v1/subscriptions/{subscription}",
            "/v1/subscriptions/{p}fresh.sub",
            Manage,
        )
        .body(|_| Some(json!({"topic": "orders"})))
        .changes(),
        route(
            "GET",
            "/v1/subscriptions/{subscription}",
            "/v1/subscriptions/{p}billing",
            Read,
        ),
        route(
            "PATCH",
            "/v1/subscriptions/{subscription}",
            "/v1/subscriptions/{p}billing",
            Manage,
        )
        .body(|_| Some(json!({"ack_deadline_ms": 45_000})))
        .changes(),
        route(
            "DELETE",
            "/v1/subscriptions/{subscription}",
            "/v1/subscriptions/{p}billing",
            Manage,
        )
        .changes(),
        route(
            "POST",
            "/v1/subscriptions/{subscription}/seek",
            "/v1/subscriptions/{p}billing/seek",
            Manage,
        )
        .body(|_| Some(json!({"to": "latest"})))
        .changes(),
        route(
            "POST",
            "/v1/subscriptions/{subscription}/redrive",
            "/v1/subscriptions/{p}dead.inspect/redrive",
            Manage,
        )
        .body(|_| Some(json!({"max_messages": 10})))
        .changes(),
        // Push endpoints.
        route(
            "GET",
            "/v1/subscriptions/{subscription}/secret",
            "/v1/subscriptions/{p}hooked/secret",
            Manage,
        ),
        route(
            "POST",
            "/v1/subscriptions/{subscription}/secret/rotate",
            "/v1/subscriptions/{p}hooked/secret/rotate",
            Manage,
        )
        .body(|_| Some(json!({"overlap_ms": 60_000})))
        .changes(),
        route(
            "GET",
            "/v1/subscriptions/{subscription}/attempts",
            "/v1/subscriptions/{p}hooked/attempts",
            Read,
        ),
        // Tasks.
        route("GET", "/v1/tasks/{message_id}", "/v1/tasks/{task}", Read).other_app_answers(404),
        // No read shows the resend queue (and `hooked` has no attempts to queue), but every
        // resend is in the audit trail, which the comparisons read.
        route(
            "POST",
            "/v1/subscriptions/{subscription}/resend",
            "/v1/subscriptions/{p}hooked/resend",
            Manage,
        )
        .body(|_| Some(json!({"since": "2026-11-27T00:00:00Z"})))
        .changes(),
        // Consuming.
        route(
            "POST",
            "/v1/subscriptions/{subscription}/pull",
            "/v1/subscriptions/{p}billing/pull",
            Consume,
        )
        .body(|_| Some(json!({"max_messages": 10})))
        .changes(),
        route(
            "POST",
            "/v1/subscriptions/{subscription}/ack",
            "/v1/subscriptions/{p}billing/ack",
            Consume,
        )
        .body(|f| Some(json!({"ack_ids": [f.held]})))
        .changes(),
        route(
            "POST",
            "/v1/subscriptions/{subscription}/nack",
            "/v1/subscriptions/{p}billing/nack",
            Consume,
        )
        .body(|f| Some(json!({"ack_ids": [f.held], "delay_ms": 0})))
        .changes(),
        Route {
            effect: Effect::Unreadable("a lease's deadline is not shown by any read"),
            ..route(
                "POST",
                "/v1/subscriptions/{subscription}/extend",
                "/v1/subscriptions/{p}billing/extend",
                Consume,
            )
            .body(|f| Some(json!({"ack_ids": [f.held], "ack_deadline_ms": 60_000})))
        },
        route(
            "GET",
            "/v1/subscriptions/{subscription}/events",
            "/v1/subscriptions/{p}billing/events",
            Consume,
        )
        .stream(Kind::Sse),
        route(
            "GET",
            "/v1/subscriptions/{subscription}/ws",
            "/v1/subscriptions/{p}billing/ws",
            Consume,
        )
        .stream(Kind::WebSocket),
        // Apps, keys and the audit trail.
        route("GET", "/v1/apps", "/v1/apps", Admin),
        route("POST", "/v1/apps", "/v1/apps", Admin)
            .body(|_| Some(json!({"name": "fresh-app"})))
            .changes(),
        route("GET", "/v1/apps/{app}", "/v1/apps/acme", OwnApp),
        route("PATCH", "/v1/apps/{app}", "/v1/apps/acme", Admin)
            .body(|_| Some(json!({"quotas": {"topics": 100}})))
            .changes(),
        route("DELETE", "/v1/apps/{app}", "/v1/apps/idle", Admin).changes(),
        route("GET", "/v1/apps/{app}/keys", "/v1/apps/acme/keys", Admin),
        route("POST", "/v1/apps/{app}/keys", "/v1/apps/acme/keys", Admin)
            .body(|_| Some(json!({"name": "fresh", "scopes": ["read"]})))
            .changes(),
        route(
            "GET",
            "/v1/apps/{app}/keys/{id}",
            "/v1/apps/acme/keys/{spare}",
            Admin,
        ),
        route(
            "DELETE",
            "/v1/apps/{app}/keys/{id}",
            "/v1/apps/acme/keys/{spare}",
            Admin,
        )
        .changes(),
        route(
            "POST",
            "/v1/apps/{app}/keys/{id}/rotate",
            "/v1/apps/acme/keys/{spare}/rotate",
            Admin,
        )
        .changes(),
        route("GET", "/v1/audit", "/v1/audit", Admin),
    ]
}

// ------------------------------------------------------------------------------------------------
// Checking one route.

/// One route through every case, on a server of its own; what went wrong, if anything.
async fn check(route: &Route) -> Vec<String> {
    let f = Fixture::new().await;
    let name = route.name();
    let own = route
        .path
        .replace("{p}", "")
        .replace("{spare}", &f.spare)
        .replace("{task}", &f.task);
    let foreign = route
        .path
        .replace("{p}", ACME)
        .replace("{spare}", &f.spare)
        .replace("{task}", &f.task);
    let body = (route.body)(&f);
    let mut failures = Vec::new();
    // What every call is compared with; after a change (already reported), the changed state, so
    // that each change is reported once, by the call that made it.
    let mut state = f.snapshot().await;

    let bearer = |key: &str| Some(format!("Bearer {key}"));
    let refused = |what: &str, auth: Option<String>, status: u16| Case {
        what: what.to_owned(),
        auth,
        other_app: false,
        status,
    };
    let mut cases = vec![
        refused("no key", None, 401),
        refused("a malformed key", Some("Bearer opal_garbage".into()), 401),
        refused("a revoked key", bearer(&f.revoked), 401),
        refused("an expired key", bearer(&f.expired), 401),
        Case {
            other_app: true,
            ..refused(
                "another app's key (isv, every scope)",
                bearer(&f.isv),
                route.other_app_status,
            )
        },
    ];
    for (scopes, key) in route.need.wrong(&f) {
        cases.push(refused(
            &format!("acme's key with `{scopes}`"),
            bearer(&key),
            403,
        ));
    }
    for case in cases {
        let path = if case.other_app { &foreign } else { &own };
        // A second on for every attempt: failed authentications never add up to the per-address
        // limit (5 a second), which would answer 429 instead.
        f.server.clock.advance(Duration::from_secs(1));
        let reply = f
            .server
            .call(
                case.auth.as_deref(),
                route.method,
                path,
                body.as_ref(),
                route.kind,
            )
            .await;
        let at = format!("{name} ({} {path}) with {}", route.method, case.what);
        match route.own_list {
            Some(member) if case.other_app => {
                // Nothing in the path names acme: the list is isv's own, and empty.
                let listed = serde_json::from_str::<Value>(&reply.body)
                    .ok()
                    .map(|v| v[member].clone());
                if reply.status != 200 || listed != Some(json!([])) {
                    failures.push(format!(
                        "{at}: expected 200 with no {member}, got {reply:?}"
                    ));
                }
            }
            _ => failures.extend(refusal(&at, &reply, case.status)),
        }
        let after = f.snapshot().await;
        if after != state {
            failures.push(format!("{at} changed state: {}", diff(&state, &after)));
            state = after;
        }
    }

    let (who, key) = route.need.right(&f);
    f.server.clock.advance(Duration::from_secs(1));
    let reply = f
        .server
        .call(
            bearer(&key).as_deref(),
            route.method,
            &own,
            body.as_ref(),
            route.kind,
        )
        .await;
    let at = format!("{name} ({} {own}) with {who}", route.method);
    let succeeded = match route.kind {
        Kind::Plain => (200..300).contains(&reply.status),
        Kind::Sse => reply.status == 200 && reply.content_type.starts_with("text/event-stream"),
        Kind::WebSocket => reply.status == 101,
    };
    if !succeeded {
        failures.push(format!("{at}: expected success, got {reply:?}"));
    }
    let after = f.snapshot().await;
    match route.effect {
        Effect::Nothing if after != state => {
            failures.push(format!("{at} changed state: {}", diff(&state, &after)));
        }
        Effect::Changes if succeeded && after == state => failures.push(format!(
            "{at} succeeded but changed nothing that can be read back, so the comparisons after \
             the wrong calls prove nothing"
        )),
        _ => {}
    }
    f.server.stop().await;
    failures
}

/// A wrong caller.
struct Case {
    what: String,
    /// The `Authorization` header, if any.
    auth: Option<String>,
    /// Names acme's resources qualified, as another app would.
    other_app: bool,
    /// 401 or 403.
    status: u16,
}

/// What is wrong with a reply that should be a refusal with `expected` (401 or 403).
fn refusal(at: &str, reply: &Reply, expected: u16) -> Option<String> {
    if reply.status != expected {
        return Some(format!("{at}: expected {expected}, got {reply:?}"));
    }
    if reply.content_type != "application/problem+json" {
        return Some(format!("{at}: the refusal is not a problem: {reply:?}"));
    }
    if expected == 401 && !reply.challenge {
        return Some(format!("{at}: 401 without WWW-Authenticate: {reply:?}"));
    }
    None
}

/// Where two snapshots differ: one line per differing value, by member and JSON pointer.
fn diff(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> String {
    let before = Value::Object(before.clone().into_iter().collect());
    let after = Value::Object(after.clone().into_iter().collect());
    let mut lines = Vec::new();
    differences("", Some(&before), Some(&after), &mut lines);
    lines.iter().map(|line| format!("\n    {line}")).collect()
}

fn differences(at: &str, before: Option<&Value>, after: Option<&Value>, lines: &mut Vec<String>) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            for key in b.keys().chain(a.keys()).collect::<BTreeSet<_>>() {
                differences(&format!("{at}/{key}"), b.get(key), a.get(key), lines);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) => {
            for i in 0..b.len().max(a.len()) {
                differences(&format!("{at}/{i}"), b.get(i), a.get(i), lines);
            }
        }
        _ if before != after => {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_owned(), Value::to_string);
            lines.push(format!("{at}: {} -> {}", show(before), show(after)));
        }
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------------
// Servers and fixtures.

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    /// Whether `WWW-Authenticate` was sent.
    challenge: bool,
    body: String,
}

/// `run()` on 127.0.0.1:0 with a fresh embedded broker and a manual clock.
struct Server {
    addr: SocketAddr,
    clock: Clock,
    http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
    _broker: Arc<dyn Broker>,
    _dir: TempDir,
}

impl Server {
    async fn start() -> Self {
        let (dir, broker) = open_broker();
        let clock = Clock::manual(START.parse().unwrap());
        let mut config = server_config();
        config.clock = clock.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(opal_server::run(
            listener,
            config,
            broker.clone(),
            broker.clone(),
            shutdown.clone(),
        ));
        Server {
            addr,
            clock,
            http: reqwest::Client::new(),
            shutdown,
            task,
            _broker: broker,
            _dir: dir,
        }
    }

    /// One request with the given `Authorization` header (or none); the reply as it comes.
    async fn call(
        &self,
        auth: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        kind: Kind,
    ) -> Reply {
        if kind == Kind::WebSocket {
            return self.websocket(auth, path).await;
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = timeout(WITHIN, request.send())
            .await
            .unwrap_or_else(|_| panic!("no answer to {path} within {WITHIN:?}"))
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let challenge = response.headers().contains_key(WWW_AUTHENTICATE);
        let body = if kind == Kind::Sse && status == 200 {
            // An open stream: dropping the response closes it.
            String::new()
        } else {
            timeout(WITHIN, response.text())
                .await
                .unwrap_or_else(|_| panic!("no body from {path} within {WITHIN:?}"))
                .unwrap()
        };
        Reply {
            status,
            content_type,
            challenge,
            body,
        }
    }

    /// A real WebSocket handshake; `101` when it upgraded (the socket is closed again at once).
    async fn websocket(&self, auth: Option<&str>, path: &str) -> Reply {
        let mut request = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert(AUTHORIZATION, auth.parse().unwrap());
        }
        let handshake = timeout(WITHIN, tokio_tungstenite::connect_async(request))
            .await
            .unwrap_or_else(|_| panic!("no handshake answer from {path} within {WITHIN:?}"));
        match handshake {
            Ok((mut ws, response)) => {
                let _ = timeout(WITHIN, ws.close(None)).await;
                Reply {
                    status: response.status().as_u16(),
                    content_type: String::new(),
                    challenge: false,
                    body: String::new(),
                }
            }
            Err(tungstenite::Error::Http(response)) => Reply {
                status: response.status().as_u16(),
                content_type: response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                challenge: response.headers().contains_key(WWW_AUTHENTICATE),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            },
            Err(other) => panic!("WebSocket handshake with {path} failed: {other}"),
        }
    }

    /// A call with `key` that must succeed; its JSON answer (`null` when empty).
    async fn ok(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let auth = format!("Bearer {key}");
        let reply = self
            .call(Some(&auth), method, path, body.as_ref(), Kind::Plain)
            .await;
        assert!(
            (200..300).contains(&reply.status),
            "{method} {path}: {reply:?}"
        );
        if reply.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&reply.body).unwrap()
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WITHIN, self.task)
            .await
            .expect("run returned after shutdown")
            .unwrap()
            .expect("run ended without error");
    }
}

/// A server with apps `acme`, `isv` and `idle`, keys of every kind, and acme's resources:
/// topics `orders`, `orders.dead` and `spare`; subscription `billing` on `orders` (one delivery
/// allowed, dead letters to `orders.dead`) with one message waiting, one leased (`held`) and one
/// dead-lettered; subscription `dead.inspect` on `orders.dead` holding that dead letter; a grant
/// of `orders` to `isv`.
struct Fixture {
    server: Server,
    manage: String,
    read: String,
    publish: String,
    consume: String,
    /// `publish:other*` and `consume:other*`: patterns matching none of the names used.
    pattern_miss: String,
    /// Every scope, revoked.
    revoked: String,
    /// Every scope, expired.
    expired: String,
    /// isv's key with every scope.
    isv: String,
    /// The id of a key of acme that the key routes act on.
    spare: String,
    /// The ack id of a delivery of `billing` leased to acme.
    held: String,
    /// The id of a task (a message with a callback) on acme's topic `spare`.
    task: String,
}

const ALL_SCOPES: [&str; 4] = ["manage", "read", "publish:*", "consume:*"];

impl Fixture {
    async fn new() -> Self {
        let server = Server::start().await;
        for app in ["acme", "isv", "idle"] {
            server
                .ok(KEY, "POST", "/v1/apps", Some(json!({"name": app})))
                .await;
        }
        let key = async |app: &str, scopes: &[&str], expires_at: Option<&str>| {
            let body = json!({"name": "matrix", "scopes": scopes, "expires_at": expires_at});
            let created = server
                .ok(KEY, "POST", &format!("/v1/apps/{app}/keys"), Some(body))
                .await;
            let text = |member: &str| created[member].as_str().unwrap().to_owned();
            (text("id"), text("key"))
        };
        let (_, manage) = key("acme", &["manage"], None).await;
        let (_, read) = key("acme", &["read"], None).await;
        let (_, publish) = key("acme", &["publish:orders*"], None).await;
        let (_, consume) = key("acme", &["consume:billing*"], None).await;
        let (_, pattern_miss) = key("acme", &["publish:other*", "consume:other*"], None).await;
        let (revoked_id, revoked) = key("acme", &ALL_SCOPES, None).await;
        let (expired_id, expired) = key("acme", &ALL_SCOPES, Some(EXPIRY)).await;
        let (spare, _) = key("acme", &["read"], None).await;
        let (_, isv) = key("isv", &ALL_SCOPES, None).await;
        let revoked_path = format!("/v1/apps/acme/keys/{revoked_id}");
        server.ok(KEY, "DELETE", &revoked_path, None).await;
        server.clock.advance(Duration::from_secs(2));
        for (id, status) in [(&revoked_id, "revoked"), (&expired_id, "expired")] {
            let shown = server
                .ok(KEY, "GET", &format!("/v1/apps/acme/keys/{id}"), None)
                .await;
            assert_eq!(shown["status"], status, "{shown}");
        }

        for topic in ["orders", "orders.dead", "spare"] {
            server
                .ok(
                    &manage,
                    "PUT",
                    &format!("/v1/topics/{topic}"),
                    Some(json!({})),
                )
                .await;
        }
        let billing = json!({
            "topic": "orders",
            "ack_deadline_ms": 60_000,
            "max_deliveries": 1,
            "dead_letter_topic": "orders.dead",
        });
        server
            .ok(&manage, "PUT", "/v1/subscriptions/billing", Some(billing))
            .await;
        // Never called: the server runs no dispatcher, and the host is not resolved here.
        let hooked = json!({"topic": "orders", "push": {"url": "https://hooks.example.com/in"}});
        server
            .ok(&manage, "PUT", "/v1/subscriptions/hooked", Some(hooked))
            .await;
        let inspect = json!({"topic": "orders.dead"});
        server
            .ok(
                &manage,
                "PUT",
                "/v1/subscriptions/dead.inspect",
                Some(inspect),
            )
            .await;
        let messages = json!({"messages": [{"data": 1}, {"data": 2}, {"data": 3}]});
        server
            .ok(
                &publish,
                "POST",
                "/v1/topics/orders/messages",
                Some(messages),
            )
            .await;
        let mut leased: Vec<String> = Vec::new();
        let deadline = Instant::now() + WITHIN;
        while leased.len() < 2 {
            assert!(Instant::now() < deadline, "not 2 deliveries in time");
            let pull = json!({"max_messages": 2 - leased.len(), "wait_ms": 1000});
            let answer = server
                .ok(
                    &consume,
                    "POST",
                    "/v1/subscriptions/billing/pull",
                    Some(pull),
                )
                .await;
            for delivery in answer["deliveries"].as_array().unwrap() {
                leased.push(delivery["ack_id"].as_str().unwrap().to_owned());
            }
        }
        let nack = json!({"ack_ids": [leased[1]], "delay_ms": 0});
        let answer = server
            .ok(
                &consume,
                "POST",
                "/v1/subscriptions/billing/nack",
                Some(nack),
            )
            .await;
        assert_eq!(answer["nacked"], 1, "{answer}");
        let inspect_path = format!("/v1/subscriptions/{ACME}dead.inspect");
        while server.ok(KEY, "GET", &inspect_path, None).await["stats"]["backlog"] != 1 {
            assert!(Instant::now() < deadline, "not dead-lettered in time");
            sleep(Duration::from_millis(10)).await;
        }
        let task = json!({"messages": [{"data": 1, "callback": {"topic": "acme/orders.dead"}}]});
        let published = server
            .ok(
                KEY,
                "POST",
                &format!("/v1/topics/{ACME}spare/messages"),
                Some(task),
            )
            .await;
        let task = published["results"][0]["id"].as_str().unwrap().to_owned();
        let grant = json!({"app": "isv", "rights": ["subscribe"]});
        server
            .ok(&manage, "POST", "/v1/topics/orders/grants", Some(grant))
            .await;

        Fixture {
            server,
            manage,
            read,
            publish,
            consume,
            pattern_miss,
            revoked,
            expired,
            isv,
            task,
            spare,
            held: leased.swap_remove(0),
        }
    }

    /// Everything that can be read back, by what it is. Lists come from each app's own view
    /// (acme's `read` key, isv's key, the admin key for `default`), details from the admin key.
    async fn snapshot(&self) -> BTreeMap<String, Value> {
        let s = &self.server;
        let mut state = BTreeMap::new();
        let apps = s.ok(KEY, "GET", "/v1/apps", None).await;
        for app in apps["apps"].as_array().unwrap() {
            let name = app["name"].as_str().unwrap();
            let path = format!("/v1/apps/{name}");
            state.insert(format!("app {name}"), s.ok(KEY, "GET", &path, None).await);
            let keys = s.ok(KEY, "GET", &format!("{path}/keys"), None).await;
            state.insert(format!("keys of {name}"), keys);
        }
        state.insert("apps".into(), apps);
        let audit = s.ok(KEY, "GET", "/v1/audit?limit=1000", None).await;
        state.insert("audit".into(), audit);
        for (app, lister, prefix) in [
            ("default", KEY, ""),
            ("acme", self.read.as_str(), ACME),
            ("isv", self.isv.as_str(), "isv%2F"),
        ] {
            for (kind, member) in [("topics", "topics"), ("subscriptions", "subscriptions")] {
                let list = s
                    .ok(lister, "GET", &format!("/v1/{kind}?limit=1000"), None)
                    .await;
                for item in list[member].as_array().unwrap() {
                    let name = item["name"].as_str().unwrap();
                    let path = format!("/v1/{kind}/{prefix}{name}");
                    let mut detail = s.ok(KEY, "GET", &path, None).await;
                    // Grows with the clock, not with anything a call did.
                    if let Some(stats) = detail["stats"].as_object_mut() {
                        stats.remove("oldest_unacked_age_ms");
                    }
                    state.insert(format!("{kind} {app}/{name}"), detail);
                    if kind == "topics" {
                        let grants = s.ok(KEY, "GET", &format!("{path}/grants"), None).await;
                        state.insert(format!("grants on {app}/{name}"), grants);
                    }
                }
                state.insert(format!("{kind} of {app}"), list);
            }
        }
        state
    }
}
