//! `/v1/subscriptions/{subscription}/ws`: deliveries over a WebSocket, with credit-based flow
//! control and acks, nacks and extends on the same socket.
//!
//! One task per connection runs one loop: it reads client frames, pulls while it holds credits,
//! pings, and watches for shutdown. With no credits nothing is pulled, so a client bounds both
//! what it has in flight and what the server holds for it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures_util::SinkExt as _;
use opal_core::{BrokerError, Delivery, Settle, SubscriptionConfig, SubscriptionName};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use tracing::Instrument as _;

use super::cloudevents::{DeliveryFormat, FormattedDelivery};
use super::events::{Params, RawQuery, check};
use super::subscriptions::local_delivery;
use super::subscriptions::{DeliveryView, RejectedAck, check_ack_ids, into_ack_ids, outcome_parts};
use super::{AppState, Caller};
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind};
use crate::tenancy::StreamGuard;

/// Largest client message (and frame) read; a bigger one closes the connection with 1008.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Most credits a client may hold at once (`?credits=` and the sum of `credit` frames).
const MAX_CREDITS: u64 = 10_000;
/// Most deliveries one pull asks for, whatever the credits: bounds one batch in memory.
const MAX_PULL: usize = 100;
/// How long one pull waits for a message before the loop pulls again.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// A ping this often keeps proxies from closing an idle connection and detects dead peers.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A client that sends nothing for this long, not even a pong, is closed (1008).
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the server waits to send its close frame and for the client's reply.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Close reasons must fit in a control frame (125 bytes, 2 of them for the code).
const MAX_REASON_BYTES: usize = 123;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/subscriptions/{subscription}/ws", get(open))
}

/// The query of [`open`], for the OpenAPI document (the handler reads it through [`Params`]).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "only describes the query")]
struct WsQuery {
    /// Deliveries the server may send before the client grants more (default 0).
    #[param(minimum = 0, maximum = 10_000)]
    credits: Option<u64>,
    /// How `delivery` frames are shaped: `opal` (default) or `cloudevents`.
    format: Option<DeliveryFormat>,
}

/// Checks everything that can be answered with a problem (name, query, existence) before
/// upgrading: once upgraded, errors can only be frames.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{subscription}/ws",
    operation_id = "openWebSocket",
    tag = "consuming",
    summary = "Deliveries over a WebSocket",
    description = "A WebSocket upgrade (RFC 6455). After `101`, the client sends JSON text frames \
                   (`credit`, `ack`, `nack`, `extend`) and the server sends `delivery` frames as \
                   credits allow, replies to each client frame, pings every 20 s and closes with \
                   1001 (shutdown), 1008 (policy) or 1011 (server error). See docs/http-api.md.",
    params(crate::openapi::SubscriptionPath, WsQuery, crate::openapi::WebSocketHeaders),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn open(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    query: RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let name = caller.subscription(&subscription)?;
    let params = Params::parse(query, &["credits", "format"])?;
    let mut errors = Vec::new();
    let credits = params.integer("credits", 0, 0..=MAX_CREDITS, &mut errors);
    let format = params.delivery_format(&mut errors);
    check(errors)?;
    state.broker.get_subscription(&name).await?;
    state.tenancy.check_delivery(&caller, &name)?;
    let upgrade = upgrade.map_err(|rejection| {
        Problem::new(
            ProblemKind::InvalidRequest,
            format!(
                "this endpoint needs a WebSocket upgrade: {}",
                rejection.body_text()
            ),
        )
    })?;
    let quotas = state.tenancy.app_quotas(caller.app());
    let guard = state.tenancy.quotas.open_stream(caller.app(), &quotas)?;
    let span = tracing::info_span!("ws", subscription = %name);
    let session = Session {
        state,
        caller,
        _guard: guard,
        name,
        credits,
        format,
    };
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(|err| tracing::debug!(%err, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| session.run(socket).instrument(span)))
}

type PullFuture = Pin<Box<dyn Future<Output = Result<Vec<Delivery>, BrokerError>> + Send>>;

#[derive(Debug)]
struct Session {
    state: AppState,
    caller: Caller,
    /// Counts this stream against the app's `open_streams` while the session lasts.
    _guard: StreamGuard,
    name: SubscriptionName,
    /// Deliveries the client is still willing to take.
    credits: u64,
    /// How `delivery` frames are shaped.
    format: DeliveryFormat,
}

/// How a session ends.
#[derive(Debug)]
enum End {
    /// The client closed or the connection broke: nothing more to send.
    Gone,
    /// The server closes: an optional last `error` frame, then a close frame.
    Close {
        code: u16,
        reason: String,
        error: Option<String>,
    },
}

