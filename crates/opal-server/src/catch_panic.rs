//! A handler that panics answers `500` (a problem, from `problem::from_panic`) instead of
//! dropping the connection.
//!
//! Written here rather than taken from `tower_http::catch_panic`, whose answer boxes every
//! response body (health probes included) so that a panic's body and a handler's have one type:
//! this layer sits on every request and keeps axum's body type, which needs no box.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use tower::{Layer, Service};

/// Turns a panic of the service below, in `call` or while its future is polled, into the
/// response `answer` makes of the panic's payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatchPanicLayer {
    answer: fn(Box<dyn Any + Send + 'static>) -> Response<Body>,
}

impl CatchPanicLayer {
    pub(crate) fn new(answer: fn(Box<dyn Any + Send + 'static>) -> Response<Body>) -> Self {
        Self { answer }
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic {
            inner,
            answer: self.answer,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CatchPanic<S> {
    inner: S,
    answer: fn(Box<dyn Any + Send + 'static>) -> Response<Body>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for CatchPanic<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let answer = self.answer;
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(inner) => CatchPanicFuture::Running { inner, answer },
            Err(panic) => CatchPanicFuture::Panicked {
                response: Some(answer(panic)),
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = Projected]
    #[derive(Debug)]
    pub(crate) enum CatchPanicFuture<F> {
        Running {
            #[pin]
            inner: F,
            answer: fn(Box<dyn Any + Send + 'static>) -> Response<Body>,
        },
        Panicked { response: Option<Response<Body>> },
    }
}

impl<F, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Running { inner, answer } => {
                match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                    Ok(poll) => poll,
                    Err(panic) => Poll::Ready(Ok(answer(panic))),
                }
            }
            Projected::Panicked { response } => Poll::Ready(Ok(response
                .take()
                .expect("a future polled again after it answered"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future;

    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    use tower::ServiceExt as _;

    use super::*;
    use crate::problem::{self, PROBLEM_JSON};

    async fn answer_of<S>(service: S) -> Response<Body>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    {
        CatchPanicLayer::new(problem::from_panic)
            .layer(service)
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap()
    }

    fn is_problem_500(response: &Response<Body>) -> bool {
        response.status() == StatusCode::INTERNAL_SERVER_ERROR
            && response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes())
                == Some(PROBLEM_JSON.as_bytes())
    }

    #[tokio::test]
    async fn a_panic_while_polled_is_a_500_problem() {
        let panics_when_polled = tower::service_fn(|_: Request<Body>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        assert!(is_problem_500(&answer_of(panics_when_polled).await));
    }

    #[tokio::test]
    async fn a_panic_in_call_is_a_500_problem() {
        #[derive(Clone)]
        struct PanicsInCall;
        impl Service<Request<Body>> for PanicsInCall {
            type Response = Response<Body>;
            type Error = Infallible;
            type Future = future::Ready<Result<Response<Body>, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<Body>) -> Self::Future {
                panic!("service bug")
            }
        }
        assert!(is_problem_500(&answer_of(PanicsInCall).await));
    }

    #[tokio::test]
    async fn an_answer_passes_unchanged() {
        let teapot = tower::service_fn(|_: Request<Body>| async {
            let mut response = Response::new(Body::from("short and stout"));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            Ok::<_, Infallible>(response)
        });
        let response = answer_of(teapot).await;
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"short and stout");
    }
}
