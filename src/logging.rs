//! The member's log lines: the `--log-format` (text or JSON lines) and `--log-level` of the
//! binary, and the member name stamped on every line.
//!
//! The name is written by the line formatter itself, not carried by a span, so lines from
//! every thread (runtime workers, blocking threads, the WAL writer) carry it without each
//! task having to enter one. Both formats render the same facts: time (RFC 3339, UTC), level,
//! target, member name, message, the event's fields and the fields of the spans it is in.
//!
//! Owns the formats only: which lines exist and what fields they carry is decided where they
//! are logged. It must not be called by library code: only a binary installs a subscriber.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The least severe level logged (`--log-level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, including per-request detail.
    Debug,
    /// Lifecycle and cluster events.
    #[default]
    Info,
    /// Problems the member works around.
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Installs the process's log subscriber, writing to standard error. `MNEMO_LOG` (an
/// `EnvFilter` directive) overrides the level when set.
pub fn init(format: LogFormat, level: LogLevel, member_name: &str) {
    // Our own logs at the chosen level; the consensus library's chatter one notch quieter.
    let filter = tracing_subscriber::EnvFilter::try_from_env("MNEMO_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},openraft=warn", level.directive()))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(MemberFormat::new(format, member_name))
        .init();
}

/// Formats one event as a text or JSON line carrying the member name.
pub struct MemberFormat {
    format: LogFormat,
    member_name: String,
}

impl MemberFormat {
    /// A formatter for `format` that stamps `member_name` on every line.
    pub fn new(format: LogFormat, member_name: &str) -> MemberFormat {
        MemberFormat {
            format,
            member_name: member_name.to_owned(),
        }
    }
}

/// One field value, kept typed so JSON renders numbers and booleans as such.
enum Value {
    Signed(i64),
    Unsigned(u64),
    Bool(bool),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Signed(value) => write!(f, "{value}"),
            Value::Unsigned(value) => write!(f, "{value}"),
            Value::Bool(value) => write!(f, "{value}"),
            Value::Text(value) => f.write_str(value),
        }
    }
}

impl From<&Value> for serde_json::Value {
    fn from(value: &Value) -> serde_json::Value {
        match value {
            Value::Signed(value) => (*value).into(),
            Value::Unsigned(value) => (*value).into(),
            Value::Bool(value) => (*value).into(),
            Value::Text(value) => value.as_str().into(),
        }
    }
}

/// The message and fields of one event, in the order they were given.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::Signed(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::Unsigned(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Text(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Text(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for MemberFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The spans the event is in, outermost first, as `name{field=value ...}`.
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let recorded = extensions
                    .get::<FormattedFields<N>>()
                    .map(|fields| fields.fields.as_str())
                    .unwrap_or_default();
                spans.push(if recorded.is_empty() {
                    span.name().to_owned()
                } else {
                    format!("{}{{{recorded}}}", span.name())
                });
            }
        }
        let metadata = event.metadata();
        match self.format {
            LogFormat::Text => {
                write!(
                    writer,
                    "{time} {:>5} {}: member_name={} ",
                    metadata.level(),
                    metadata.target(),
                    self.member_name
                )?;
                for span in &spans {
                    write!(writer, "{span}: ")?;
                }
                writer.write_str(&fields.message)?;
                for (name, value) in &fields.fields {
                    write!(writer, " {name}={value}")?;
                }
                writeln!(writer)
            }
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                for (name, value) in &fields.fields {
                    object.insert((*name).to_owned(), value.into());
                }
                if !spans.is_empty() {
                    object.insert("spans".to_owned(), spans.join(": ").into());
                }
                // Written last so an event field of the same name cannot hide them.
                object.insert("ts".to_owned(), time.into());
                object.insert("level".to_owned(), metadata.level().as_str().into());
                object.insert("target".to_owned(), metadata.target().into());
                object.insert("member_name".to_owned(), self.member_name.as_str().into());
                object.insert("msg".to_owned(), fields.message.into());
                writeln!(writer, "{}", serde_json::Value::Object(object))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn capture(format: LogFormat, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .event_format(MemberFormat::new(format, "infra1"))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_the_member_name_and_typed_fields() {
        let text = capture(LogFormat::Json, || {
            let span = tracing::info_span!("stream", id = 7);
            let _entered = span.enter();
            tracing::warn!(term = 3_u64, ok = true, name = "x\"y", "leader \"changed\"");
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["member_name"], "infra1");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["msg"], "leader \"changed\"");
        assert_eq!(line["term"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["name"], "x\"y");
        assert_eq!(line["spans"], "stream{id=7}");
    }

    #[test]
    fn text_lines_carry_the_member_name() {
        let text = capture(LogFormat::Text, || {
            tracing::info!(revision = 5_i64, "compacted")
        });
        assert!(
            text.contains(" INFO mnemo::logging::tests: member_name=infra1 compacted revision=5\n"),
            "{text}"
        );
    }
}
