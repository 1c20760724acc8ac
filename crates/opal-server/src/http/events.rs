//! `/v1/subscriptions/{subscription}/events`: deliveries as a Server-Sent Events stream.
//!
//! A task pulls in small batches and hands events to the response body through a bounded
//! channel. A client that stops reading fills the socket, then the channel, and the task stops
//! pulling: nothing is leased that the connection cannot take, and memory stays bounded.

use std::convert::Infallible;
use std::ops::RangeInclusive;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::stream;
use opal_core::{BrokerError, Delivery, SubscriptionName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::tenancy::StreamGuard;

use super::cloudevents::{CloudEventDelivery, DeliveryFormat};
use super::subscriptions::DeliveryView;
use super::subscriptions::local_delivery;
use super::{AppState, Caller};
use crate::path::Path;
use crate::problem::{FieldError, Problem, ProblemKind};

/// Deliveries one pull asks for when the client does not say (`?batch=`).
const DEFAULT_BATCH: u64 = 10;
/// Largest `?batch=`: the stream holds at most two batches in memory (one queued, one pulled).
const MAX_BATCH: u64 = 100;
/// How long one pull waits for a message; pulls repeat, so this only bounds how stale a
/// disconnect or a shutdown can be noticed by a waiting broker call.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The reconnection delay suggested to clients (`retry:`).
const RETRY: Duration = Duration::from_secs(3);

/// Tells nginx and similar proxies not to buffer the stream.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/subscriptions/{subscription}/events", get(events))
}

/// Opens the stream once the subscription is known to exist, so that a wrong name is a `404`
/// problem rather than an empty stream.
#[utoipa::path(
    get,
    path = "/v1/subscriptions/{subscription}/events",
    operation_id = "streamEvents",
    tag = "consuming",
    summary = "Deliveries as Server-Sent Events",
    description = "A `text/event-stream` that never ends by itself: a `retry:` hint first, then one \
                   `event: delivery` per delivery (`id:` = its ack id, `data:` = the delivery as in \
                   a pull's `deliveries`), keep-alive comments every 15 s, and `event: error` with \
                   a problem object before the stream ends on a broker failure. Ack, nack and \
                   extend with the ordinary endpoints.",
    params(crate::openapi::SubscriptionPath, EventsQuery),
    responses(
        (status = 200, description = "The event stream; the schema describes one event.", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(subscription): Path<String>,
    query: RawQuery,
) -> Result<impl IntoResponse, Problem> {
    let name = caller.subscription(&subscription)?;
    let params = Params::parse(query, &["batch", "format"])?;
    let mut errors = Vec::new();
    let batch = params.integer("batch", DEFAULT_BATCH, 1..=MAX_BATCH, &mut errors);
    let format = params.delivery_format(&mut errors);
    check(errors)?;
    state.broker.get_subscription(&name).await?;
    state.tenancy.check_delivery(&caller, &name)?;
    let quotas = state.tenancy.app_quotas(caller.app());
    let guard = state.tenancy.quotas.open_stream(caller.app(), &quotas)?;
    // `Last-Event-ID` needs no handling: the subscription, not the connection, holds the ack
    // state, so a new stream simply goes on with what is unacked.

    let batch = usize::try_from(batch).unwrap_or(1);
    let (tx, mut rx) = mpsc::channel(batch);
    tokio::spawn(pump(state, caller, guard, name, batch, format, tx).in_current_span());
    let body = stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok::<_, Infallible>)));
    let sse = Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(([(X_ACCEL_BUFFERING, "no")], sse))
}

/// The query of [`events`], for the OpenAPI document (the handler reads it through [`Params`],
/// which also refuses unknown and repeated names).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "only describes the query")]
struct EventsQuery {
    /// Deliveries pulled at a time (default 10).
    #[param(minimum = 1, maximum = 100)]
    batch: Option<u64>,
    /// How each delivery's `data` is shaped: `opal` (default) or `cloudevents`.
    format: Option<DeliveryFormat>,
}

/// One event of the stream, as an SSE parser hands it over (`event`, `data`, `id`, `retry`): the
/// schema of the `text/event-stream` response, which describes each event.
#[derive(Debug)]
struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let event = |name: &str, schema: serde_json::Value, about: &str| {
            serde_json::json!({
                "type": "object",
                "description": about,
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "id": {"type": "string"},
                    "retry": {"type": "integer", "minimum": 0},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": schema
                    }
                }
            })
        };
        crate::openapi::json_schema(serde_json::json!({
            "oneOf": [
                event(
                    "delivery",
                    serde_json::json!({"oneOf": [
                        {"$ref": "#/components/schemas/DeliveryView"},
                        {"$ref": "#/components/schemas/CloudEventDelivery"}
                    ]}),
                    "A delivery (`id` is its ack id), as in a pull's `deliveries`, in the requested `format`."
                ),
                event(
                    "error",
                    serde_json::json!({"$ref": "#/components/schemas/Problem"}),
                    "The broker failed; the stream ends after this event."
                )
            ]
        }))
    }
}

