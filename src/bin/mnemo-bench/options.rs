//! The command line: subcommands, shared options, their limits and checks, and how keys and
//! values are made from them.
//!
//! Owns parsing and validation only; it must not open connections or start work, so a bad
//! flag is refused before anything is sent to a server.

use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::BenchError;

/// Ops a run does when neither `--total` nor `--duration` is given: every run is bounded.
pub const TOTAL_DEFAULT: u64 = 10_000;
/// Most clients (requests in flight) one process drives; each is a task and a histogram.
pub const CLIENTS_MAX: usize = 10_000;
/// Most gRPC connections one process opens.
pub const CONNS_MAX: usize = 1_000;
/// Most watchers of the watch workload; each is a watch stream and keeps the revisions it saw.
pub const WATCHERS_MAX: usize = 100_000;
/// Largest value the tool makes: etcd's default request limit is 1.5 MiB, and a larger value
/// would only measure the refusal.
pub const VALUE_BYTES_MAX: usize = 1536 * 1024;
/// Bytes at the start of a watch workload's value that carry its send time (u64 nanoseconds).
pub const SEND_TIME_BYTES: usize = 8;

/// A load generator speaking plain etcd v3 gRPC: point it at etcd or mnemo.
///
/// It prints a progress bar while running (stderr, only on a terminal), then one JSON line of
/// results on stdout and a table on stderr.
#[derive(Debug, Parser)]
#[command(name = "mnemo-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub workload: Workload,
}

/// Options every workload shares.
#[derive(Debug, Args)]
pub struct Common {
    /// Client URLs, comma separated; connections go to them in turn.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Requests in flight: each client sends its next request when the last one is answered.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections (HTTP/2); clients are spread over them in turn.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Bytes of each key: the prefix, then the key's number padded with zeros.
    #[arg(long, global = true, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes of each value.
    #[arg(long, global = true, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys the run touches.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub key_space: u64,
    /// Ops to do (successful or not); with --duration, whichever comes first ends the run.
    #[arg(long, global = true)]
    pub total: Option<u64>,
    /// How long to run, e.g. 30s; with --total, whichever comes first ends the run.
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Keys 0..N to put before the run, untimed (range and mixed default to the key space).
    #[arg(long, global = true)]
    pub preload: Option<u64>,
    /// Prefix of every key the run writes or reads (and the watch workload watches).
    #[arg(long, global = true, default_value = "bench/")]
    pub prefix: String,
    /// Keys in order (op N uses key N modulo the key space) instead of at random.
    #[arg(long, global = true)]
    pub sequential: bool,
    /// Seed of the key choice, so that two runs touch the same keys.
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// Deadline of one request; a request past it counts as an error.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

/// The workloads.
#[derive(Debug, Subcommand)]
pub enum Workload {
    /// Puts of one key each.
    Put,
    /// Ranges over a preloaded key space: one key, or --range-size keys from a random start.
    Range {
        /// l: linearizable (through the leader's read index); s: serializable (local).
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
        /// Keys each range covers (1: a point read).
        #[arg(long, default_value_t = 1)]
        range_size: u64,
    },
    /// Kubernetes' optimistic update: read a key, then Txn(mod_revision == seen) put, else
    /// read it again and retry; one op is one successful update.
    TxnCas,
    /// Watchers on the prefix and writers at a fixed rate: event latency from each put's send
    /// time (carried in the value) to its delivery, and whether every watcher saw every put
    /// exactly once, in order. Ops are puts; --clients writers share the rate.
    Watch {
        /// Watch streams, one per watcher, spread over the connections.
        #[arg(long, default_value_t = 10)]
        watchers: usize,
        /// Puts per second in all (0: as fast as the writers go).
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// How long watchers may take, after the last put, to deliver everything.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
    },
    /// Lease grant, one keepalive over the client's keepalive stream, then revoke: one op.
    Lease {
        /// TTL of the granted leases, seconds.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
    /// Point reads and puts over a preloaded key space, in a chosen proportion.
    Mixed {
        /// Share of ops that are reads, from 0 to 1.
        #[arg(long, default_value_t = 0.5)]
        read_ratio: f64,
        /// Consistency of the reads (l or s).
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
}

impl Workload {
    /// The name the JSON line reports as `op`.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range { .. } => "range",
            Workload::TxnCas => "txn-cas",
            Workload::Watch { .. } => "watch",
            Workload::Lease { .. } => "lease",
            Workload::Mixed { .. } => "mixed",
        }
    }
}

/// Read consistency, named as etcd's benchmark tool names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

impl Consistency {
    pub fn serializable(self) -> bool {
        self == Consistency::S
    }

