//! The HTTP conventions every route shares, built as layers: request ids, CORS, response
//! compression, and (in `conventions`) request decompression, the request-body guard (deadline
//! and wire size), problems for every error and `Retry-After` on every `503`/`429`.
//!
//! `router()` wraps the routes in [`around`]: one tower stack with compression inside the
//! conventions layer, so that any bare error status from it still becomes a problem, and CORS
//! outside it, so that it reaches every response, problems included.
//!
//! How long a request may take:
//!
//! - *Body*: from the moment the request's headers have arrived, the whole body must arrive within
//!   `request_timeout_ms` (a deadline, not an idle timeout: a client trickling a byte now and then
//!   is cut off too). A request that misses it is answered `408` and the connection is closed.
//! - *Response*: not bounded here. Handlers bound their own waits (a long-poll pull waits at most
//!   `Limits::max_wait_ms`, then answers with what it has); SSE and WebSocket streams run until
//!   either side ends them. There is deliberately no overall request timeout, which would cut
//!   long-polls and streams, and no response-body timeout.
//! - *Headers*: `axum::serve` gives no access to hyper's connection builder, so hyper's header
//!   read timeout (which needs a timer) is not active; see the note in `run()`.

use std::time::Duration;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{AUTHORIZATION, ETAG, LINK, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::ServerConfig;
use crate::access_log::AccessLogLayer;
use crate::body_guard::BodyGuard;
use crate::catch_panic::CatchPanicLayer;
use crate::conventions::ConventionsLayer;
use crate::http::health;
use crate::problem;

/// Responses smaller than this are sent as they are: compressing them saves a few bytes at best
/// and costs CPU and latency on every call.
const MIN_COMPRESSED_BYTES: u64 = 1024;

/// The longest request-body deadline actually applied (one day).
const MAX_REQUEST_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// What a browser on an allowed origin may read from a response besides the CORS-safelisted
/// headers.
const EXPOSED_HEADERS: [HeaderName; 4] = [ETAG, LINK, RETRY_AFTER, X_REQUEST_ID];

/// The request id's header, which `SetRequestIdLayer` sets on every request (a constant, so that
/// looking it up does not parse the name each time).
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long a browser may cache a preflight answer (browsers cap it at 2 h or less).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// Wraps the whole router (routes and fallback) in the layers every request passes, as one
/// tower stack, outermost first: the `Authorization` header marked sensitive (so that no layer
/// or handler can log the key), request ids, the body limit, CORS (when origins are
/// configured), the conventions (`conventions`: content codings, the body guard, problems,
/// `Retry-After`), response compression (when on), and innermost the access log (which skips
/// the health probes) and the panic catcher.
///
/// One stack around the router rather than `Router::layer` per layer: axum wraps every route in
/// a boxed service per `Router::layer` call and clones the boxed chain below it on every
/// request, so twelve layers cost a publish about 20 µs of CPU, more than the whole `/healthz`
/// answer (docs/benchmarks.md). The access log, too, is here rather than a `Router::layer` that
/// leaves the probes out: it skips them by path instead.
pub(crate) fn around(routes: Router, config: &ServerConfig) -> Router {
    let guard = BodyGuard {
        // Clamped so that `now + timeout` cannot overflow; a day is "no limit" for a body.
        timeout: Duration::from_millis(config.request_timeout_ms.clamp(1, MAX_REQUEST_TIMEOUT_MS)),
        max_bytes: config.max_body_bytes,
    };
    let compression = config.compression.then(|| {
        ServiceBuilder::new()
            .layer(middleware::map_response(never_406))
            // `never_406` takes a plain `Response`; the compression layer's body is its own type.
            .map_response(IntoResponse::into_response)
            .layer(
                CompressionLayer::new()
                    .gzip(true)
                    .zstd(true)
                    // Bandwidth on slow links is the point, not archive size: the fastest level
                    // already gets most of the gain on JSON for a fraction of the CPU.
                    .quality(CompressionLevel::Fastest)
                    .compress_when(Compressible),
            )
            .layer(middleware::map_response(remember_status))
            .into_inner()
    });
    let stack = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        // The decompressed body goes on to the handlers, whose `json::read_body` applies the
        // body limit to the bytes it reads: a small body that inflates past the limit is a `413`
        // after at most `max_body_bytes` of output, never a buffer of the whole thing. The same
        // limit for axum's own body extractors, should a handler ever use one.
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .option_layer(cors(&config.cors_origins))
        .layer(ConventionsLayer::new(guard))
        .option_layer(compression)
        // Innermost, so that the access log records what the handler answered (before the
        // layers above rewrite or compress it) and a panic becomes a 500 that it records too.
        .layer(AccessLogLayer::skipping(&health::PATHS))
        .layer(CatchPanicLayer::new(problem::from_panic))
        .service(routes);
    Router::new().fallback_service(stack)
}

/// Whether a response is worth compressing: a success (so never a `101` WebSocket upgrade, and
/// never an error, which `ensure_problem` may still rewrite), at least [`MIN_COMPRESSED_BYTES`]
/// long or of unknown length, and not an event stream (each event must reach the client when it
/// is sent, not when a compressor block fills), an image or gRPC.
#[derive(Debug, Clone, Copy)]
struct Compressible;

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: HttpBody,
    {
        let status = response.status();
        status.is_success()
            && status != StatusCode::NO_CONTENT
            && SizeAbove::new(MIN_COMPRESSED_BYTES)
                .and(NotForContentType::SSE)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::GRPC)
                .should_compress(response)
    }
}

