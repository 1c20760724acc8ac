//! The access log: one event per answered request (health probes aside), at target
//! `opal::access`.
//!
//! Written as a plain tower layer rather than `tower_http::trace::TraceLayer`, because the access
//! log sits on every request of the hot path: the request's span is created at `debug` level (so
//! at the default `info` filter it costs nothing, and a handler's own log lines carry the request's
//! fields only when debugging), and the one `info` event is emitted when the response is ready,
//! with everything in its fields. No future is boxed.
//!
//! Fields: `method`, `path`, `status`, `latency_ms`, `request_id`, `principal` (who was
//! authenticated, taken from the response's extensions, where `auth` leaves it) and, on a TLS
//! connection with a verified client certificate, `client_cert` (its SHA-256) and `client_cn`. A
//! `5xx` is logged at `error`. `RUST_LOG=info,opal::access=warn` turns the access log off.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http;
use axum::http::{HeaderValue, Method, Uri};
use axum::response::Response;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

use crate::ClientCertificate;
use crate::auth::Principal;
use crate::layers::X_REQUEST_ID;

/// The `tracing` target of access-log events.
pub const TARGET: &str = "opal::access";

/// Logs every request that passes through it, except those for the paths it was told to skip;
/// see the module documentation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLogLayer {
    unlogged: &'static [&'static str],
}

impl AccessLogLayer {
    /// Logs every request but those whose path is exactly one of `unlogged`.
    pub(crate) fn skipping(unlogged: &'static [&'static str]) -> Self {
        Self { unlogged }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            unlogged: self.unlogged,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AccessLog<S> {
    inner: S,
    unlogged: &'static [&'static str],
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for AccessLog<S>
where
    S: Service<http::Request<ReqBody>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if self.unlogged.contains(&request.uri().path()) {
            return AccessLogFuture {
                inner: self.inner.call(request).instrument(tracing::Span::none()),
                seen: None,
            };
        }
        // Checked once per request: with the access log filtered out, nothing is copied.
        let seen = tracing::enabled!(target: TARGET, tracing::Level::INFO).then(|| Seen {
            method: request.method().clone(),
            uri: request.uri().clone(),
            request_id: request.headers().get(&X_REQUEST_ID).cloned(),
            client: request.extensions().get::<ClientCertificate>().cloned(),
            start: Instant::now(),
        });
        let span = tracing::debug_span!(
            target: TARGET,
            "http",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %RequestId(request.headers().get(&X_REQUEST_ID)),
            principal = tracing::field::Empty,
        );
        AccessLogFuture {
            inner: self.inner.call(request).instrument(span),
            seen,
        }
    }
}

/// What the log line needs from the request, kept until the response is ready.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    request_id: Option<HeaderValue>,
    client: Option<ClientCertificate>,
    start: Instant,
}

pin_project_lite::pin_project! {
    #[derive(Debug)]
    pub(crate) struct AccessLogFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        seen: Option<Seen>,
    }
}

impl<F, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Some(seen), Ok(response)) = (this.seen.take(), &result) {
            log(&seen, response);
        }
        Poll::Ready(result)
    }
}

fn log(seen: &Seen, response: &Response) {
    let status = response.status();
    let latency_ms = seen.start.elapsed().as_secs_f64() * 1000.0;
    let principal = Caller(response.extensions().get::<Principal>());
    let request_id = RequestId(seen.request_id.as_ref());
    let path = seen.uri.path();
    let client_cert = seen.client.as_ref().map(ClientCertificate::sha256_hex);
    // As a string value, which log formats quote and escape: a CN is chosen by whoever requested
    // the certificate and may hold spaces or control characters.
    let client_cn = seen.client.as_ref().and_then(|c| c.subject_cn.as_deref());
    // One set of fields for both levels (a `tracing` level must be known at compile time).
    macro_rules! access_event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                target: TARGET,
                method = %seen.method,
                path = %path,
                status = status.as_u16(),
                latency_ms,
                %request_id,
                %principal,
                client_cert = client_cert.as_ref().map(tracing::field::display),
                client_cn,
                $message
            )
        };
    }
    if status.is_server_error() {
        access_event!(error, "request failed");
    } else {
        access_event!(info, "request");
    }
}

/// The request id as text (`-` when absent or not visible ASCII), without allocating.
struct RequestId<'a>(Option<&'a HeaderValue>);

impl fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.and_then(|v| v.to_str().ok()).unwrap_or("-"))
    }
}

/// The authenticated caller, `-` when the request was not authenticated.
struct Caller<'a>(Option<&'a Principal>);

impl fmt::Display for Caller<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(principal) => fmt::Display::fmt(principal, f),
            None => f.write_str("-"),
        }
    }
}
