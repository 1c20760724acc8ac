//! Opal's HTTP front door and its edges (auth, health, request ids, problem+json errors, and the
//! HTTP conventions in `layers` and `conventions`: CORS, compression, content codings, the
//! request-body deadline, `Retry-After`),
//! served over plain HTTP or TLS (`tls`, with optional client certificates: `client_cert`).
//!
//! The binary binds the listener, builds a [`ServerConfig`] and a broker backend, and calls
//! [`run`]; tests call [`router`] and drive it in-process. The server holds no state of its own:
//! every request becomes calls on the [`Broker`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use opal_core::tenancy::Directory;
use opal_core::{Broker, Clock, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod access_log;
mod auth;
mod auth_layer;
mod authz;
mod body_guard;
mod catch_panic;
mod client_cert;
mod connections;
mod conventions;
mod http;
mod json;
mod layers;
mod openapi;
mod openapi_links;
mod path;
mod problem;
mod tenancy;
/// Certificates for tests (the `test-pki` feature; not part of the server).
#[cfg(any(test, feature = "test-pki"))]
#[doc(hidden)]
pub mod test_pki;
mod tls;
#[cfg(test)]
mod tls_tests;

pub use crate::access_log::TARGET as ACCESS_LOG_TARGET;
pub use crate::client_cert::ClientCertificate;
pub use crate::tls::{ClientAuth, LoadedCertificate, ServerTls, TlsSettings};

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
    /// How long a client may take to send a request's head (request line and headers), in
    /// milliseconds (default 10 s): counted from the accept (or the end of the TLS handshake,
    /// which has the same limit) for the first request, and from the previous response for the
    /// next ones, so it is also how long an idle keep-alive connection stays open. A client that
    /// misses it is disconnected without an answer.
    pub header_timeout_ms: u64,
    /// Serve HTTPS with this certificate (and optionally ask for client certificates) instead of
    /// plain HTTP. `None` (the default): plain HTTP.
    pub tls: Option<ServerTls>,
    /// The SSRF guard's allow list, applied when a push endpoint's URL is an IP address (names
    /// are checked by the dispatcher on every connection). Default: nothing internal allowed.
    pub push_policy: opal_dispatch::AddressPolicy,
}

impl ServerConfig {
    pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_AUTH_FAILURES_PER_S: u64 = 5;
    pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;

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
            header_timeout_ms: Self::DEFAULT_HEADER_TIMEOUT_MS,
            tls: None,
            push_policy: opal_dispatch::AddressPolicy::new(),
        }
    }

    /// Checks the settings `router()` cannot check by construction: every CORS origin must be
    /// `*` or `scheme://host[:port]`, and the request and header timeouts must be at least 1 ms.
    /// `run()` calls it; `router()` skips invalid origins (with a warning) instead. TLS files were
    /// checked when the [`ServerTls`] was loaded.
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
        if self.header_timeout_ms == 0 {
            return Err(ConfigError::HeaderTimeout);
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
    #[error("the header timeout must be at least 1 ms")]
    HeaderTimeout,
    #[error("cannot read the TLS {what} file {}: {source}", .path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS {what} file {} is unusable: {reason}", .path.display())]
    TlsPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the TLS certificate and key cannot be used: {reason}")]
    TlsKey { reason: String },
    #[error("the TLS file check interval must be at least 1 s")]
    TlsReloadCheck,
    #[error("the TLS reload did not finish: {0}")]
    TlsReloadAborted(String),
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
            .field("header_timeout_ms", &self.header_timeout_ms)
            .field("tls", &self.tls)
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

/// Serves HTTP (or HTTPS, with `config.tls`) on an already-bound listener until `shutdown` is
/// cancelled, then stops accepting connections, lets in-flight requests finish (waiting
/// long-polls return at once, with what they have) and returns. The caller bounds the drain (e.g.
/// with `tokio::time::timeout`) and closes the broker afterwards. With TLS, the certificate files
/// are checked for changes while serving (see [`TlsSettings::reload_check`]).
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    broker: Arc<dyn Broker>,
    directory: Arc<dyn Directory>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    config.validate()?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let tls = config.tls.clone();
    let header_timeout = Duration::from_millis(config.header_timeout_ms);
    let app = router(config, broker, directory, shutdown.clone());
    tracing::info!(%addr, tls = tls.is_some(), "serving HTTP");
    connections::serve(listener, app, tls, header_timeout, shutdown)
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
        push_policy: config.push_policy.clone(),
        shutdown,
    });
    // A route layer, so that unknown paths are a plain 404 and the matched route is known to
    // authorization (which `auth_layer` runs once the caller is known).
    let v1 = http::v1_router().route_layer(auth_layer::RequirePrincipalLayer::new(state.clone()));
    let routes = Router::new()
        .merge(v1)
        // Unauthenticated: the OpenAPI document (`GET /openapi.json`) and the health probes.
        .merge(http::spec::router())
        .merge(http::health::router())
        .fallback(problem::no_route)
        .with_state(state);
    layers::around(routes, &config)
}