impl End {
    fn close(code: u16, reason: impl Into<String>) -> End {
        End::Close {
            code,
            reason: reason.into(),
            error: None,
        }
    }

    fn shutting_down() -> End {
        End::close(close_code::AWAY, "the server is shutting down")
    }
}

impl Session {
    async fn run(mut self, mut socket: WebSocket) {
        tracing::debug!(credits = self.credits, "WebSocket session starts");
        let end = self.serve(&mut socket).await;
        tracing::debug!(?end, "WebSocket session ends");
        if let End::Close {
            code,
            reason,
            error,
        } = end
        {
            let _ = timeout(CLOSE_GRACE, async {
                if let Some(error) = error {
                    socket.send(Message::Text(error.into())).await?;
                }
                let reason = truncate(reason, MAX_REASON_BYTES);
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                socket.send(Message::Close(Some(frame))).await
            })
            .await;
        }
        // Reading on completes the closing handshake: it sends the reply to a client's close and
        // waits for the reply to ours.
        let _ = timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let shutdown = self.state.shutdown.clone();
        let mut pull: Option<PullFuture> = None;
        let mut ping = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        loop {
            if pull.is_none() && self.credits > 0 {
                if let Err(problem) = self.state.tenancy.check_delivery(&self.caller, &self.name) {
                    return End::Close {
                        code: close_code::POLICY,
                        reason: problem.detail().to_owned(),
                        error: Some(error_frame(403, problem.detail(), Vec::new())),
                    };
                }
                pull = Some(self.start_pull());
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return End::shutting_down(),
                frame = socket.recv() => {
                    heard = Instant::now();
                    let reply = match frame {
                        None | Some(Ok(Message::Close(_))) => return End::Gone,
                        Some(Err(err)) => {
                            // Mostly an oversized message; a broken connection ignores the close.
                            return End::close(
                                close_code::POLICY,
                                format!("the frame could not be read: {err}"),
                            );
                        }
                        Some(Ok(Message::Binary(_))) => {
                            return End::close(
                                close_code::UNSUPPORTED,
                                "binary frames are not supported; send JSON text frames",
                            );
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                        Some(Ok(Message::Text(text))) => match self.on_text(text.as_str()).await {
                            Ok(reply) => reply,
                            Err(end) => return end,
                        },
                    };
                    if let Some(reply) = reply
                        && socket.send(Message::Text(reply.into())).await.is_err()
                    {
                        return End::Gone;
                    }
                }
                pulled = async {
                    match pull.as_mut() {
                        Some(pulling) => pulling.await,
                        None => std::future::pending().await,
                    }
                }, if pull.is_some() => {
                    pull = None;
                    let deliveries = match pulled {
                        Ok(deliveries) => deliveries,
                        Err(err) => return pull_failed(err),
                    };
                    self.credits = self.credits.saturating_sub(deliveries.len() as u64);
                    // One flush for the batch. Deliveries not sent when this returns are
                    // redelivered after their ack deadline, like any unacked delivery.
                    let format = self.format;
                    let caller = &self.caller;
                    let send_all = async {
                        for delivery in deliveries {
                            let delivery = local_delivery(caller, delivery);
                            socket.feed(Message::Text(delivery_frame(delivery, format).into())).await?;
                        }
                        socket.flush().await
                    };
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return End::shutting_down(),
                        sent = send_all => if sent.is_err() {
                            return End::Gone;
                        },
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= IDLE_LIMIT {
                        let silent = IDLE_LIMIT.as_secs();
                        let reason = format!("nothing received for {silent} s, not even a pong");
                        return End::close(close_code::POLICY, reason);
                    }
                    if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                        return End::Gone;
                    }
                }
            }
        }
    }

    fn start_pull(&self) -> PullFuture {
        let broker = self.state.broker.clone();
        let name = self.name.clone();
        let max = usize::try_from(self.credits)
            .unwrap_or(usize::MAX)
            .min(MAX_PULL)
            .min(self.state.limits.max_pull_messages)
            .max(1);
        Box::pin(async move { broker.pull(&name, max, PULL_WAIT).await })
    }

