//! What a run counts and how it is told: per-client tallies (a latency histogram, an error
//! count and op-specific counters), the progress bar, the one JSON line on stdout and the
//! table on stderr.
//!
//! Owns output only; it must not send requests. Nothing but the JSON line goes to stdout, so
//! scripts can read it with `jq`.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Largest latency a histogram holds, in microseconds; longer ones are clamped to it (a
/// request that slow has long since timed out).
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits the histograms keep: 0.1% error on every percentile.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// How often the progress bar is redrawn from the shared counter.
const PROGRESS_TICK: Duration = Duration::from_millis(100);

/// Makes an empty latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts; failing here is a bug.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("latency histogram bounds are valid")
}

/// Records `elapsed` in `histogram`, in microseconds, clamped to its range.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.clamp(1, LATENCY_US_MAX));
}

/// What one client (or watcher) counted; tallies are merged when the run ends.
pub struct Tally {
    /// Latency of every successful op; its count is the op count.
    pub latency: Histogram<u64>,
    pub errors: u64,
    /// Op-specific counts (conflicts, reads, ...), reported as JSON fields of the same name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Op-specific latencies (reads and writes of `mixed`), reported as `<name>_p50_us`, ...
    pub latencies: BTreeMap<&'static str, Histogram<u64>>,
    /// The first failure, reported as `first_error` so a failing run says why.
    pub first_error: Option<String>,
    /// Failures since the last success: a client gives up past a limit (see `Client::next`).
    pub errors_in_a_row: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: histogram(),
            errors: 0,
            counters: BTreeMap::new(),
            latencies: BTreeMap::new(),
            first_error: None,
            errors_in_a_row: 0,
        }
    }

    /// Counts a successful op that took `elapsed`.
    pub fn ok(&mut self, elapsed: Duration) {
        record(&mut self.latency, elapsed);
        self.errors_in_a_row = 0;
    }

    /// Counts a failed op, keeping the first failure's text.
    pub fn fail(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        self.errors_in_a_row += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    pub fn count(&mut self, name: &'static str, by: u64) {
        *self.counters.entry(name).or_default() += by;
    }

    pub fn record_as(&mut self, name: &'static str, elapsed: Duration) {
        record(
            self.latencies.entry(name).or_insert_with(histogram),
            elapsed,
        );
    }

    pub fn merge(&mut self, other: Tally) {
        // Both histograms have the same bounds, so adding cannot fail.
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds add");
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (name, count) in other.counters {
            *self.counters.entry(name).or_default() += count;
        }
        for (name, histogram) in other.latencies {
            match self.latencies.get_mut(name) {
                Some(mine) => mine
                    .add(&histogram)
                    .expect("histograms with equal bounds add"),
                None => {
                    self.latencies.insert(name, histogram);
                }
            }
        }
    }
}

/// The JSON line: these fields first, in this order, then the op-specific ones.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub op: &'static str,
    pub clients: usize,
    pub conns: usize,
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Summary {
    /// The summary of a run of `secs` seconds from its merged tally; counters and extra
    /// latencies become fields.
    pub fn new(op: &'static str, clients: usize, conns: usize, secs: f64, tally: &Tally) -> Self {
        let ops = tally.latency.len();
        let mut extra = serde_json::Map::new();
        for (name, count) in &tally.counters {
            extra.insert((*name).to_owned(), (*count).into());
        }
        for (name, histogram) in &tally.latencies {
            for (label, value) in percentiles(histogram) {
                extra.insert(format!("{name}_{label}_us"), value.into());
            }
        }
        if let Some(error) = &tally.first_error {
            extra.insert("first_error".to_owned(), error.clone().into());
        }
        let [p50, p90, p99, max] = percentiles(&tally.latency).map(|(_, value)| value);
        Summary {
            op,
            clients,
            conns,
            ops,
            errors: tally.errors,
            secs: round3(secs),
            ops_per_sec: round3(per_sec(ops, secs)),
            p50_us: p50,
            p90_us: p90,
            p99_us: p99,
            max_us: max,
            extra,
        }
    }

    pub fn insert(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.extra.insert(name.to_owned(), value.into());
    }

    /// Prints the JSON line on stdout and the table on stderr.
    pub fn print(&self) {
        match serde_json::to_string(self) {
            // Written rather than println!ed: a closed stdout (`| head -0`) must not panic.
            Ok(line) => {
                if let Err(error) = writeln!(std::io::stdout(), "{line}") {
                    eprintln!("mnemo-bench: cannot write the results: {error}");
                }
            }
            // Only non-string map keys or failing Serialize impls fail; neither is here.
            Err(error) => eprintln!("mnemo-bench: cannot encode the results: {error}"),
        }
        let mut rows: Vec<(String, String)> = vec![
            ("op".into(), self.op.into()),
            (
                "clients".into(),
                format!("{} over {} connections", self.clients, self.conns),
            ),
            ("ops".into(), format!("{} in {:.2} s", self.ops, self.secs)),
            ("errors".into(), self.errors.to_string()),
            ("ops/s".into(), format!("{:.0}", self.ops_per_sec)),
            (
                "latency".into(),
                format!(
                    "p50 {}  p90 {}  p99 {}  max {}",
                    millis(self.p50_us),
                    millis(self.p90_us),
                    millis(self.p99_us),
                    millis(self.max_us)
                ),
            ),
        ];
        for (name, value) in &self.extra {
            // Strings without their JSON quotes.
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            rows.push((name.clone(), shown));
        }
        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        for (name, value) in rows {
            eprintln!("  {name:<width$}  {value}");
        }
    }
}

