//! The access log: one line per API request with method, path, status and latency; never the
//! API key; no lines for health probes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::Request;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{KEY, TestApp, authed};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn requests_are_logged_without_the_key_and_probes_are_not() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // tracing caches each callsite's interest globally. While exactly one dispatcher exists, a
    // callsite first hit on another thread (a test running alongside) is judged by that thread's
    // default alone (no subscriber) and cached as "never", which would silence it here too. A
    // second live dispatcher makes every registration consult all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    // The default test runtime is single-threaded, so the handlers run under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new();
    let request = authed("GET", "/v1/topics/absent").header("x-request-id", "log-me-1");
    assert_eq!(
        app.send(request.body(Body::empty()).unwrap()).await.status,
        404
    );
    let anonymous = Request::get("/v1/topics").header("x-request-id", "log-me-2");
    assert_eq!(
        app.send(anonymous.body(Body::empty()).unwrap())
            .await
            .status,
        401
    );
    for probe in ["/healthz", "/livez", "/readyz"] {
        let probe = Request::get(probe).body(Body::empty()).unwrap();
        assert_eq!(app.send(probe).await.status, 200);
    }
    // Paths outside `/v1` are logged too, the probes' excepted.
    let unknown = Request::get("/healthz/not-a-probe").header("x-request-id", "log-me-3");
    assert_eq!(
        app.send(unknown.body(Body::empty()).unwrap()).await.status,
        404
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("opal::access"))
        .collect();
    assert_eq!(
        access.len(),
        3,
        "three access-log lines expected in:\n{logs}"
    );
    let line = access[0];
    for expected in [
        "method=GET",
        "path=/v1/topics/absent",
        "request_id=log-me-1",
        "status=404",
    ] {
        assert!(line.contains(expected), "{expected} missing from {line}");
    }
    assert!(line.contains("principal=admin"), "{line}");
    assert!(line.contains("latency_ms="), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    for expected in ["status=401", "request_id=log-me-2", "principal=-"] {
        assert!(
            access[1].contains(expected),
            "{expected} missing from {}",
            access[1]
        );
    }
    for expected in [
        "path=/healthz/not-a-probe",
        "status=404",
        "request_id=log-me-3",
    ] {
        assert!(
            access[2].contains(expected),
            "{expected} missing from {}",
            access[2]
        );
    }
    assert!(!logs.contains(KEY), "the API key was logged:\n{logs}");
    for probe in ["path=/healthz ", "path=/livez", "path=/readyz"] {
        assert!(!logs.contains(probe), "a probe was logged:\n{logs}");
    }
}

/// Records the values given to `principal` fields of spans named `http`.
#[derive(Clone, Default)]
struct Principals(Arc<Mutex<Vec<String>>>);

impl<S> tracing_subscriber::Layer<S> for Principals
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if ctx.span(span).is_some_and(|s| s.name() == "http") {
            values.record(&mut PrincipalField(&self.0));
        }
    }
}

struct PrincipalField<'a>(&'a Mutex<Vec<String>>);

impl tracing::field::Visit for PrincipalField<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "principal" {
            self.0.lock().unwrap().push(format!("{value:?}"));
        }
    }
}

#[tokio::test]
async fn the_request_span_names_the_authenticated_caller() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let principals = Principals::default();
    let subscriber = tracing_subscriber::registry().with(principals.clone());
    // See `requests_are_logged_without_the_key_and_probes_are_not`.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::new();
    let request = authed("GET", "/v1/topics/absent")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, 404);
    let anonymous = Request::get("/v1/topics").body(Body::empty()).unwrap();
    assert_eq!(app.send(anonymous).await.status, 401);

    // Handlers' own log lines carry the caller through this span (at `debug`); a request that
    // was not authenticated records none.
    assert_eq!(*principals.0.lock().unwrap(), ["admin"]);
}