/// The status a handler answered with, before the compression layer saw the response.
#[derive(Debug, Clone, Copy)]
struct HandlerStatus(StatusCode);

async fn remember_status(mut response: Response) -> Response {
    let status = response.status();
    response.extensions_mut().insert(HandlerStatus(status));
    response
}

/// tower-http's compression answers `406` when `Accept-Encoding` rules out `identity` and every
/// coding it has (`br, identity;q=0`), but only after the handler has run: a publish would be
/// stored and then reported as failed, and a retry would store it twice. Such a header is
/// disregarded instead (RFC 9110 §12.5.3 allows either): the answer goes out as the handler
/// made it, uncompressed.
async fn never_406(mut response: Response) -> Response {
    if response.status() == StatusCode::NOT_ACCEPTABLE
        && let Some(HandlerStatus(status)) = response.extensions().get::<HandlerStatus>().copied()
    {
        *response.status_mut() = status;
    }
    response
}

/// One entry of `ServerConfig::cors_origins`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CorsOrigin {
    Any,
    /// `scheme://host[:port]`, lowercased, as browsers send it in `Origin`.
    Exact(HeaderValue),
}

impl CorsOrigin {
    /// `*`, or an origin `scheme://host[:port]` (one trailing `/` is forgiven). Paths, queries,
    /// credentials and the opaque origin `null` are refused: a browser never sends them as an
    /// allowed `Origin`, so such an entry would be a silent misconfiguration (or, for `null`,
    /// an opening for sandboxed pages and local files).
    pub(crate) fn parse(raw: &str) -> Result<CorsOrigin, String> {
        let origin = raw.trim();
        if origin == "*" {
            return Ok(CorsOrigin::Any);
        }
        let origin = origin
            .strip_suffix('/')
            .unwrap_or(origin)
            .to_ascii_lowercase();
        let Some((scheme, authority)) = origin.split_once("://") else {
            return Err(
                "expected `*` or `scheme://host[:port]`, e.g. `https://app.example.com`".to_owned(),
            );
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(format!("`{scheme}` is not a URL scheme"));
        }
        if authority.is_empty() {
            return Err("the host is missing".to_owned());
        }
        if let Some(c) = authority
            .chars()
            .find(|c| matches!(c, '/' | '?' | '#' | '@' | ' ' | ','))
        {
            return Err(format!(
                "an origin is only `scheme://host[:port]`; `{c}` does not belong in it"
            ));
        }
        HeaderValue::from_str(&origin)
            .map(CorsOrigin::Exact)
            .map_err(|_| "not a valid header value".to_owned())
    }
}

