//! Ack ids: an opaque, URL-safe encoding of (partition, offset, lease token).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use opal_core::AckId;

/// What an ack id names: one lease of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    /// Distinguishes this lease from earlier and later leases of the same message, so a
    /// consumer whose lease expired cannot ack a redelivery it never saw.
    pub(crate) token: u64,
}

const LEN: usize = 4 + 8 + 8;

impl Receipt {
    pub(crate) fn encode(&self) -> AckId {
        let mut raw = [0u8; LEN];
        raw[..4].copy_from_slice(&self.partition.to_be_bytes());
        raw[4..12].copy_from_slice(&self.offset.to_be_bytes());
        raw[12..].copy_from_slice(&self.token.to_be_bytes());
        AckId(URL_SAFE_NO_PAD.encode(raw))
    }

    pub(crate) fn decode(id: &AckId) -> Option<Receipt> {
        let raw = URL_SAFE_NO_PAD.decode(id.0.as_bytes()).ok()?;
        let raw: [u8; LEN] = raw.try_into().ok()?;
        let (p, rest) = raw.split_at(4);
        let (o, t) = rest.split_at(8);
        Some(Receipt {
            partition: u32::from_be_bytes(p.try_into().ok()?),
            offset: u64::from_be_bytes(o.try_into().ok()?),
            token: u64::from_be_bytes(t.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Receipt {
            partition: 7,
            offset: u64::MAX - 3,
            token: 42,
        };
        assert_eq!(Receipt::decode(&r.encode()), Some(r));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "!!!!", &"A".repeat(40)] {
            assert_eq!(Receipt::decode(&AckId(bad.into())), None, "{bad}");
        }
    }
}
