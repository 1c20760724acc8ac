//! LEB128 variable-length integers and zig-zag mapping, as used inside record bodies.

/// Bytes `put_uvarint` writes for `value`.
pub(crate) fn uvarint_len(value: u64) -> usize {
    // 7 payload bits per byte; a zero still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a varint at `*pos`, advancing it. `None` if it is cut off, longer than 10 bytes or
/// overflows 64 bits (all signs of corruption, since the encoder never writes such a thing).
pub(crate) fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf.get(*pos + i)?;
        let payload = u64::from(byte & 0x7f);
        if i == 9 && payload > 1 {
            return None;
        }
        value |= payload << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

/// Maps signed to unsigned so that small magnitudes of either sign stay short.
pub(crate) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(crate) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn uvarint_round_trips(value: u64) {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            prop_assert_eq!(buf.len(), uvarint_len(value));
            let mut pos = 0;
            prop_assert_eq!(get_uvarint(&buf, &mut pos), Some(value));
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn zigzag_round_trips(value: i64) {
            prop_assert_eq!(unzigzag(zigzag(value)), value);
        }
    }

    #[test]
    fn truncated_and_overlong_varints_are_rejected() {
        let mut pos = 0;
        assert_eq!(get_uvarint(&[0x80, 0x80], &mut pos), None);
        assert_eq!(get_uvarint(&[0xff; 11], &mut pos), None);
        assert_eq!(
            get_uvarint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut pos
            ),
            None
        );
        assert_eq!(pos, 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
