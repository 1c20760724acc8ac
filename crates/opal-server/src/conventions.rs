//! The conventions every request and answer passes, as one tower layer with no box on the way:
//!
//! - a request body compressed with anything but gzip or zstd, or more than once, is refused
//!   with a `415` problem; a gzip or zstd body is decompressed for the handlers (and only such a
//!   body goes through the decompressor);
//! - a request body must arrive within its deadline and limit of bytes on the wire
//!   (`body_guard`), or the answer is a `408` or `413` problem;
//! - every error answer is a problem (`problem::ensure_problem`);
//! - every `503` and `429` says when to retry.
//!
//! One layer rather than four `axum::middleware` functions: each of those clones and boxes the
//! service below it and boxes its future on every request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::header::{ACCEPT_ENCODING, CONNECTION, CONTENT_ENCODING, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tower_http::decompression::{DecompressionBody, RequestDecompression};

use crate::body_guard::{BodyGuard, Cut, CutFlag, GuardedBody};
use crate::problem::{self, Problem, ProblemKind};

/// Seconds a client should wait before retrying a `503` or `429` that did not say: the same
/// value `problem::Problem::unavailable` sends.
const DEFAULT_RETRY_AFTER_SECS: &str = "5";

/// The content codings a request body may use, as listed in `415` answers.
const ACCEPTED_CODINGS: &str = "gzip, zstd";

#[derive(Debug, Clone, Copy)]
pub(crate) struct ConventionsLayer {
    guard: BodyGuard,
}

impl ConventionsLayer {
    pub(crate) fn new(guard: BodyGuard) -> Self {
        Self { guard }
    }
}

impl<S: Clone> Layer<S> for ConventionsLayer {
    type Service = Conventions<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Conventions {
            inner,
            guard: self.guard,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Conventions<S> {
    inner: S,
    guard: BodyGuard,
}

impl<S> Service<Request<Body>> for Conventions<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>
        + Service<Request<DecompressionBody<Body>>, Response = Response, Error = Infallible>
        + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ConventionsFuture<
        <S as Service<Request<Body>>>::Future,
        <RequestDecompression<S> as Service<Request<Body>>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let encoded = match canonical_encoding(request.headers_mut()) {
            Ok(encoded) => encoded,
            Err(refused) => {
                return ConventionsFuture::Answered {
                    response: Some(refused.into_response()),
                };
            }
        };
        // Requests without a body pass untouched (a WebSocket upgrade among them).
        let watch = if request.body().is_end_stream() {
            None
        } else {
            let cut = CutFlag::default();
            let http1 = request.version() <= Version::HTTP_11;
            let (guard, watched) = (self.guard, Arc::clone(&cut));
            request = request.map(|body| Body::new(GuardedBody::new(body, guard, watched)));
            Some(Watch { cut, guard, http1 })
        };
        if encoded {
            // Rare: the decompressor is built for the request, around the service made ready
            // (a clone stays for the next request).
            let fresh = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, fresh);
            let mut decompressing = RequestDecompression::new(ready).gzip(true).zstd(true);
            ConventionsFuture::Decompressing {
                inner: decompressing.call(request),
                watch,
            }
        } else {
            ConventionsFuture::Plain {
                inner: Service::<Request<Body>>::call(&mut self.inner, request),
                watch,
            }
        }
    }
}

/// What the answer needs to know about a guarded body.
#[derive(Debug)]
pub(crate) struct Watch {
    cut: CutFlag,
    guard: BodyGuard,
    http1: bool,
}

pin_project_lite::pin_project! {
    #[project = Projected]
    #[derive(Debug)]
    pub(crate) enum ConventionsFuture<P, D> {
        Answered { response: Option<Response> },
        Plain {
            #[pin]
            inner: P,
            watch: Option<Watch>,
        },
        Decompressing {
            #[pin]
            inner: D,
            watch: Option<Watch>,
        },
    }
}

