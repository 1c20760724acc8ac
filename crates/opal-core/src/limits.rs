//! Size limits that every front door and backend enforce the same way.

/// Bounds on what one request may carry. Checked before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one message, in bytes (after base64 decoding).
    pub max_message_bytes: usize,
    /// Most messages in one publish call.
    pub max_batch_messages: usize,
    /// Most messages one pull may return.
    pub max_pull_messages: usize,
    /// Longest long-poll wait, in milliseconds.
    pub max_wait_ms: u64,
    /// Most attributes on one message.
    pub max_attributes: usize,
    /// Longest attribute name, in bytes.
    pub max_attribute_name_bytes: usize,
    /// Longest attribute value, in bytes.
    pub max_attribute_value_bytes: usize,
    /// Longest ordering key, in bytes.
    pub max_key_bytes: usize,
    /// Most partitions of one topic.
    pub max_partitions: u32,
    /// Longest ack deadline, in milliseconds.
    pub max_ack_deadline_ms: u64,
    /// Most ack ids in one ack, nack or extend call.
    pub max_ack_ids: usize,
    /// Longest delay of a message (`delay_ms`, `deliver_at`) or a nack, in milliseconds.
    pub max_delay_ms: u64,
    /// Longest dedup id, in bytes.
    pub max_dedup_id_bytes: usize,
    /// Longest dedup window of a topic, in milliseconds.
    pub max_dedup_window_ms: u64,
    /// Highest `max_deliveries` of a subscription.
    pub max_deliveries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1024 * 1024,
            max_batch_messages: 1000,
            max_pull_messages: 1000,
            max_wait_ms: 30_000,
            max_attributes: 64,
            max_attribute_name_bytes: 256,
            max_attribute_value_bytes: 4096,
            max_key_bytes: 1024,
            max_partitions: 256,
            max_ack_deadline_ms: 12 * 60 * 60 * 1000,
            max_ack_ids: 1000,
            max_delay_ms: 30 * 24 * 60 * 60 * 1000,
            max_dedup_id_bytes: 256,
            max_dedup_window_ms: 7 * 24 * 60 * 60 * 1000,
            max_deliveries: 1000,
        }
    }
}