    /// Handles one client frame; `Ok` with the reply to send, if any.
    async fn on_text(&mut self, text: &str) -> Result<Option<String>, End> {
        let frame = match parse_frame(text) {
            Ok(frame) => frame,
            Err(detail) => return Ok(Some(error_frame(400, detail, Vec::new()))),
        };
        match frame {
            ClientFrame::Credit(CreditFrame { n }) => Ok(self.add_credits(n)),
            ClientFrame::Ack(AckFrame { ack_ids }) => {
                self.settle(SettleKind::Ack, ack_ids, Vec::new(), Settle::Ack)
                    .await
            }
            ClientFrame::Nack(NackFrame { ack_ids, delay_ms }) => {
                let mut errors = Vec::new();
                let max = self.state.limits.max_delay_ms;
                if delay_ms.is_some_and(|ms| ms > max) {
                    errors.push(FieldError::at(
                        "/delay_ms",
                        format!("must be at most {max}"),
                    ));
                }
                let action = Settle::Nack {
                    delay: delay_ms.map(Duration::from_millis),
                };
                self.settle(SettleKind::Nack, ack_ids, errors, action).await
            }
            ClientFrame::Extend(ExtendFrame {
                ack_ids,
                ack_deadline_ms,
            }) => {
                let mut errors = Vec::new();
                let (min, max) = (
                    SubscriptionConfig::MIN_ACK_DEADLINE_MS,
                    self.state.limits.max_ack_deadline_ms,
                );
                if !(min..=max).contains(&ack_deadline_ms) {
                    errors.push(FieldError::at(
                        "/ack_deadline_ms",
                        format!("must be between {min} and {max}"),
                    ));
                }
                let action = Settle::Extend {
                    deadline: Duration::from_millis(ack_deadline_ms),
                };
                self.settle(SettleKind::Extend, ack_ids, errors, action)
                    .await
            }
        }
    }

    /// Adds credits; an error frame (and no change) if `n` is 0 or the total would pass the cap.
    fn add_credits(&mut self, n: u64) -> Option<String> {
        let total = self.credits.saturating_add(n);
        if n == 0 || total > MAX_CREDITS {
            let detail = format!(
                "`n` must be at least 1 and bring the credits to at most {MAX_CREDITS} \
                 (held: {}, asked: {n})",
                self.credits
            );
            let errors = vec![FieldError::at("/n", detail.clone())];
            return Some(error_frame(400, detail, errors));
        }
        self.credits = total;
        None
    }

    async fn settle(
        &self,
        kind: SettleKind,
        ack_ids: Vec<String>,
        mut errors: Vec<FieldError>,
        action: Settle,
    ) -> Result<Option<String>, End> {
        check_ack_ids(&ack_ids, &self.state, &mut errors);
        if !errors.is_empty() {
            let detail = errors
                .iter()
                .map(|e| format!("{}: {}", e.pointer.as_deref().unwrap_or(""), e.detail))
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(Some(error_frame(400, detail, errors)));
        }
        let ack_ids = into_ack_ids(ack_ids);
        match self.state.broker.settle(&self.name, &ack_ids, action).await {
            Ok(outcome) => {
                let (applied, rejected) = outcome_parts(outcome);
                Ok(Some(to_text(&SettleReply {
                    kind: kind.reply_type(),
                    applied,
                    rejected,
                })))
            }
            Err(BrokerError::Invalid { field, reason }) => {
                let detail = format!("invalid {field}: {reason}");
                let errors = vec![FieldError::from_field(&field, reason)];
                Ok(Some(error_frame(400, detail, errors)))
            }
            Err(BrokerError::Storage(cause)) => {
                tracing::error!(error = %cause, "storage failure");
                let detail = "the broker's storage failed; the request may not have been applied";
                Ok(Some(error_frame(503, detail, Vec::new())))
            }
            Err(other) => Err(pull_failed(other)),
        }
    }
}

/// How a broker failure ends the session: a last `error` frame saying why, then 1011 (1001
/// when the broker is shutting down).
fn pull_failed(err: BrokerError) -> End {
    let (status, detail) = match err {
        BrokerError::ShuttingDown => return End::shutting_down(),
        BrokerError::SubscriptionNotFound(_) => (404, err.to_string()),
        BrokerError::Storage(cause) => {
            tracing::error!(error = %cause, "storage failure");
            (503, "the broker's storage failed".to_owned())
        }
        other => (500, other.to_string()),
    };
    End::Close {
        code: close_code::ERROR,
        reason: detail.clone(),
        error: Some(error_frame(status, detail, Vec::new())),
    }
}

#[derive(Debug, Clone, Copy)]
enum SettleKind {
    Ack,
    Nack,
    Extend,
}

impl SettleKind {
    fn reply_type(self) -> &'static str {
        match self {
            SettleKind::Ack => "acked",
            SettleKind::Nack => "nacked",
            SettleKind::Extend => "extended",
        }
    }
}

