//! Tests of the HTTP API on the real embedded backend: `router()` driven in-process by `oneshot`,
//! and `run()` once on a real socket.

mod auth;
mod authz_matrix;
mod bodies;
mod cloudevents;
mod conventions;
mod dead_letters;
mod health;
mod logs;
mod manage;
mod messages;
mod openapi;
mod publish_options;
mod push;
mod raw;
mod serve;
mod settle;
mod streams;
mod subscription_settings;
mod subscriptions;
mod support;
mod tasks;
mod tenancy;
mod topics;