    pub fn letter(self) -> &'static str {
        match self {
            Consistency::L => "l",
            Consistency::S => "s",
        }
    }
}

/// The checked options: what the workloads read.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    pub val_size: usize,
    pub key_space: u64,
    /// Ops to do at most; `None` only when --duration bounds the run.
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub preload: u64,
    pub sequential: bool,
    pub seed: u64,
    pub request_timeout: Duration,
    pub keys: Keys,
}

/// Makes the run's keys: the prefix, then the number padded to the key size.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    digits: usize,
}

impl Keys {
    pub fn key(&self, index: u64) -> Bytes {
        Bytes::from(format!(
            "{}{index:0width$}",
            self.prefix,
            width = self.digits
        ))
    }

    /// The first key of the run's prefix.
    pub fn prefix(&self) -> Bytes {
        Bytes::from(self.prefix.clone())
    }

    /// The end of the prefix's range: the prefix with its last byte raised (etcd's
    /// `--prefix` rule), or `\0` (every key) for an empty prefix.
    pub fn prefix_end(&self) -> Bytes {
        let mut end = self.prefix.clone().into_bytes();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                return Bytes::from(end);
            }
        }
        Bytes::from_static(b"\0")
    }
}

fn refuse(message: String) -> BenchError {
    BenchError::Options(message)
}

