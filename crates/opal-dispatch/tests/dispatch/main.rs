//! The dispatcher against a real embedded broker and real HTTP receivers on loopback.

mod delivery;
mod failures;
mod flow;
mod resend;
mod support;
mod tasks;