/// The CORS layer for the configured origins; `None` (no CORS headers at all) when there are
/// none. Entries that do not parse are skipped here (`ServerConfig::validate` reports them).
///
/// Request headers are allowed by mirroring `Access-Control-Request-Headers`: binary-mode
/// CloudEvents use any number of `ce-*` headers, which a fixed list cannot name and
/// `Access-Control-Allow-Headers: *` does not cover `Authorization`. The origin is what CORS
/// restricts; every header is still validated by the handlers.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let mut exact = Vec::new();
    let mut any = false;
    for raw in origins {
        match CorsOrigin::parse(raw) {
            Ok(CorsOrigin::Any) => any = true,
            Ok(CorsOrigin::Exact(origin)) => exact.push(origin),
            Err(reason) => {
                tracing::warn!(origin = %raw, %reason, "ignoring an invalid CORS origin")
            }
        }
    }
    let allow_origin = if any {
        AllowOrigin::any()
    } else if exact.is_empty() {
        return None;
    } else {
        AllowOrigin::list(exact)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(EXPOSED_HEADERS)
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    use opal_core::BrokerError;
    use tower::ServiceExt as _;

    use super::*;
    use crate::problem::Problem;

    fn config() -> ServerConfig {
        ServerConfig::new([0; 32])
    }

    async fn status_and_retry_after(router: &Router, uri: &str) -> (StatusCode, Option<String>) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), retry_after)
    }

    #[tokio::test]
    async fn every_503_and_429_says_when_to_retry() {
        let router = Router::new()
            .route(
                "/storage",
                get(|| async { Problem::from(BrokerError::Storage("disk on fire".into())) }),
            )
            .route(
                "/bare-503",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            )
            .route("/bare-429", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
            .route(
                "/explicit",
                get(|| async { (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, "30")]) }),
            )
            .route("/fine", get(|| async { "ok" }));
        let router = around(router, &config());
        let cases = [
            ("/storage", StatusCode::SERVICE_UNAVAILABLE, Some("5")),
            ("/bare-503", StatusCode::SERVICE_UNAVAILABLE, Some("5")),
            ("/bare-429", StatusCode::TOO_MANY_REQUESTS, Some("5")),
            ("/explicit", StatusCode::TOO_MANY_REQUESTS, Some("30")),
            ("/fine", StatusCode::OK, None),
        ];
        for (uri, status, retry_after) in cases {
            let (got_status, got_retry_after) = status_and_retry_after(&router, uri).await;
            assert_eq!(got_status, status, "{uri}");
            assert_eq!(got_retry_after.as_deref(), retry_after, "{uri}");
        }
    }

    #[test]
    fn origins_parse_as_browsers_send_them() {
        let exact = |s: &'static str| Ok(CorsOrigin::Exact(HeaderValue::from_static(s)));
        assert_eq!(CorsOrigin::parse("*"), Ok(CorsOrigin::Any));
        assert_eq!(CorsOrigin::parse(" * "), Ok(CorsOrigin::Any));
        assert_eq!(
            CorsOrigin::parse("https://app.example.com"),
            exact("https://app.example.com")
        );
        assert_eq!(
            CorsOrigin::parse("HTTPS://App.Example.COM/"),
            exact("https://app.example.com")
        );
        assert_eq!(
            CorsOrigin::parse("http://localhost:5173"),
            exact("http://localhost:5173")
        );
        assert_eq!(
            CorsOrigin::parse("http://[::1]:8080"),
            exact("http://[::1]:8080")
        );
        for bad in [
            "",
            "null",
            "app.example.com",
            "https://",
            "https://app.example.com/x",
            "https://app.example.com//",
            "https://a.example.com?q",
            "https://a.example.com#f",
            "https://user@a.example.com",
            "https://a.example.com,https://b.example.com",
            "1http://a.example.com",
            "ht tp://a.example.com",
        ] {
            assert!(CorsOrigin::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn upgrades_errors_streams_and_small_bodies_are_not_compressed() {
        let response = |status: StatusCode, content_type: &str, body: Body| {
            let mut response = Response::new(body);
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            response
        };
        let big = || Body::from(vec![b'a'; 4096]);
        let unknown_size = || {
            Body::from_stream(futures_util::stream::empty::<
                Result<bytes::Bytes, Infallible>,
            >())
        };
        let yes = [
            response(StatusCode::OK, "application/json", big()),
            response(StatusCode::CREATED, "application/json", big()),
            response(StatusCode::OK, "application/octet-stream", unknown_size()),
        ];
        for r in &yes {
            assert!(Compressible.should_compress(r), "{r:?}");
        }
        let no = [
            response(
                StatusCode::OK,
                "application/json",
                Body::from(vec![b'a'; 1023]),
            ),
            response(StatusCode::OK, "text/event-stream", unknown_size()),
            response(StatusCode::SWITCHING_PROTOCOLS, "", unknown_size()),
            response(StatusCode::NO_CONTENT, "", unknown_size()),
            response(StatusCode::BAD_REQUEST, "application/problem+json", big()),
            response(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/problem+json",
                big(),
            ),
            response(StatusCode::OK, "image/png", big()),
        ];
        for r in &no {
            assert!(!Compressible.should_compress(r), "{r:?}");
        }
    }
}
