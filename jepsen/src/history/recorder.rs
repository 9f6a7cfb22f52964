//! Records a live run's events to a history file as they happen.
//!
//! Owns the run's clock (one [`Instant`], so every time in the file comes from the same
//! monotonic source) and the order of lines in the file: an event is stamped while the file's lock
//! is held, so lines appear in time order. Writes [`super::jsonl`] version 1: the header, the
//! operation events, and `nemesis` lines, which readers skip (see the format's documentation).
//!
//! Must not: decide outcomes (the client does) or judge the history (the checker does).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

use super::Time;
use super::jsonl::{Event, EventType, FORMAT_NAME, FORMAT_VERSION, Header, ModelName};

/// Events written between two flushes at most, so that a crash of the harness loses little.
const EVENTS_PER_FLUSH: usize = 256;

/// A `nemesis` line: a fault started or stopped, or the nemesis failed at something.
#[derive(Serialize)]
struct NemesisLine<'a, V> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: Time,
    /// What the nemesis did: `start-kill`, `stop-kill`, `start-pause`, ..., `heal`.
    f: &'a str,
    /// Its details (targets, cut links), as the nemesis chose to describe them.
    value: V,
}

/// The history file being written. Shared by every worker and the nemesis.
pub struct Recorder {
    started: Instant,
    /// The file, and events written since the last flush.
    file: Mutex<(BufWriter<File>, usize)>,
}

impl Recorder {
    /// Creates `path` and writes the header for `model`. The run's clock starts now.
    ///
    /// # Errors
    /// When the file cannot be created or written.
    pub fn create(path: &Path, model: ModelName) -> std::io::Result<Recorder> {
        let mut writer = BufWriter::new(File::create(path)?);
        let header = Header {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            model,
        };
        serde_json::to_writer(&mut writer, &header)?;
        writer.write_all(b"\n")?;
        Ok(Recorder {
            started: Instant::now(),
            file: Mutex::new((writer, 0)),
        })
    }

    /// Nanoseconds since the run started.
    #[must_use]
    pub fn now(&self) -> Time {
        Time::try_from(self.started.elapsed().as_nanos()).unwrap_or(Time::MAX - 1)
    }

    /// `process` sends `input`. Call it just before the request is sent.
    pub fn invoke<I: Serialize>(&self, process: u64, input: &I) {
        self.write_event(|time| Event::<&I, ()> {
            kind: EventType::Invoke,
            process,
            time,
            input: Some(input),
            output: None,
        });
    }

    /// `process`'s operation happened with `output`. Call it just after the response arrived.
    pub fn ok<O: Serialize>(&self, process: u64, output: &O) {
        self.write_event(|time| Event::<(), &O> {
            kind: EventType::Ok,
            process,
            time,
            input: None,
            output: Some(output),
        });
    }

    /// `process`'s operation certainly did not happen.
    pub fn fail(&self, process: u64) {
        self.complete(EventType::Fail, process);
    }

    /// `process`'s operation has an unknown outcome; the process must not be used again.
    pub fn info(&self, process: u64) {
        self.complete(EventType::Info, process);
    }

    /// A nemesis line.
    pub fn nemesis<V: Serialize>(&self, f: &str, value: V) {
        self.write_line(
            |time| NemesisLine {
                kind: "nemesis",
                time,
                f,
                value: &value,
            },
            true,
        );
    }

    /// Writes out everything buffered.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn flush(&self) -> std::io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .flush()
    }

    fn complete(&self, kind: EventType, process: u64) {
        self.write_event(|time| Event::<(), ()> {
            kind,
            process,
            time,
            input: None,
            output: None,
        });
    }

    fn write_event<T: Serialize>(&self, event: impl FnOnce(Time) -> T) {
        self.write_line(event, false);
    }

    /// Stamps and writes one line under the lock. A write error panics: a history with holes
    /// would be judged wrongly, so the run must stop.
    fn write_line<T: Serialize>(&self, line: impl FnOnce(Time) -> T, flush: bool) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (writer, unflushed) = &mut *file;
        let time = self.now();
        serde_json::to_writer(&mut *writer, &line(time)).expect("write to the history file");
        writer.write_all(b"\n").expect("write to the history file");
        *unflushed += 1;
        if flush || *unflushed >= EVENTS_PER_FLUSH {
            writer.flush().expect("flush the history file");
            *unflushed = 0;
        }
    }
}
