//! The one way tests start the server: a fresh embedded broker in a temp dir behind `router()`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};
use opal_server::ServerConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

pub(crate) const KEY: &str = "opal_test_admin-key";

/// A server and its broker; clones share both (for requests running side by side).
#[derive(Clone)]
pub(crate) struct TestApp {
    router: Router,
    /// The broker behind the server, for what no route does (log attempts, read resends).
    pub(crate) broker: Arc<dyn opal_core::Broker>,
    pub(crate) shutdown: CancellationToken,
    _dir: Arc<TempDir>,
}

impl TestApp {
    pub(crate) fn new() -> Self {
        Self::with_config(|_| {})
    }

    pub(crate) fn with_config(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).expect("open broker");
        let mut config = ServerConfig::new(Sha256::digest(KEY.as_bytes()).into());
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let broker = Arc::new(broker);
        let router = opal_server::router(config, broker.clone(), broker.clone(), shutdown.clone());
        TestApp {
            router,
            broker,
            shutdown,
            _dir: Arc::new(dir),
        }
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("response body");
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// An authenticated request with a JSON body.
    pub(crate) async fn json(&self, method: &str, uri: &str, body: Value) -> TestResponse {
        self.raw(method, uri, Some("application/json"), body.to_string())
            .await
    }

    /// An authenticated request with any body and content type.
    pub(crate) async fn raw(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut request = authed(method, uri);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    /// A request with the given key (`None`: no `Authorization` header) and optional JSON body.
    pub(crate) async fn with_key(
        &self,
        key: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub(crate) fn router(&self) -> Router {
        self.router.clone()
    }

    /// Only the status and headers: for streams, whose bodies do not end.
    pub(crate) async fn head_of(&self, request: Request<Body>) -> (StatusCode, HeaderMap) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        (response.status(), response.headers().clone())
    }

    pub(crate) async fn get(&self, uri: &str) -> TestResponse {
        self.send(authed("GET", uri).body(Body::empty()).unwrap())
            .await
    }

    pub(crate) async fn create_topic(&self, topic: &str) {
        let response = self
            .json("PUT", &format!("/v1/topics/{topic}"), json!({}))
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    }

    /// A topic and a subscription on it, both named `name`.
    pub(crate) async fn create_topic_and_subscription(&self, name: &str, ack_deadline_ms: u64) {
        self.create_topic(name).await;
        let body = json!({"topic": name, "ack_deadline_ms": ack_deadline_ms});
        let response = self
            .json("PUT", &format!("/v1/subscriptions/{name}"), body)
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    }

    /// Creates a subscription with the given body; asserts 201 and returns the answer.
    pub(crate) async fn create_subscription(&self, name: &str, body: Value) -> Value {
        let response = self
            .json("PUT", &format!("/v1/subscriptions/{name}"), body)
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
        response.json()
    }

    /// `POST`s a JSON body to a subscription's action (`ack`, `nack`, `seek`, ...); asserts 200.
    pub(crate) async fn action(&self, subscription: &str, action: &str, body: Value) -> Value {
        let uri = format!("/v1/subscriptions/{subscription}/{action}");
        let response = self.json("POST", &uri, body).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        response.json()
    }

    /// `GET`s a resource; asserts 200 and returns the answer.
    pub(crate) async fn read(&self, uri: &str) -> Value {
        let response = self.get(uri).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        response.json()
    }

    pub(crate) async fn publish(&self, topic: &str, messages: Value) -> Value {
        let uri = format!("/v1/topics/{topic}/messages");
        let response = self
            .json("POST", &uri, json!({ "messages": messages }))
            .await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        response.json()
    }

    /// Pulls and returns the deliveries.
    pub(crate) async fn pull(&self, subscription: &str, max: usize, wait_ms: u64) -> Vec<Value> {
        let uri = format!("/v1/subscriptions/{subscription}/pull");
        let body = json!({"max_messages": max, "wait_ms": wait_ms});
        let response = self.json("POST", &uri, body).await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        response.json()["deliveries"]
            .as_array()
            .expect("deliveries array")
            .clone()
    }

    /// Pulls repeatedly (short waits) until something arrives or `within` has passed.
    pub(crate) async fn pull_until_some(&self, subscription: &str, within: Duration) -> Vec<Value> {
        let start = tokio::time::Instant::now();
        loop {
            let deliveries = self.pull(subscription, 10, 250).await;
            if !deliveries.is_empty() || start.elapsed() > within {
                return deliveries;
            }
        }
    }
}

/// The ack ids of some deliveries.
pub(crate) fn ack_ids(deliveries: &[Value]) -> Vec<Value> {
    deliveries.iter().map(|d| d["ack_id"].clone()).collect()
}

/// A JSON object without one member (e.g. `stats`, to compare a `GET` with a `PUT`'s answer).
pub(crate) fn without(value: &Value, member: &str) -> Value {
    let mut object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .clone();
    object.remove(member);
    Value::Object(object)
}

/// A fresh embedded broker in its own temp dir (deleted when the `TempDir` is dropped).
pub(crate) fn open_broker() -> (TempDir, Arc<EmbeddedBroker>) {
    let dir = TempDir::new().expect("temp dir");
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).expect("open broker");
    (dir, Arc::new(broker))
}

/// The default config, accepting [`KEY`].
pub(crate) fn server_config() -> ServerConfig {
    ServerConfig::new(Sha256::digest(KEY.as_bytes()).into())
}

pub(crate) fn authed(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(AUTHORIZATION, format!("Bearer {KEY}"))
}

#[derive(Debug)]
pub(crate) struct TestResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl TestResponse {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an RFC 9457 problem of the given status and type suffix; returns its body.
    pub(crate) fn problem(&self, status: u16, type_suffix: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(
            self.headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap()),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(
            body["type"],
            format!("urn:opal:problem:{type_suffix}"),
            "{body}"
        );
        assert_eq!(body["status"], status, "{body}");
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        body
    }
}