/// Checks the options against each other and the limits above, and settles the defaults that
/// depend on the workload.
pub fn settle(common: &Common, workload: &Workload) -> Result<Settings, BenchError> {
    if common.clients == 0 || common.clients > CLIENTS_MAX {
        return Err(refuse(format!(
            "--clients must be between 1 and {CLIENTS_MAX}, got {}",
            common.clients
        )));
    }
    if common.conns == 0 || common.conns > CONNS_MAX {
        return Err(refuse(format!(
            "--conns must be between 1 and {CONNS_MAX}, got {}",
            common.conns
        )));
    }
    if common.key_space == 0 {
        return Err(refuse("--key-space must be at least 1".into()));
    }
    if common.val_size > VALUE_BYTES_MAX {
        return Err(refuse(format!(
            "--val-size must be at most {VALUE_BYTES_MAX}, got {}",
            common.val_size
        )));
    }
    if common.total == Some(0) {
        return Err(refuse("--total must be at least 1".into()));
    }
    if common.duration == Some(Duration::ZERO) {
        return Err(refuse("--duration must be more than 0".into()));
    }
    if common.request_timeout == Duration::ZERO {
        return Err(refuse("--request-timeout must be more than 0".into()));
    }
    let mut endpoints = Vec::with_capacity(common.endpoints.len());
    for endpoint in &common.endpoints {
        let endpoint = endpoint.trim();
        if endpoint.is_empty() {
            return Err(refuse("--endpoints has an empty entry".into()));
        }
        // etcdctl accepts host:port; gRPC needs a scheme.
        if endpoint.contains("://") {
            endpoints.push(endpoint.to_owned());
        } else {
            endpoints.push(format!("http://{endpoint}"));
        }
    }
    if endpoints.is_empty() {
        return Err(refuse("--endpoints must name at least one endpoint".into()));
    }
    let digits = (common.key_space - 1).max(1).ilog10() as usize + 1;
    let key_bytes_min = common.prefix.len() + digits;
    if common.key_size < key_bytes_min {
        return Err(refuse(format!(
            "--key-size {} is too small for --key-space {} under --prefix {:?}: it needs at least {key_bytes_min}",
            common.key_size, common.key_space, common.prefix
        )));
    }
    let preload_default = match workload {
        Workload::Range { .. } | Workload::Mixed { .. } => common.key_space,
        _ => 0,
    };
    let preload = common.preload.unwrap_or(preload_default);
    if preload > common.key_space {
        return Err(refuse(format!(
            "--preload {preload} is more than --key-space {}",
            common.key_space
        )));
    }
    match workload {
        Workload::Range { range_size, .. } => {
            if *range_size == 0 || *range_size > common.key_space {
                return Err(refuse(format!(
                    "--range-size must be between 1 and --key-space ({}), got {range_size}",
                    common.key_space
                )));
            }
        }
        Workload::Watch {
            watchers,
            drain_timeout,
            ..
        } => {
            if *watchers == 0 || *watchers > WATCHERS_MAX {
                return Err(refuse(format!(
                    "--watchers must be between 1 and {WATCHERS_MAX}, got {watchers}"
                )));
            }
            if common.val_size < SEND_TIME_BYTES {
                return Err(refuse(format!(
                    "--val-size must be at least {SEND_TIME_BYTES} for watch: the value carries the send time"
                )));
            }
            if *drain_timeout == Duration::ZERO {
                return Err(refuse("--drain-timeout must be more than 0".into()));
            }
        }
        Workload::Lease { ttl } => {
            if *ttl <= 0 {
                return Err(refuse(format!("--ttl must be at least 1, got {ttl}")));
            }
        }
        Workload::Mixed { read_ratio, .. } => {
            if !(0.0..=1.0).contains(read_ratio) {
                return Err(refuse(format!(
                    "--read-ratio must be between 0 and 1, got {read_ratio}"
                )));
            }
        }
        Workload::Put | Workload::TxnCas => {}
    }
    let total = match (common.total, common.duration) {
        (None, None) => Some(TOTAL_DEFAULT),
        (total, _) => total,
    };
    Ok(Settings {
        endpoints,
        clients: common.clients,
        conns: common.conns,
        val_size: common.val_size,
        key_space: common.key_space,
        total,
        duration: common.duration,
        preload,
        sequential: common.sequential,
        seed: common.seed,
        request_timeout: common.request_timeout,
        keys: Keys {
            prefix: common.prefix.clone(),
            digits: common.key_size - common.prefix.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle_args(args: &[&str]) -> Result<Settings, BenchError> {
        let cli = Cli::try_parse_from(args).expect("arguments parse");
        settle(&cli.common, &cli.workload)
    }

    #[test]
    fn keys_are_padded_to_the_key_size() {
        let settings = settle_args(&["mnemo-bench", "put", "--key-size", "12"]).unwrap();
        assert_eq!(settings.keys.key(42), Bytes::from_static(b"bench/000042"));
        assert_eq!(settings.keys.prefix_end(), Bytes::from_static(b"bench0"));
    }

    #[test]
    fn a_run_without_total_or_duration_gets_the_default_total() {
        let settings = settle_args(&["mnemo-bench", "put"]).unwrap();
        assert_eq!(settings.total, Some(TOTAL_DEFAULT));
        let timed = settle_args(&["mnemo-bench", "put", "--duration", "2s"]).unwrap();
        assert_eq!(timed.total, None);
        assert_eq!(timed.duration, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bad_combinations_are_refused_with_the_flag_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["mnemo-bench", "put", "--key-size", "4"], "--key-size"),
            (&["mnemo-bench", "put", "--clients", "0"], "--clients"),
            (
                &["mnemo-bench", "range", "--range-size", "0"],
                "--range-size",
            ),
            (&["mnemo-bench", "put", "--preload", "20000"], "--preload"),
            (&["mnemo-bench", "watch", "--val-size", "4"], "--val-size"),
            (
                &["mnemo-bench", "mixed", "--read-ratio", "1.5"],
                "--read-ratio",
            ),
            (&["mnemo-bench", "put", "--total", "0"], "--total"),
        ];
        for (args, flag) in cases {
            let error = settle_args(args).expect_err("refused").to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn endpoints_without_a_scheme_get_http() {
        let settings = settle_args(&[
            "mnemo-bench",
            "--endpoints",
            "127.0.0.1:1,https://127.0.0.1:2",
            "put",
        ])
        .unwrap();
        assert_eq!(
            settings.endpoints,
            ["http://127.0.0.1:1", "https://127.0.0.1:2"]
        );
    }

    #[test]
    fn range_and_mixed_preload_the_key_space_by_default() {
        let settings = settle_args(&["mnemo-bench", "range", "--key-space", "50"]).unwrap();
        assert_eq!(settings.preload, 50);
        let put = settle_args(&["mnemo-bench", "put"]).unwrap();
        assert_eq!(put.preload, 0);
    }
}