/// Operations per second, 0 for an empty run.
pub fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// p50, p90, p99 and max of `histogram` in microseconds (0 when it is empty).
pub fn percentiles(histogram: &Histogram<u64>) -> [(&'static str, u64); 4] {
    if histogram.is_empty() {
        return [("p50", 0), ("p90", 0), ("p99", 0), ("max", 0)];
    }
    [
        ("p50", histogram.value_at_quantile(0.50)),
        ("p90", histogram.value_at_quantile(0.90)),
        ("p99", histogram.value_at_quantile(0.99)),
        ("max", histogram.max()),
    ]
}

/// A progress bar on stderr fed from a shared counter, so clients only bump an atomic. It is
/// hidden when stderr is not a terminal (a script or a test reading the output).
pub struct Progress {
    pub done: Arc<AtomicU64>,
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts a bar titled `what`, out of `total` when the run has one, else a counter.
    pub fn start(what: &str, total: Option<u64>) -> Progress {
        let bar = if !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else if let Some(total) = total {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        } else {
            ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {spinner} {pos} ({per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            )
        };
        bar.set_message(what.to_owned());
        let done = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let done = Arc::clone(&done);
            let bar = bar.clone();
            async move {
                let mut interval = tokio::time::interval(PROGRESS_TICK);
                loop {
                    interval.tick().await;
                    bar.set_position(done.load(Ordering::Relaxed));
                }
            }
        });
        Progress { done, bar, ticker }
    }

    /// Stops redrawing and clears the bar, so the table that follows stands alone.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_line_has_the_common_fields_first_then_the_counters() {
        let mut tally = Tally::new();
        for millis in 1..=100 {
            record(&mut tally.latency, Duration::from_millis(millis));
        }
        tally.errors = 2;
        tally.count("conflicts", 7);
        let summary = Summary::new("txn-cas", 4, 2, 2.0, &tally);
        let line = serde_json::to_string(&summary).unwrap();
        assert!(
            line.starts_with(r#"{"op":"txn-cas","clients":4,"conns":2,"ops":100,"errors":2,"secs":2.0,"ops_per_sec":50.0,"p50_us":"#),
            "{line}"
        );
        assert!(line.ends_with(r#""conflicts":7}"#), "{line}");
        // 0.1% precision: p99 of 1..=100 ms is 99 ms, max 100 ms.
        assert!(summary.p99_us.abs_diff(99_000) < 100, "{}", summary.p99_us);
        assert!(summary.max_us.abs_diff(100_000) < 100, "{}", summary.max_us);
    }

    #[test]
    fn merged_tallies_add_up() {
        let mut first = Tally::new();
        record(&mut first.latency, Duration::from_micros(10));
        first.record_as("read", Duration::from_micros(10));
        let mut second = Tally::new();
        record(&mut second.latency, Duration::from_micros(30));
        second.record_as("read", Duration::from_micros(30));
        second.errors = 1;
        first.merge(second);
        assert_eq!(first.latency.len(), 2);
        assert_eq!(first.latencies["read"].len(), 2);
        assert_eq!(first.errors, 1);
    }
}
