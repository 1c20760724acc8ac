//! End-to-end tests: the real `opal` binary on a loopback port, driven over HTTP.

mod crash;
mod lifecycle;
mod publish_pull;
mod support;
