//! End-to-end tests: the real `opal` binary on a loopback port, driven over HTTP and HTTPS.

mod crash;
mod encryption;
mod lifecycle;
mod publish_pull;
mod push;
mod support;
mod tls;
