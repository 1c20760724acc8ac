//! The layer guarding every `/v1` route: refuses addresses that failed too often, authenticates
//! (`auth::authenticate`), authorizes (`authz::check`), hands the [`Principal`] to the handlers
//! through the request's extensions and to the access log through the response's.
//!
//! A tower layer of its own rather than an `axum::middleware::from_fn`, which clones and boxes
//! the route below it and boxes its future on every request: this runs on every `/v1` request,
//! and only the very first requests, while the tenancy directory is read, take a boxed path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt as _};

use crate::ClientCertificate;
use crate::auth::{Principal, authenticate, client_addr};
use crate::http::AppState;
use crate::problem::{Problem, ProblemKind};

#[derive(Clone)]
pub(crate) struct RequirePrincipalLayer {
    state: AppState,
}

impl RequirePrincipalLayer {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for RequirePrincipalLayer {
    type Service = RequirePrincipal<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePrincipal {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct RequirePrincipal<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for RequirePrincipal<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = PrincipalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !self.state.tenancy.is_loaded() {
            let inner = self.inner.clone();
            let state = self.state.clone();
            return PrincipalFuture::Loading {
                future: Box::pin(async move {
                    if let Err(problem) = state.tenancy.ensure_loaded().await {
                        return Ok(problem.into_response());
                    }
                    match admit(&state, request) {
                        Ok((request, principal)) => {
                            let mut response = inner.oneshot(request).await?;
                            response.extensions_mut().insert(principal);
                            Ok(response)
                        }
                        Err(refused) => Ok(refused.into_response()),
                    }
                }),
            };
        }
        match admit(&self.state, request) {
            Ok((request, principal)) => PrincipalFuture::Admitted {
                inner: self.inner.call(request),
                principal: Some(principal),
            },
            Err(refused) => PrincipalFuture::Answered {
                response: Some(refused.into_response()),
            },
        }
    }
}

/// Why a request may not go on, and who asked, when that is known.
struct Refused {
    problem: Problem,
    caller: Option<Principal>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = self.problem.into_response();
        if let Some(caller) = self.caller {
            // For the access log, which sits outside this layer.
            response.extensions_mut().insert(caller);
        }
        response
    }
}

/// The request on its way to the handler, with its caller; or why it may not go on.
fn admit(state: &AppState, request: Request) -> Result<(Request, Principal), Refused> {
    let tenancy = &state.tenancy;
    // Taken apart rather than borrowed whole: authorization reads the route's parameters from
    // the head without copying it.
    let (mut parts, body) = request.into_parts();
    let ip = client_addr(&parts.extensions).map(|addr| addr.ip());
    let refused = |problem, caller| Refused { problem, caller };
    if let Some(wait) = ip.and_then(|ip| tenancy.quotas.auth_blocked(ip)) {
        let problem = Problem::new(
            ProblemKind::RateLimited,
            "too many failed authentications from this address; wait before trying again",
        )
        .with_retry_after(wait.secs());
        return Err(refused(problem, None));
    }
    let client = parts.extensions.get::<ClientCertificate>();
    let principal = match authenticate(tenancy, &state.admin_key_hash, &parts.headers, client) {
        Ok(principal) => principal,
        Err(problem) => {
            if let Some(ip) = ip {
                tenancy.quotas.auth_failed(ip);
            }
            return Err(refused(problem, None));
        }
    };
    // The request's span (`access_log`) is entered: axum calls a route's service when its
    // future is first polled, inside that span.
    tracing::Span::current().record("principal", tracing::field::display(&principal));
    if let Err(problem) = crate::authz::check(&mut parts, &principal) {
        return Err(refused(problem, Some(principal)));
    }
    parts.extensions.insert(principal.clone());
    Ok((Request::from_parts(parts, body), principal))
}

pin_project_lite::pin_project! {
    #[project = Projected]
    pub(crate) enum PrincipalFuture<F> {
        Admitted {
            #[pin]
            inner: F,
            principal: Option<Principal>,
        },
        Answered { response: Option<Response> },
        Loading { future: BoxFuture<'static, Result<Response, Infallible>> },
    }
}

impl<F> Future for PrincipalFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Admitted { inner, principal } => {
                let Ok(mut response) = ready!(inner.poll(cx));
                if let Some(principal) = principal.take() {
                    // For the access log, which sits outside this layer.
                    response.extensions_mut().insert(principal);
                }
                Poll::Ready(Ok(response))
            }
            Projected::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("a future polled again after it answered"))),
            Projected::Loading { future } => future.as_mut().poll(cx),
        }
    }
}