impl<P, D, B> Future for ConventionsFuture<P, D>
where
    P: Future<Output = Result<Response, Infallible>>,
    D: Future<Output = Result<Response<B>, Infallible>>,
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, watch) = match self.project() {
            Projected::Answered { response } => (
                response
                    .take()
                    .expect("a future polled again after it answered"),
                None,
            ),
            Projected::Plain { inner, watch } => {
                let Ok(response) = ready!(inner.poll(cx));
                (response, watch.take())
            }
            Projected::Decompressing { inner, watch } => {
                let Ok(response) = ready!(inner.poll(cx));
                (response.map(Body::new), watch.take())
            }
        };
        let response = match watch.as_ref().and_then(|w| Some((w, *w.cut.get()?))) {
            None => response,
            Some((watch, Cut::TooLarge)) => Problem::new(
                ProblemKind::PayloadTooLarge,
                format!(
                    "the request body is larger than the limit of {} bytes",
                    watch.guard.max_bytes
                ),
            )
            .into_response(),
            Some((watch, Cut::Deadline)) => request_timeout(watch.guard.timeout, watch.http1),
        };
        Poll::Ready(Ok(ensure_retry_after(problem::ensure_problem(response))))
    }
}

/// Accepts `Content-Encoding` `gzip` (or its alias `x-gzip`), `zstd` and `identity`, in any
/// case, and leaves the canonical name for the decompressor (`true`) or no header (`false`);
/// answers anything else, or more than one coding, with a `415` problem listing what is
/// accepted (RFC 9110 §15.5.16).
fn canonical_encoding(headers: &mut HeaderMap) -> Result<bool, Problem> {
    if !headers.contains_key(CONTENT_ENCODING) {
        return Ok(false);
    }
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(unsupported_encoding(
                "the `Content-Encoding` header is not ASCII".to_owned(),
            ));
        };
        codings.extend(
            value
                .split(',')
                .map(|coding| coding.trim().to_ascii_lowercase())
                .filter(|coding| !coding.is_empty() && coding != "identity"),
        );
    }
    let canonical = match codings.as_slice() {
        [] => None,
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Some("gzip"),
            "zstd" => Some("zstd"),
            other => {
                return Err(unsupported_encoding(format!(
                    "`Content-Encoding: {other}` is not supported; send the body as it is, or \
                     compressed with one of {ACCEPTED_CODINGS}"
                )));
            }
        },
        _ => {
            return Err(unsupported_encoding(format!(
                "a request body may be compressed once, with one of {ACCEPTED_CODINGS}; got \
                 `{}`",
                codings.join(", ")
            )));
        }
    };
    headers.remove(CONTENT_ENCODING);
    if let Some(coding) = canonical {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    Ok(canonical.is_some())
}

fn unsupported_encoding(detail: String) -> Problem {
    Problem::new(ProblemKind::UnsupportedMediaType, detail)
        .with_header(ACCEPT_ENCODING, ACCEPTED_CODINGS)
}

/// The `408` problem. The request was not read to its end, so the connection cannot carry
/// another request: HTTP/1 answers say so with `Connection: close` (RFC 9110 §15.5.9).
fn request_timeout(timeout: Duration, http1: bool) -> Response {
    let problem = Problem::new(
        ProblemKind::RequestTimeout,
        format!(
            "the request body did not arrive within {} ms of its headers",
            timeout.as_millis()
        ),
    );
    if http1 {
        problem.with_header(CONNECTION, "close").into_response()
    } else {
        problem.into_response()
    }
}

/// Every `503` and `429` tells the client when to come back (RFC 9110 §10.2.3), whichever code
/// produced it; an explicit `Retry-After` is kept.
fn ensure_retry_after(mut response: Response) -> Response {
    let status = response.status();
    if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
        && !response.headers().contains_key(RETRY_AFTER)
    {
        response.headers_mut().insert(
            RETRY_AFTER,
            HeaderValue::from_static(DEFAULT_RETRY_AFTER_SECS),
        );
    }
    response
}