impl utoipa::ToSchema for StreamEvent {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema as _;
        schemas.push(("DeliveryView".to_owned(), DeliveryView::schema()));
        <DeliveryView as utoipa::ToSchema>::schemas(schemas);
        schemas.push((
            "CloudEventDelivery".to_owned(),
            CloudEventDelivery::schema(),
        ));
        <CloudEventDelivery as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Pulls and queues events until the client goes away (the receiver is dropped), the server
/// shuts down, or the broker fails. Deliveries pulled but not queued when it stops are
/// redelivered after their ack deadline, like any unacked delivery.
async fn pump(
    state: AppState,
    caller: Caller,
    // Counts this stream against the app's `open_streams` until the pump ends.
    _guard: StreamGuard,
    name: SubscriptionName,
    batch: usize,
    format: DeliveryFormat,
    tx: mpsc::Sender<Event>,
) {
    let shutdown = &state.shutdown;
    // Bounded by `tx` as every other send: a client that does not read holds this task here.
    if !queue(&tx, shutdown, Event::default().retry(RETRY)).await {
        return;
    }
    loop {
        if let Err(problem) = state.tenancy.check_delivery(&caller, &name) {
            let _ = queue(
                &tx,
                shutdown,
                problem_event(problem.kind(), problem.detail()),
            )
            .await;
            return;
        }
        let pulled = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            pulled = state.broker.pull(&name, batch, PULL_WAIT) => pulled,
        };
        match pulled {
            Ok(deliveries) => {
                for delivery in deliveries {
                    if !queue(
                        &tx,
                        shutdown,
                        delivery_event(local_delivery(&caller, delivery), format),
                    )
                    .await
                    {
                        return;
                    }
                }
            }
            Err(BrokerError::ShuttingDown) => return,
            Err(err) => {
                tracing::warn!(subscription = %name, error = %err, "event stream: pull failed");
                let _ = queue(&tx, shutdown, error_event(err)).await;
                return;
            }
        }
    }
}

/// Waits for room in the channel; `false` once the client is gone or the server shuts down.
async fn queue(tx: &mpsc::Sender<Event>, shutdown: &CancellationToken, event: Event) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        sent = tx.send(event) => sent.is_ok(),
    }
}

/// `event: delivery`, `id: <ack id>`, `data: <the delivery as in a pull answer>`.
fn delivery_event(delivery: Delivery, format: DeliveryFormat) -> Event {
    let ack_id = delivery.ack_id.0.clone();
    let view = format.render::<DeliveryView>(delivery);
    // A view of strings, numbers and raw JSON always serialises; the fallback keeps this
    // panic-free.
    let data = serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_owned());
    let event = Event::default().event("delivery").data(data);
    // Ack ids are opaque; one that an SSE line cannot carry is left out of `id:` (it is in the
    // data all the same) rather than break the stream.
    if ack_id.contains(['\n', '\r', '\0']) {
        event
    } else {
        event.id(ack_id)
    }
}

/// `event: error` with a problem object, sent once before the stream ends on a broker failure.
fn error_event(err: BrokerError) -> Event {
    let (status, detail) = match err {
        BrokerError::SubscriptionNotFound(_) => (404, err.to_string()),
        BrokerError::Storage(cause) => {
            // The cause is for operators: it may name files.
            tracing::error!(error = %cause, "storage failure");
            (503, "the broker's storage failed".to_owned())
        }
        other => (500, other.to_string()),
    };
    let kind = match status {
        404 => ProblemKind::NotFound,
        503 => ProblemKind::Unavailable,
        _ => ProblemKind::Internal,
    };
    problem_event(kind, &detail)
}

/// `event: error` with a problem object.
fn problem_event(kind: ProblemKind, detail: &str) -> Event {
    let body = serde_json::json!({
        "type": kind.type_uri(),
        "title": kind.title(),
        "status": kind.status().as_u16(),
        "detail": detail,
    });
    Event::default().event("error").data(body.to_string())
}

/// The query string of a streaming request: name/value pairs, checked by [`Params`].
pub(super) type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Query parameters, with unknown and repeated names refused (as unknown body members are).
#[derive(Debug)]
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn parse(query: RawQuery, known: &[&str]) -> Result<Params, Problem> {
        let Query(pairs) = query.map_err(|rejection| {
            Problem::new(
                ProblemKind::InvalidRequest,
                format!(
                    "the query string could not be read: {}",
                    rejection.body_text()
                ),
            )
        })?;
        let mut errors = Vec::new();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                let expected = known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                errors.push(FieldError::parameter(
                    name.as_str(),
                    format!("is not a parameter of this endpoint (expected {expected})"),
                ));
            } else if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                errors.push(FieldError::parameter(
                    name.as_str(),
                    "must be given at most once",
                ));
            }
        }
        check(errors)?;
        Ok(Params(pairs))
    }

    /// An integer in `range`, or `default` when the parameter is absent; a bad value is added to
    /// `errors` (and `default` returned).
    pub(super) fn integer(
        &self,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
        errors: &mut Vec<FieldError>,
    ) -> u64 {
        let Some((_, text)) = self.0.iter().find(|(n, _)| n == name) else {
            return default;
        };
        match text.parse::<u64>() {
            Ok(value) if range.contains(&value) => value,
            _ => {
                errors.push(FieldError::parameter(
                    name,
                    format!(
                        "must be an integer from {} to {}, got {text:?}",
                        range.start(),
                        range.end()
                    ),
                ));
                default
            }
        }
    }
}

impl Params {
    /// `format`: `opal` (the default) or `cloudevents`; a bad value is added to `errors`.
    pub(super) fn delivery_format(&self, errors: &mut Vec<FieldError>) -> DeliveryFormat {
        match self.0.iter().find(|(n, _)| n == "format") {
            None => DeliveryFormat::Opal,
            Some((_, text)) => match text.as_str() {
                "opal" => DeliveryFormat::Opal,
                "cloudevents" => DeliveryFormat::CloudEvents,
                _ => {
                    errors.push(FieldError::parameter(
                        "format",
                        format!("must be `opal` or `cloudevents`, got {text:?}"),
                    ));
                    DeliveryFormat::Opal
                }
            },
        }
    }
}

pub(super) fn check(errors: Vec<FieldError>) -> Result<(), Problem> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid(errors))
    }
}
