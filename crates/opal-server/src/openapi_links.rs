//! OpenAPI links: which answer feeds which operation. A created topic takes publishes and
//! subscriptions, a new key's `id` names it for rotation, a pull's `ack_id`s go to ack, nack
//! and extend, a created subscription's name to the operations on it, a published message's
//! `id` to its task. Clients and code generators read them to chain calls; schemathesis follows
//! them in its stateful phase, so that the operations on existing resources are fuzzed with
//! identifiers that exist rather than ones that `404`.

use serde_json::{Value, json};
use utoipa::Modify;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

use crate::openapi::operations_mut;

/// A link from the answers of `from` (with one of `statuses`) to the operation `to`.
struct LinkSpec {
    from: &'static str,
    statuses: &'static [&'static str],
    to: &'static str,
    description: &'static str,
    /// Target parameter name → OpenAPI runtime expression.
    parameters: &'static [(&'static str, &'static str)],
    /// The target's body, with runtime expressions inside (merged into a generated one).
    body: Option<fn() -> Value>,
}

const SUBSCRIPTION: (&str, &str) = ("subscription", "$request.path.subscription");
const CREATED: &[&str] = &["200", "201"];

fn first_ack_id() -> Value {
    json!({ "ack_ids": ["$response.body#/deliveries/0/ack_id"] })
}

fn subscription_on_the_topic() -> Value {
    json!({ "topic": "$request.path.topic" })
}

const LINKS: &[LinkSpec] = &[
    LinkSpec {
        from: "createTopic",
        statuses: CREATED,
        to: "publishMessages",
        description: "Publish to the topic.",
        parameters: &[("topic", "$request.path.topic")],
        body: None,
    },
    LinkSpec {
        from: "createTopic",
        statuses: CREATED,
        to: "createSubscription",
        description: "Subscribe to the topic.",
        parameters: &[],
        body: Some(subscription_on_the_topic),
    },
    LinkSpec {
        from: "createKey",
        statuses: &["201"],
        to: "getKey",
        description: "The new key, by its id.",
        parameters: &[("app", "$request.path.app"), ("id", "$response.body#/id")],
        body: None,
    },
    LinkSpec {
        from: "createKey",
        statuses: &["201"],
        to: "rotateKey",
        description: "Rotate the new key.",
        parameters: &[("app", "$request.path.app"), ("id", "$response.body#/id")],
        body: None,
    },
    LinkSpec {
        from: "createKey",
        statuses: &["201"],
        to: "revokeKey",
        description: "Revoke the new key.",
        parameters: &[("app", "$request.path.app"), ("id", "$response.body#/id")],
        body: None,
    },
    LinkSpec {
        from: "pull",
        statuses: &["200"],
        to: "ack",
        description: "Ack the first delivery.",
        parameters: &[SUBSCRIPTION],
        body: Some(first_ack_id),
    },
    LinkSpec {
        from: "pull",
        statuses: &["200"],
        to: "nack",
        description: "Nack the first delivery.",
        parameters: &[SUBSCRIPTION],
        body: Some(first_ack_id),
    },
    LinkSpec {
        from: "pull",
        statuses: &["200"],
        to: "extend",
        description: "Extend the lease of the first delivery.",
        parameters: &[SUBSCRIPTION],
        body: Some(first_ack_id),
    },
    LinkSpec {
        from: "createSubscription",
        statuses: CREATED,
        to: "publishMessages",
        description: "Publish to the subscription's topic (a short name: the caller's own topic).",
        parameters: &[("topic", "$request.body#/topic")],
        body: None,
    },
    LinkSpec {
        from: "createSubscription",
        statuses: CREATED,
        to: "pull",
        description: "Pull from the subscription.",
        parameters: &[SUBSCRIPTION],
        body: None,
    },
    LinkSpec {
        from: "createSubscription",
        statuses: CREATED,
        to: "readPushSecret",
        description: "The signing secrets of a push subscription.",
        parameters: &[SUBSCRIPTION],
        body: None,
    },
    LinkSpec {
        from: "createSubscription",
        statuses: CREATED,
        to: "rotatePushSecret",
        description: "Rotate the signing secret of a push subscription.",
        parameters: &[SUBSCRIPTION],
        body: None,
    },
    LinkSpec {
        from: "createSubscription",
        statuses: CREATED,
        to: "listPushAttempts",
        description: "The attempt log of a push subscription.",
        parameters: &[SUBSCRIPTION],
        body: None,
    },
    LinkSpec {
        from: "createSubscription",
        statuses: CREATED,
        to: "resendPush",
        description: "Resend or recover messages of a push subscription.",
        parameters: &[SUBSCRIPTION],
        body: None,
    },
    LinkSpec {
        from: "publishMessages",
        statuses: &["200"],
        to: "readTask",
        description: "The task of the first message, if it was published with a callback.",
        parameters: &[("message_id", "$response.body#/results/0/id")],
        body: None,
    },
];

/// Adds [`LINKS`] to the answers they start from.
pub(crate) struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut OpenApi) {
        for spec in LINKS {
            let Some(operation) = operation_mut(openapi, spec.from) else {
                continue;
            };
            for status in spec.statuses {
                let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status)
                else {
                    continue;
                };
                let mut link = LinkBuilder::new()
                    .operation_id(spec.to)
                    .description(spec.description);
                for (name, expression) in spec.parameters {
                    link = link.parameter(*name, *expression);
                }
                if let Some(body) = spec.body {
                    link = link.request_body(Some(body()));
                }
                response
                    .links
                    .insert(spec.to.to_owned(), link.build().into());
            }
        }
    }
}

fn operation_mut<'a>(openapi: &'a mut OpenApi, id: &str) -> Option<&'a mut Operation> {
    openapi.paths.paths.values_mut().find_map(|item| {
        operations_mut(item).find(|operation| operation.operation_id.as_deref() == Some(id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        serde_json::from_str(crate::openapi::document()).expect("the document is JSON")
    }

    /// The operation with this `operationId`, as served.
    fn operation<'a>(spec: &'a Value, id: &str) -> &'a Value {
        spec["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("path item").values())
            .find(|operation| operation["operationId"] == id)
            .unwrap_or_else(|| panic!("no operation {id}"))
    }

    #[test]
    fn every_link_is_served_and_names_what_its_target_takes() {
        let spec = spec();
        for link in LINKS {
            let target = operation(&spec, link.to);
            let taken: Vec<&str> = target["parameters"]
                .as_array()
                .map(|parameters| {
                    parameters
                        .iter()
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for status in link.statuses {
                let served = &operation(&spec, link.from)["responses"][*status]["links"][link.to];
                assert_eq!(
                    served["operationId"], link.to,
                    "{} {status} links to {}",
                    link.from, link.to
                );
                for (name, expression) in link.parameters {
                    assert!(taken.contains(name), "{} takes no `{name}`", link.to);
                    assert_eq!(served["parameters"][*name], *expression);
                }
                if link.body.is_some() {
                    assert!(
                        target.get("requestBody").is_some(),
                        "{} takes no body",
                        link.to
                    );
                    assert!(served["requestBody"].is_object());
                }
            }
        }
    }
}
