//! URL path parameters, with a malformed parameter answered as a problem.

use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::{Problem, ProblemKind};

/// `axum::extract::Path`, but rejecting with problem+json.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // Only a percent-encoding that is not UTF-8 can fail for our `String` parameters.
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(Problem::new(
                ProblemKind::InvalidRequest,
                format!("invalid path parameter: {}", e.body_text()),
            )),
            Err(other) => Err(Problem::new(ProblemKind::Internal, other.body_text())),
        }
    }
}