#[derive(Debug)]
enum ClientFrame {
    Credit(CreditFrame),
    Ack(AckFrame),
    Nack(NackFrame),
    Extend(ExtendFrame),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditFrame {
    n: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckFrame {
    ack_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NackFrame {
    ack_ids: Vec<String>,
    /// Absent: the subscription's backoff decides.
    delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendFrame {
    ack_ids: Vec<String>,
    ack_deadline_ms: u64,
}

const FRAME_TYPES: &str = "`credit`, `ack`, `nack` or `extend`";

/// A client frame, or why it is not one (the `detail` of the error frame).
fn parse_frame(text: &str) -> Result<ClientFrame, String> {
    let mut object: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("the frame is not a JSON object: {e}"))?;
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(format!("`type` must be a string: {FRAME_TYPES}")),
        None => return Err(format!("the frame has no `type`; expected {FRAME_TYPES}")),
    };
    let rest = Value::Object(object);
    fn body<T: DeserializeOwned>(kind: &str, rest: Value) -> Result<T, String> {
        serde_json::from_value(rest).map_err(|e| format!("invalid `{kind}` frame: {e}"))
    }
    match kind.as_str() {
        "credit" => body(&kind, rest).map(ClientFrame::Credit),
        "ack" => body(&kind, rest).map(ClientFrame::Ack),
        "nack" => body(&kind, rest).map(ClientFrame::Nack),
        "extend" => body(&kind, rest).map(ClientFrame::Extend),
        other => Err(format!(
            "unknown frame type {other:?}; expected {FRAME_TYPES}"
        )),
    }
}

/// `{"type":"delivery", ...}`: the delivery as in a pull answer, plus the frame type.
#[derive(Debug, Serialize)]
struct DeliveryFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    delivery: FormattedDelivery<DeliveryView>,
}

#[derive(Debug, Serialize)]
struct SettleReply {
    #[serde(rename = "type")]
    kind: &'static str,
    applied: usize,
    rejected: Vec<RejectedAck>,
}

/// `{"type":"error", "status", "title", "detail", "errors"?}`: a problem object in a frame.
#[derive(Debug, Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    status: u16,
    title: &'static str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

fn delivery_frame(delivery: Delivery, format: DeliveryFormat) -> String {
    to_text(&DeliveryFrame {
        kind: "delivery",
        delivery: format.render(delivery),
    })
}

fn error_frame(status: u16, detail: impl AsRef<str>, errors: Vec<FieldError>) -> String {
    let title = match status {
        400 => ProblemKind::InvalidRequest.title(),
        403 => ProblemKind::Forbidden.title(),
        404 => ProblemKind::NotFound.title(),
        503 => ProblemKind::Unavailable.title(),
        _ => ProblemKind::Internal.title(),
    };
    to_text(&ErrorFrame {
        kind: "error",
        status,
        title,
        detail: detail.as_ref(),
        errors,
    })
}

/// Frames are built from strings, numbers and raw JSON, which always serialise; the fallback
/// keeps this panic-free.
fn to_text(frame: &impl Serialize) -> String {
    serde_json::to_string(frame).unwrap_or_else(|_| r#"{"type":"error","status":500}"#.to_owned())
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_by_type_and_refuse_what_is_unknown() {
        assert!(matches!(
            parse_frame(r#"{"type":"credit","n":3}"#),
            Ok(ClientFrame::Credit(CreditFrame { n: 3 }))
        ));
        assert!(matches!(
            parse_frame(r#"{"ack_ids":["a"],"type":"nack"}"#),
            Ok(ClientFrame::Nack(NackFrame { delay_ms: None, .. }))
        ));
        for (bad, says) in [
            ("[1]", "not a JSON object"),
            ("{", "not a JSON object"),
            (r#"{"n":1}"#, "no `type`"),
            (r#"{"type":7}"#, "must be a string"),
            (
                r#"{"type":"credits","n":1}"#,
                "unknown frame type \"credits\"",
            ),
            (r#"{"type":"credit","n":-1}"#, "invalid `credit` frame"),
            (
                r#"{"type":"ack","ack_ids":["a"],"x":1}"#,
                "unknown field `x`",
            ),
            (
                r#"{"type":"extend","ack_ids":["a"]}"#,
                "missing field `ack_deadline_ms`",
            ),
        ] {
            let detail = parse_frame(bad).expect_err(bad);
            assert!(detail.contains(says), "{bad}: {detail}");
        }
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("abc".into(), 123), "abc");
        let long = "é".repeat(100);
        let cut = truncate(long, MAX_REASON_BYTES);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
