//! Binary encoding of the value of one history row: a [`KeyValue`].
//!
//! Owns: the row value format (an on-disk format, protected by a golden-bytes test).
//! Must not: know about row keys, indexes or the backend.
//!
//! Format, version 1 (all integers big-endian):
//!
//! ```text
//! u8      format tag, 1
//! u32     key length K, then K key bytes
//! i64     create_revision
//! i64     mod_revision
//! i64     version
//! i64     lease
//! u32     value length V, then V value bytes
//! ```
//!
//! A tombstone row uses the same format with only `key` and `mod_revision` set. Decoding is
//! strict: a wrong tag, a length running past the end or trailing bytes are corruption.
//! A format change gets a new tag; decoders keep reading every older tag.

use bytes::Bytes;

use crate::types::KeyValue;

use super::error::MvccError;

/// Tag of the current row value format.
pub const ROW_FORMAT_V1: u8 = 1;

const TAG_BYTES: usize = 1;
const LENGTH_BYTES: usize = 4;
const INTEGER_BYTES: usize = 8;
const INTEGER_FIELDS: usize = 4;

/// Encodes `kv` as a row value.
///
/// # Panics
/// When the key or value is longer than `u32::MAX` bytes; requests are limited to a few MiB
/// long before they reach the store.
pub fn encode_key_value(kv: &KeyValue) -> Vec<u8> {
    let capacity = TAG_BYTES
        + LENGTH_BYTES
        + kv.key.len()
        + INTEGER_FIELDS * INTEGER_BYTES
        + LENGTH_BYTES
        + kv.value.len();
    let mut out = Vec::with_capacity(capacity);
    out.push(ROW_FORMAT_V1);
    push_bytes(&mut out, &kv.key);
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.version.to_be_bytes());
    out.extend_from_slice(&kv.lease.to_be_bytes());
    push_bytes(&mut out, &kv.value);
    assert_eq!(out.len(), capacity, "row value length");
    out
}

/// Decodes a row value. The key and value share the buffer of `bytes` (no copy).
///
/// # Errors
/// [`MvccError::Corrupt`] when the bytes are not a valid row value.
pub fn decode_key_value(bytes: &Bytes) -> Result<KeyValue, MvccError> {
    let mut reader = Reader { bytes, position: 0 };
    let tag = reader.take(TAG_BYTES)?[0];
    if tag != ROW_FORMAT_V1 {
        return Err(MvccError::Corrupt(format!(
            "unknown row value format tag {tag}"
        )));
    }
    let key_range = reader.take_length_prefixed()?;
    let create_revision = reader.take_i64()?;
    let mod_revision = reader.take_i64()?;
    let version = reader.take_i64()?;
    let lease = reader.take_i64()?;
    let value_range = reader.take_length_prefixed()?;
    if reader.position != bytes.len() {
        return Err(MvccError::Corrupt(format!(
            "row value has {} trailing bytes",
            bytes.len() - reader.position
        )));
    }
    Ok(KeyValue {
        key: bytes.slice(key_range),
        create_revision,
        mod_revision,
        version,
        value: bytes.slice(value_range),
        lease,
    })
}

fn push_bytes(out: &mut Vec<u8>, field: &[u8]) {
    let length = u32::try_from(field.len())
        .unwrap_or_else(|_| panic!("row field of {} bytes exceeds 4 GiB", field.len()));
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(field);
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], MvccError> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(MvccError::Corrupt(format!(
                "row value truncated: need {count} bytes at offset {} of {}",
                self.position,
                self.bytes.len()
            )));
        };
        let field = &self.bytes[self.position..end];
        self.position = end;
        Ok(field)
    }

    fn take_i64(&mut self) -> Result<i64, MvccError> {
        let mut buffer = [0u8; INTEGER_BYTES];
        buffer.copy_from_slice(self.take(INTEGER_BYTES)?);
        Ok(i64::from_be_bytes(buffer))
    }

    /// Reads a u32 length and skips that many bytes, returning their position.
    fn take_length_prefixed(&mut self) -> Result<std::ops::Range<usize>, MvccError> {
        let mut buffer = [0u8; LENGTH_BYTES];
        buffer.copy_from_slice(self.take(LENGTH_BYTES)?);
        let length = usize::try_from(u32::from_be_bytes(buffer))
            .map_err(|_| MvccError::Corrupt("row field length overflows usize".to_owned()))?;
        let start = self.position;
        self.take(length)?;
        Ok(start..self.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyValue {
        KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 2,
            mod_revision: 0x0102,
            version: 3,
            value: Bytes::from_static(b"bar!"),
            lease: -1,
        }
    }

    #[test]
    fn golden_bytes_of_format_v1() {
        #[rustfmt::skip]
        let golden: Vec<u8> = vec![
            1,                              // format tag
            0, 0, 0, 3, b'f', b'o', b'o',   // key
            0, 0, 0, 0, 0, 0, 0, 2,         // create_revision
            0, 0, 0, 0, 0, 0, 1, 2,         // mod_revision
            0, 0, 0, 0, 0, 0, 0, 3,         // version
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // lease -1
            0, 0, 0, 4, b'b', b'a', b'r', b'!', // value
        ];
        assert_eq!(encode_key_value(&sample()), golden);
        assert_eq!(decode_key_value(&Bytes::from(golden)).unwrap(), sample());
    }

    #[test]
    fn round_trips_empty_and_binary_fields() {
        let tombstone = KeyValue {
            key: Bytes::from_static(b"\0\xff"),
            mod_revision: 9,
            ..KeyValue::default()
        };
        let encoded = encode_key_value(&tombstone);
        assert_eq!(decode_key_value(&Bytes::from(encoded)).unwrap(), tombstone);
        let big = KeyValue {
            value: Bytes::from(vec![0xab; 100_000]),
            ..sample()
        };
        assert_eq!(
            decode_key_value(&Bytes::from(encode_key_value(&big))).unwrap(),
            big
        );
    }

    #[test]
    fn rejects_truncated_padded_and_unknown_rows() {
        let encoded = encode_key_value(&sample());
        for cut in 0..encoded.len() {
            let truncated = Bytes::copy_from_slice(&encoded[..cut]);
            assert!(
                matches!(decode_key_value(&truncated), Err(MvccError::Corrupt(_))),
                "{cut}"
            );
        }
        let mut padded = encoded.clone();
        padded.push(0);
        assert!(matches!(
            decode_key_value(&Bytes::from(padded)),
            Err(MvccError::Corrupt(_))
        ));
        let mut unknown = encoded;
        unknown[0] = 2;
        assert!(matches!(
            decode_key_value(&Bytes::from(unknown)),
            Err(MvccError::Corrupt(_))
        ));
    }
}
