//! Cursor pagination for lists: `?limit=&cursor=`, a `next_cursor` member and a `Link` header.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header::LINK};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::problem::{FieldError, Problem};

pub(crate) const DEFAULT_LIMIT: usize = 100;
pub(crate) const MAX_LIMIT: usize = 1000;

/// A page request: at most `limit` items after the one the cursor names.
#[derive(Debug, Clone)]
pub(crate) struct PageRequest {
    pub(crate) limit: usize,
    /// The last name of the previous page.
    pub(crate) after: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Most items on the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for PageRequest {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::invalid(vec![FieldError::parameter("query", e.body_text())]))?;
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::invalid(vec![FieldError::parameter(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )]));
        }
        // `cursor=` (empty) is the first page, as no cursor is.
        let after = query
            .cursor
            .filter(|c| !c.is_empty())
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(c.as_bytes())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        Problem::invalid(vec![FieldError::parameter(
                            "cursor",
                            "is not a cursor returned by this list",
                        )])
                    })
            })
            .transpose()?;
        Ok(PageRequest { limit, after })
    }
}

/// The cursor that continues after `last`, when the page was full.
pub(crate) fn next_cursor(page_len: usize, limit: usize, last: Option<&str>) -> Option<String> {
    (page_len == limit)
        .then_some(last)
        .flatten()
        .map(|name| URL_SAFE_NO_PAD.encode(name.as_bytes()))
}

/// `Link: <path?limit=..&cursor=..>; rel="next"` (RFC 8288), when there is a next page.
pub(crate) fn link_header(
    path: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    cursor
        .and_then(|c| {
            HeaderValue::from_str(&format!("<{path}?limit={limit}&cursor={c}>; rel=\"next\"")).ok()
        })
        .map(|v| vec![(LINK, v)])
        .unwrap_or_default()
}
