//! Tests of the HTTP API on the real embedded backend: `router()` driven in-process by `oneshot`,
//! and `run()` once on a real socket.

mod auth;
mod bodies;
mod health;
mod logs;
mod messages;
mod serve;
mod subscriptions;
mod support;
mod topics;
