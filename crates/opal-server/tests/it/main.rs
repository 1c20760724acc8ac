//! Tests of the HTTP API on the real embedded backend: `router()` driven in-process by `oneshot`,
//! and `run()` once on a real socket.

mod auth;
mod bodies;
mod dead_letters;
mod health;
mod logs;
mod messages;
mod publish_options;
mod serve;
mod settle;
mod subscription_settings;
mod subscriptions;
mod support;
mod topics;
