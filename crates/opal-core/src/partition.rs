//! Which partition a keyed message goes to: a stable rule shared by every backend.

/// Picks the partition of an ordering key with FNV-1a (64-bit), so that the same key lands on the
/// same partition on every node, backend and version.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key
        .bytes()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Changing these would move keys between partitions on upgrade and break ordering.
        assert_eq!(
            partition_for_key("", 1000),
            (0xcbf2_9ce4_8422_2325u64 % 1000) as u32
        );
        assert_eq!(
            partition_for_key("a", 1 << 31),
            (0xaf63_dc4c_8601_ec8cu64 % (1 << 31)) as u32
        );
    }

    #[test]
    fn spreads_keys() {
        let mut seen = [0u32; 4];
        for i in 0..400 {
            seen[partition_for_key(&format!("key-{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
