//! The slow-request warning: a request that took longer than
//! `--experimental-warning-apply-duration` to serve (validate, commit, apply, read) is logged
//! with how long it took, the threshold and a short summary, and counted in
//! `etcd_server_slow_apply_total`, as etcd warns about requests that took too long (usually a
//! slow disk or an overloaded member).
//!
//! Owns the summary's wording. It must not keep the request: the summary holds shared
//! handles to its keys only and never renders a value, so a warning costs no copy of user
//! data and cannot flood the log with it.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::types::{KeyRange, Revision};

/// The most bytes of a key shown in a summary: enough to tell keys apart by their prefix,
/// short enough that a warning stays one readable line whatever the key size.
const SUMMARY_KEY_BYTES_MAX: usize = 64;

/// What a slow request was, without its values.
#[derive(Debug)]
pub(crate) enum RequestSummary {
    /// A range read.
    Range {
        /// The keys.
        range: KeyRange,
        /// Served from local state without a read barrier.
        serializable: bool,
    },
    /// A put.
    Put {
        /// The key.
        key: Bytes,
        /// The value's size (never the value).
        value_bytes: usize,
    },
    /// A delete-range.
    DeleteRange {
        /// The keys.
        range: KeyRange,
    },
    /// A transaction.
    Txn {
        /// Comparisons.
        compares: usize,
        /// Operations on success.
        success: usize,
        /// Operations on failure.
        failure: usize,
    },
    /// A compaction.
    Compact {
        /// Up to which revision.
        revision: Revision,
    },
}

/// A key shown in a summary: escaped, cut at [`SUMMARY_KEY_BYTES_MAX`].
struct ShortKey<'a>(&'a [u8]);

impl fmt::Display for ShortKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(SUMMARY_KEY_BYTES_MAX)];
        write!(f, "\"{}\"", shown.escape_ascii())?;
        if self.0.len() > SUMMARY_KEY_BYTES_MAX {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

fn write_range(f: &mut fmt::Formatter<'_>, range: &KeyRange) -> fmt::Result {
    write!(f, "key={}", ShortKey(&range.key))?;
    if !range.range_end.is_empty() {
        write!(f, " range_end={}", ShortKey(&range.range_end))?;
    }
    Ok(())
}

impl fmt::Display for RequestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestSummary::Range {
                range,
                serializable,
            } => {
                f.write_str(if *serializable {
                    "serializable range "
                } else {
                    "range "
                })?;
                write_range(f, range)
            }
            RequestSummary::Put { key, value_bytes } => {
                write!(f, "put key={} value_size={value_bytes}", ShortKey(key))
            }
            RequestSummary::DeleteRange { range } => {
                f.write_str("delete_range ")?;
                write_range(f, range)
            }
            RequestSummary::Txn {
                compares,
                success,
                failure,
            } => write!(
                f,
                "txn compares={compares} success_ops={success} failure_ops={failure}"
            ),
            RequestSummary::Compact { revision } => write!(f, "compact revision={revision}"),
        }
    }
}

/// Warns (and counts) when `took` exceeds `threshold`.
pub(crate) fn check(took: Duration, threshold: Duration, summary: &RequestSummary) {
    if took <= threshold {
        return;
    }
    crate::metrics::get().slow_apply.inc();
    tracing::warn!(
        took = ?took,
        expected_duration = ?threshold,
        request = %summary,
        "request took longer than the warning threshold (slow disk or overloaded member?)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_never_shows_values_and_cuts_long_keys() {
        let put = RequestSummary::Put {
            key: Bytes::from(vec![b'k'; 100]),
            value_bytes: 5,
        };
        let text = put.to_string();
        assert!(text.starts_with("put key=\""), "{text}");
        assert!(text.contains(&"k".repeat(SUMMARY_KEY_BYTES_MAX)), "{text}");
        assert!(
            !text.contains(&"k".repeat(SUMMARY_KEY_BYTES_MAX + 1)),
            "{text}"
        );
        assert!(text.contains("(100 bytes)"), "{text}");
        assert!(text.ends_with("value_size=5"), "{text}");
    }

    #[test]
    fn summary_escapes_binary_keys() {
        let range = RequestSummary::Range {
            range: KeyRange {
                key: Bytes::from_static(b"a\x00"),
                range_end: Bytes::from_static(b"b"),
            },
            serializable: false,
        };
        assert_eq!(range.to_string(), "range key=\"a\\x00\" range_end=\"b\"");
    }
}
