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

/// The same suite with encryption at rest on: every log batch and every sealed metadata row
/// goes through the key ring, and reopens (restart behaviours) check the recorded key.
mod encrypted {
    use super::*;
    use opal_log::{Keyring, Zeroizing};

    #[derive(Debug)]
    struct EncryptedEmbedded;

    #[async_trait]
    impl Harness for EncryptedEmbedded {
        async fn open(&self, dir: &Path, clock: Clock) -> Arc<dyn Broker> {
            let mut config = EmbeddedConfig::new(dir);
            config.clock = clock;
            let keys = Keyring::new([(1, Zeroizing::new([0x5C; 32]))], 1).expect("key ring");
            config.encryption = Some(keys);
            let broker = EmbeddedBroker::open(config).expect("the encrypted backend opens");
            Arc::new(broker)
        }
    }

    opal_core::conformance_tests!(EncryptedEmbedded);
}
