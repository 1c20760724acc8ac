//! Opal's HTTP front door and its edges (auth, health, request ids, problem+json errors, and the
//! HTTP conventions in `layers`: CORS, compression, the request-body deadline, `Retry-After`).
//!
//! The binary binds the listener, builds a [`ServerConfig`] and a broker backend, and calls
//! [`run`]; tests call [`router`] and drive it in-process. The server holds no state of its own:
//! every request becomes calls on the [`Broker`].

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::AUTHORIZATION;
use axum::middleware;
use axum::serve::ListenerExt as _;
use opal_core::tenancy::Directory;
use opal_core::{Broker, Clock, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

mod access_log;
mod auth;
mod authz;
mod http;
mod json;
mod layers;
mod openapi;
mod path;
mod problem;
mod tenancy;

use crate::http::AppState;
use crate::tenancy::Tenancy;

/// The settings of the HTTP server.
#[derive(Clone)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Largest request body accepted, in bytes (default 8 MiB).
    pub max_body_bytes: usize,
    /// SHA-256 of the bootstrap admin key; every `/v1` request must carry
    /// `Authorization: Bearer <key>` whose SHA-256 matches.
    pub admin_key_hash: [u8; 32],
    /// Browser origins allowed to call the API cross-origin, each `scheme://host[:port]`, or
    /// `*` for any origin. Empty (the default): no CORS headers at all, so browsers refuse
    /// cross-origin calls.
    pub cors_origins: Vec<String>,
    /// Compress responses of 1 KiB and more with gzip or zstd when the client's
    /// `Accept-Encoding` allows it (default on). Event streams and WebSocket upgrades are never
    /// compressed. Compressed request bodies are accepted either way.
    pub compression: bool,
    /// How long a request body may take to arrive, counted from its headers, in milliseconds
    /// (default 30 s). A slower client is answered `408` and disconnected. The time a handler
    /// takes to answer (a long-poll waiting up to `limits.max_wait_ms`, a stream) is not counted.
    pub request_timeout_ms: u64,
    /// The clock of key expiry, rate limits and audit times (tests use a manual one).
    pub clock: Clock,
    /// Failed authentications a client address may make per second (a burst of one second's
    /// worth) before it is answered `429` for a while; 0 turns the limit off. Default 5.
    pub auth_failures_per_s: u64,
}

impl ServerConfig {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_AUTH_FAILURES_PER_S: u64 = 5;

    /// Default limits and body size, with the given admin key hash.
    pub fn new(admin_key_hash: [u8; 32]) -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            admin_key_hash,
            cors_origins: Vec::new(),
            compression: true,
            request_timeout_ms: Self::DEFAULT_REQUEST_TIMEOUT_MS,
            clock: Clock::system(),
            auth_failures_per_s: Self::DEFAULT_AUTH_FAILURES_PER_S,
        }
    }

    /// Checks the settings `router()` cannot check by construction: every CORS origin must be
    /// `*` or `scheme://host[:port]`, and the request timeout must be at least 1 ms. `run()`
    /// calls it; `router()` skips invalid origins (with a warning) instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.cors_origins {
            layers::CorsOrigin::parse(origin).map_err(|reason| ConfigError::CorsOrigin {
                origin: origin.clone(),
                reason,
            })?;
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::RequestTimeout);
        }
        Ok(())
    }
}

/// A [`ServerConfig`] setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid CORS origin {origin:?}: {reason}")]
    CorsOrigin { origin: String, reason: String },
    #[error("the request timeout must be at least 1 ms")]
    RequestTimeout,
}

// By hand, so that logging the config never prints the key hash.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("limits", &self.limits)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("admin_key_hash", &"<redacted>")
            .field("cors_origins", &self.cors_origins)
            .field("compression", &self.compression)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("auth_failures_per_s", &self.auth_failures_per_s)
            .finish()
    }
}

/// Why the server stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("serving HTTP failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Serves HTTP on an already-bound listener until `shutdown` is cancelled, then stops accepting
/// connections, lets in-flight requests finish (waiting long-polls return at once, with what they
/// have) and returns. The caller bounds the drain (e.g. with `tokio::time::timeout`) and closes
/// the broker afterwards.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    broker: Arc<dyn Broker>,
    directory: Arc<dyn Directory>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    config.validate()?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    // Responses are small and latency matters more than packet count: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
    });
    let app = router(config, broker, directory, shutdown.clone());
    tracing::info!(%addr, "serving HTTP");
    // Slow request *bodies* are cut off by `layers` (`request_timeout_ms`). Slow request
    // *headers* are not: hyper's header read timeout needs a timer on its connection builder,
    // which `axum::serve` neither sets nor exposes. Bounding them means serving connections with
    // hyper-util directly (`http1().timer(TokioTimer).header_read_timeout(..)`), or running
    // behind a proxy that bounds them.
    // Connection info gives the client's address to the failed-authentication limit and the audit
    // trail.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
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
    directory: Arc<dyn Directory>,
    shutdown: CancellationToken,
) -> Router {
    let tenancy = Arc::new(Tenancy::new(
        directory,
        Arc::clone(&broker),
        config.clock.clone(),
        config.auth_failures_per_s,
    ));
    let state = AppState::new(http::Shared {
        broker,
        tenancy,
        admin_key_hash: config.admin_key_hash,
        limits: config.limits,
        max_body_bytes: config.max_body_bytes,
        shutdown,
    });
    // Route layers, so that unknown paths are a plain 404 and the matched route is known to
    // `authorize`; authentication runs first.
    let v1 = http::v1_router()
        .route_layer(middleware::from_fn(authz::authorize))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_principal,
        ));
    let app = Router::new()
        .merge(v1)
        // Unauthenticated: the OpenAPI document (`GET /openapi.json`).
        .merge(http::spec::router())
        .fallback(problem::no_route)
        .layer(CatchPanicLayer::custom(problem::from_panic))
        .layer(access_log::AccessLogLayer)
        // Merged after the access log: probes every few seconds would drown the access log.
        .merge(http::health::router());
    // Compression, decompression and the body guard sit inside `ensure_problem`, which turns
    // their bare error statuses into problems; `Retry-After` and CORS sit outside it.
    let app = layers::inner(app, &config).layer(middleware::from_fn(problem::ensure_problem));
    layers::outer(app, &config)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost, so that no layer or handler can log the API key.
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .with_state(state)
}
