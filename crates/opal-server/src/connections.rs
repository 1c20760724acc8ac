//! How connections reach the router: accepted with `TCP_NODELAY`, optionally through TLS, served
//! by hyper with a deadline for each request head, and drained on shutdown.
//!
//! Deadlines before a handler runs, all `header_timeout`:
//!
//! - the TLS handshake (axum-server's `RustlsAcceptor` handshake timeout);
//! - the first request's head, counted from the end of the handshake (or from the accept on plain
//!   HTTP). axum-server's first-request timeout covers the few bytes hyper reads to tell HTTP/1
//!   from an HTTP/2 preface, which hyper itself does not time;
//! - every request head, counted from when hyper starts waiting for it: at the start of the
//!   connection and again after each response. hyper's HTTP/1 `header_read_timeout`, so it is
//!   also how long an idle keep-alive connection stays open.
//!
//! The request body has its own deadline (`layers`, `request_timeout_ms`).
//!
//! Only HTTP/1.1 is served. hyper's protocol detection (needed for WebSocket upgrades) would also
//! accept HTTP/2 with prior knowledge, where none of the per-request-head deadlines above apply
//! after the first request: such requests get `505` and their connection is closed. TLS offers
//! only `http/1.1` in ALPN.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::future::Ready;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Request, StatusCode, Version};
use axum::response::{IntoResponse as _, Response};
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use axum_server::{ConnectionShutdown, Handle};
use futures_util::future::Either;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer as _;
use tower::Service;

use crate::client_cert::ClientCertAcceptor;
use crate::problem::PROBLEM_JSON;
use crate::tls::ServerTls;

/// Serves `app` on `listener` until `shutdown`, then stops accepting, lets open connections
/// finish their requests (idle ones are closed) and returns once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ServerTls>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let handle = Handle::new();
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    tokio::spawn({
        let (handle, stop, shutdown) = (handle.clone(), stop.clone(), shutdown.clone());
        async move {
            tokio::select! {
                // `None`: no deadline of its own; the caller bounds the drain.
                () = shutdown.cancelled() => handle.graceful_shutdown(None),
                () = stop.cancelled() => {}
            }
        }
    });

    let mut server = axum_server::Server::<SocketAddr>::from_listener(listener)
        .handle(handle)
        .first_request_timeout(header_timeout)
        // Failed handshakes and timeouts are the client's business; at debug level so that
        // anyone can not fill the log by connecting.
        .accept_error_handler(|peer: Option<&SocketAddr>, err: &io::Error| {
            tracing::debug!(peer = ?peer, error = %err, "connection setup failed");
        });
    server
        .http_builder()
        .http1()
        .header_read_timeout(header_timeout);
    // Per connection: the client's address as `ConnectInfo`, for the failed-authentication
    // limit and the audit trail.
    let service = tower::service_fn(move |peer: SocketAddr| {
        let service = Http1Only(axum::Extension(ConnectInfo(peer)).layer(app.clone()));
        std::future::ready(Ok::<_, std::convert::Infallible>(service))
    });
    match tls {
        None => server.acceptor(NoDelayAcceptor::new()).serve(service).await,
        Some(tls) => {
            tokio::spawn(tls.clone().watch(stop.clone()));
            let acceptor = RustlsAcceptor::new(tls.rustls_config())
                .handshake_timeout(header_timeout)
                .acceptor(NoDelayAcceptor::new());
            server
                .acceptor(ClientCertAcceptor::new(acceptor))
                .serve(service)
                .await
        }
    }
}

/// Answers HTTP/2 requests `505` and closes their connection once answered (see the module
/// docs); passes everything else to the router. A plain service around the whole router rather
/// than a middleware layer, which would cost a boxed future and clones of the router's state on
/// every request.
#[derive(Debug, Clone)]
struct Http1Only<S>(S);

impl<S, B> Service<Request<B>> for Http1Only<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.version() != Version::HTTP_2 {
            return Either::Left(self.0.call(request));
        }
        if let Some(connection) = request.extensions().get::<ConnectionShutdown>() {
            connection.graceful_shutdown();
        }
        let status = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
        let body = serde_json::json!({
            "type": "about:blank",
            "title": "HTTP Version Not Supported",
            "status": status.as_u16(),
            "detail": "this server speaks HTTP/1.1 only",
        });
        let response = (status, [(CONTENT_TYPE, PROBLEM_JSON)], body.to_string()).into_response();
        Either::Right(std::future::ready(Ok(response)))
    }
}
