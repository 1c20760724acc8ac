//! `ETag` and `If-Match` for topics and subscriptions: the entity tag is the resource's revision.

use axum::extract::FromRequestParts;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use opal_core::BrokerError;

use crate::problem::{FieldError, Problem, ProblemKind};

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

/// A read-modify-write of a resource's settings: `read` gives its revision and settings,
/// `change` makes the new settings from them (and refuses bad input), `write` stores them if
/// the resource is still at that revision. With `If-Match` (`expected`), a resource at another revision is a `412`;
/// without, a write that lost a race with another update is tried again (at most three times)
/// instead of answering `412`.
pub(crate) async fn update_at_revision<C, T, R, W>(
    kind: &'static str,
    name: &str,
    expected: Option<u64>,
    mut read: impl FnMut() -> R,
    mut change: impl FnMut(C) -> Result<C, Problem>,
    mut write: impl FnMut(C, u64) -> W,
) -> Result<T, Problem>
where
    R: Future<Output = Result<(u64, C), BrokerError>>,
    W: Future<Output = Result<T, BrokerError>>,
{
    for _ in 0..3 {
        let (revision, current) = read().await?;
        // The change first: a request that is wrong in itself is a `400` whatever the
        // revision, and nothing is written either way.
        let changed = change(current)?;
        if let Some(expected) = expected
            && expected != revision
        {
            return Err(BrokerError::RevisionMismatch {
                kind,
                name: name.to_owned(),
                expected,
                current: revision,
            }
            .into());
        }
        match write(changed, revision).await {
            Ok(done) => return Ok(done),
            Err(BrokerError::RevisionMismatch { .. }) if expected.is_none() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(Problem::new(
        ProblemKind::Conflict,
        format!("the {kind} kept changing while this update was applied; try again"),
    ))
}

/// [`update_at_revision`] for a subscription's settings, read from and written to the broker.
pub(crate) async fn update_subscription_at_revision(
    state: &super::AppState,
    name: &opal_core::SubscriptionName,
    expected: Option<u64>,
    change: impl FnMut(opal_core::SubscriptionConfig) -> Result<opal_core::SubscriptionConfig, Problem>,
) -> Result<opal_core::Subscription, Problem> {
    update_at_revision(
        "subscription",
        name.as_str(),
        expected,
        || {
            let (broker, name) = (state.broker.clone(), name.clone());
            async move {
                let (subscription, _) = broker.get_subscription(&name).await?;
                Ok((subscription.revision, subscription.config))
            }
        },
        change,
        |config, revision| {
            let (broker, name) = (state.broker.clone(), name.clone());
            async move {
                broker
                    .update_subscription(&name, config, Some(revision))
                    .await
            }
        },
    )
    .await
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
