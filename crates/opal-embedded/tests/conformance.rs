//! The embedded backend against the backend conformance suite (`opal_core::conformance`).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use opal_core::conformance::Harness;
use opal_core::{Broker, Clock};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};

/// Opens `EmbeddedBroker` on the test's directory with the test's clock and default limits.
#[derive(Debug)]
struct Embedded;

#[async_trait]
impl Harness for Embedded {
    async fn open(&self, dir: &Path, clock: Clock) -> Arc<dyn Broker> {
        let mut config = EmbeddedConfig::new(dir);
        config.clock = clock;
        let broker = EmbeddedBroker::open(config).expect("the embedded backend opens");
        Arc::new(broker)
    }
}

opal_core::conformance_tests!(Embedded);
