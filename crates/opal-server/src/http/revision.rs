//! `ETag` and `If-Match` for topics and subscriptions: the entity tag is the resource's revision.

use axum::extract::FromRequestParts;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use crate::problem::{FieldError, Problem};

/// The `ETag` header of a resource at `revision`: a strong tag, `"<revision>"`.
pub(crate) fn etag(revision: u64) -> [(HeaderName, HeaderValue); 1] {
    let value = HeaderValue::from_str(&format!("\"{revision}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    [(ETAG, value)]
}

/// The revision an `If-Match` header requires; `None` when absent, empty or `*` (any revision).
/// An empty `If-Match` is taken as none: some clients send a header they have no value for (an
/// `ETag` they never got) as an empty one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfMatch(pub(crate) Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        // Not ASCII: no entity tag, and not the empty header that counts as none either.
        value
            .to_str()
            .ok()
            .and_then(parse)
            .map(IfMatch)
            .ok_or_else(|| {
                Problem::invalid(vec![FieldError::header(
                    "if-match",
                    "must be `*` or one entity tag as returned in `ETag`, e.g. \"3\"",
                )])
            })
    }
}

fn parse(value: &str) -> Option<Option<u64>> {
    let value = value.trim();
    if value == "*" || value.is_empty() {
        return Some(None);
    }
    // Weak tags are accepted too: our tags are strong, so W/"3" can only mean revision 3.
    let tag = value.strip_prefix("W/").unwrap_or(value);
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    inner.parse().ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_the_forms_clients_send() {
        assert_eq!(parse("\"3\""), Some(Some(3)));
        assert_eq!(parse(" W/\"12\" "), Some(Some(12)));
        assert_eq!(parse("*"), Some(None));
        assert_eq!(parse(""), Some(None));
        assert_eq!(parse("3"), None);
        assert_eq!(parse("\"a\""), None);
        assert_eq!(parse("\"1\", \"2\""), None);
    }
}
