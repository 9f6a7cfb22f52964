//! Helpers over objects as JSON values: metadata access, the server-set fields (uid,
//! creationTimestamp, generated names) and kube's rendering of ages.
//!
//! Pure functions: the time and the random source come from the caller.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// Letters of a generated name suffix: kube's, without vowels (no accidental words) and
/// without look-alikes (0/o, 1/l).
const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generated name suffix, as kube's.
pub const GENERATE_NAME_SUFFIX_LEN: usize = 5;

/// `metadata`, created when missing (an object that is not a JSON object is replaced by one).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("made an object above")
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata.name`, or "".
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

/// `metadata.labels` as a map (non-string values are left out).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: i64) {
    metadata_mut(obj).insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
}

/// A random UUID (version 4), as kube assigns to `metadata.uid`.
pub fn new_uid(random: [u8; 16]) -> String {
    let mut bytes = random;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `prefix` plus a suffix of kube's alphabet picked by `random`.
pub fn generated_name(prefix: &str, random: [u8; GENERATE_NAME_SUFFIX_LEN]) -> String {
    let suffix: String = random
        .iter()
        .map(|byte| {
            GENERATE_NAME_ALPHABET[usize::from(*byte) % GENERATE_NAME_ALPHABET.len()] as char
        })
        .collect();
    format!("{prefix}{suffix}")
}

/// RFC 3339 in UTC to the second, as kube writes timestamps (`2024-05-01T10:00:00Z`).
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The age of an object created at `created` (RFC 3339), rendered as kube's Age column;
/// `<unknown>` without a parsable timestamp.
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    let Some(created) = created.and_then(|text| humantime::parse_rfc3339(text).ok()) else {
        return "<unknown>".into();
    };
    match now.duration_since(created) {
        Ok(elapsed) => human_duration(elapsed),
        // A creation time slightly ahead (clock skew between servers) reads as 0s, as kube's.
        Err(ahead) if ahead.duration() <= Duration::from_secs(1) => "0s".into(),
        Err(_) => "<invalid>".into(),
    }
}

/// kube's short human duration (`5s`, `3m20s`, `4h`, `2d3h`, `1y`): coarser as it grows.
pub fn human_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            rest => format!("{days}d{rest}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            rest => format!("{years}y{rest}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_are_kubes() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (2 * 86400, "2d"),
            (2 * 86400 + 3600, "2d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                human_duration(Duration::from_secs(seconds)),
                want,
                "{seconds}s"
            );
        }
    }

    #[test]
    fn uids_are_version_4() {
        let uid = new_uid([0xff; 16]);
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"), "{uid}");
        assert_eq!(new_uid([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn generated_names_use_kubes_alphabet() {
        let name = generated_name("gen-", [0, 1, 26, 27, 255]);
        assert_eq!(name.len(), 4 + GENERATE_NAME_SUFFIX_LEN);
        assert!(
            name[4..]
                .bytes()
                .all(|b| GENERATE_NAME_ALPHABET.contains(&b))
        );
        assert_eq!(&name[4..8], "bc9b");
    }

    #[test]
    fn ages_render_from_timestamps() {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let text = timestamp(created);
        assert_eq!(text, "2023-11-14T22:13:20Z");
        assert_eq!(age(Some(&text), created + Duration::from_secs(5)), "5s");
        assert_eq!(age(None, created), "<unknown>");
    }
}
