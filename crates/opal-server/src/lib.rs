//! Opal's HTTP front door and its edges (auth, health, request ids, problem+json errors).
//!
//! The binary binds the listener, builds a [`ServerConfig`] and a broker backend, and calls
//! [`run`]; tests call [`router`] and drive it in-process. The server holds no state of its own:
//! every request becomes calls on the [`Broker`].

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::AUTHORIZATION;
use axum::middleware;
use axum::serve::ListenerExt as _;
use opal_core::{Broker, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

mod auth;
mod http;
mod json;
mod path;
mod problem;

use crate::auth::Authenticator;
use crate::http::AppState;

/// The settings of the HTTP server.
#[derive(Clone)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Largest request body accepted, in bytes (default 8 MiB).
    pub max_body_bytes: usize,
    /// SHA-256 of the bootstrap admin key; every `/v1` request must carry
    /// `Authorization: Bearer <key>` whose SHA-256 matches.
    pub admin_key_hash: [u8; 32],
}

impl ServerConfig {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

    /// Default limits and body size, with the given admin key hash.
    pub fn new(admin_key_hash: [u8; 32]) -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            admin_key_hash,
        }
    }
}

// By hand, so that logging the config never prints the key hash.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("limits", &self.limits)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("admin_key_hash", &"<redacted>")
            .finish()
    }
}

/// Why the server stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Serves HTTP on an already-bound listener until `shutdown` is cancelled, then stops accepting
/// connections, lets in-flight requests finish (waiting long-polls return at once, with what they
/// have) and returns. The caller bounds the drain (e.g. with `tokio::time::timeout`) and closes
/// the broker afterwards.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    // Responses are small and latency matters more than packet count: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
    });
    let app = router(config, broker, shutdown.clone());
    tracing::info!(%addr, "serving HTTP");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServerError::Serve)?;
    tracing::info!(%addr, "HTTP server drained");
    Ok(())
}

/// The whole HTTP application, without a listener: `run` serves it, tests drive it with
/// `tower::ServiceExt::oneshot`.
pub fn router(
    config: ServerConfig,
    broker: Arc<dyn Broker>,
    shutdown: CancellationToken,
) -> Router {
    let state = AppState {
        broker,
        limits: config.limits,
        max_body_bytes: config.max_body_bytes,
        shutdown,
    };
    let authenticator = Arc::new(Authenticator::new(config.admin_key_hash));
    let v1 = http::v1_router().layer(middleware::from_fn_with_state(
        authenticator,
        auth::require_principal,
    ));
    Router::new()
        .merge(v1)
        .fallback(problem::no_route)
        .layer(CatchPanicLayer::custom(problem::from_panic))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                )
                .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
        )
        // Merged after the trace layer: probes every few seconds would drown the access log.
        .merge(http::health::router())
        .layer(middleware::from_fn(problem::ensure_problem))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost, so that no layer or handler can log the API key.
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .with_state(state)
}

/// One span per request; the auth middleware fills in `principal`.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        principal = tracing::field::Empty,
    )
}
