//! The request-body guard: a body that ends in an error once its deadline passes or more than
//! its limit of bytes arrive, and says which of the two happened.
//!
//! A `Body` of its own rather than a stream adapter: it sits on every request that has a body,
//! and reads a chunk with one poll of the body below, no future per chunk, and a timer only
//! once that body has nothing ready (most bodies arrive with their headers).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// What the guard enforces on the bytes of a request body as they come off the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyGuard {
    /// The whole body must have arrived this long after the headers.
    pub(crate) timeout: Duration,
    /// At most this many bytes on the wire, compressed or not (the handlers' extractor limits
    /// the decompressed size to the same number).
    pub(crate) max_bytes: usize,
}

/// Why a guarded body was cut short; the handler sees an unreadable body (and answers `400`),
/// and the conventions layer replaces that answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Deadline,
    TooLarge,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Deadline => f.write_str("the request body did not arrive in time"),
            Cut::TooLarge => f.write_str("the request body is too large"),
        }
    }
}

impl std::error::Error for Cut {}

/// Where a guarded body tells why it was cut, for whoever answers the request.
pub(crate) type CutFlag = Arc<OnceLock<Cut>>;

pin_project_lite::pin_project! {
    /// `inner`, cut off with an error at `deadline` or past `max_bytes`; fused (the gzip and
    /// zstd decoders may poll again after the end).
    pub(crate) struct GuardedBody {
        #[pin]
        inner: Body,
        // Armed the first time `inner` has nothing ready.
        #[pin]
        timer: Option<Sleep>,
        deadline: Instant,
        max_bytes: usize,
        seen: usize,
        cut: CutFlag,
        ended: bool,
    }
}

impl GuardedBody {
    /// Guards `inner` from now on (the headers have arrived).
    pub(crate) fn new(inner: Body, guard: BodyGuard, cut: CutFlag) -> Self {
        GuardedBody {
            inner,
            timer: None,
            deadline: Instant::now() + guard.timeout,
            max_bytes: guard.max_bytes,
            seen: 0,
            cut,
            ended: false,
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let mut fail = |reason: Cut| {
            let _ = this.cut.set(reason);
            *this.ended = true;
            Poll::Ready(Some(Err(axum::Error::new(reason))))
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.len());
                    if *this.seen > *this.max_bytes {
                        return fail(Cut::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                *this.ended = true;
                Poll::Ready(other)
            }
            Poll::Pending => {
                if this.timer.is_none() {
                    this.timer
                        .set(Some(tokio::time::sleep_until(*this.deadline)));
                }
                match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
                    Some(Poll::Ready(())) => fail(Cut::Deadline),
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::{StreamExt as _, stream};

    use super::*;

    fn guard(timeout_ms: u64, max_bytes: usize) -> BodyGuard {
        BodyGuard {
            timeout: Duration::from_millis(timeout_ms),
            max_bytes,
        }
    }

    fn chunks(parts: &[&'static str]) -> Body {
        let parts: Vec<Result<Bytes, Infallible>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(stream::iter(parts))
    }

    #[tokio::test]
    async fn a_body_within_its_limits_passes_whole() {
        let cut = CutFlag::default();
        let body = GuardedBody::new(chunks(&["abc", "def"]), guard(1_000, 6), Arc::clone(&cut));
        let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await;
        assert_eq!(&bytes.unwrap()[..], b"abcdef");
        assert_eq!(cut.get(), None);
    }

    #[tokio::test]
    async fn one_byte_past_the_limit_cuts_the_body() {
        let cut = CutFlag::default();
        let body = GuardedBody::new(chunks(&["abc", "defg"]), guard(1_000, 6), Arc::clone(&cut));
        let mut body = std::pin::pin!(body);
        let mut next = async || {
            std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
                .await
                .map(|frame| frame.map(|f| f.into_data().ok()))
        };
        assert_eq!(
            next().await.unwrap().unwrap(),
            Some(Bytes::from_static(b"abc"))
        );
        assert!(next().await.unwrap().is_err());
        assert_eq!(cut.get(), Some(&Cut::TooLarge));
        // Fused: the end, however often it is asked for.
        assert!(next().await.is_none());
        assert!(next().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_body_that_stalls_past_its_deadline_is_cut() {
        let cut = CutFlag::default();
        let stalled = Body::from_stream(stream::pending::<Result<Bytes, Infallible>>());
        let body = GuardedBody::new(stalled, guard(250, 100), Arc::clone(&cut));
        let started = Instant::now();
        let outcome = axum::body::to_bytes(Body::new(body), usize::MAX).await;
        assert!(outcome.is_err());
        assert_eq!(cut.get(), Some(&Cut::Deadline));
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn the_deadline_counts_from_the_headers_not_from_each_chunk() {
        let cut = CutFlag::default();
        // A chunk every 400 ms: each arrives well within a per-chunk timeout of 1 s, but the
        // third is past the 1 s the whole body has.
        let trickle = stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Some((Ok::<_, Infallible>(Bytes::from_static(b"x")), n + 1))
        });
        let body = GuardedBody::new(
            Body::from_stream(trickle),
            guard(1_000, 100),
            Arc::clone(&cut),
        );
        let mut data = Body::new(body).into_data_stream();
        assert!(data.next().await.unwrap().is_ok());
        assert!(data.next().await.unwrap().is_ok());
        assert!(data.next().await.unwrap().is_err());
        assert_eq!(cut.get(), Some(&Cut::Deadline));
    }
}
