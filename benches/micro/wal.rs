//! The Raft log's write-ahead log (`raft::wal`) with fsync on, in a temp dir on the real
//! disk: each appender appends one entry and waits until it is durable before the next, as
//! a proposal waits for its log write. With one appender every entry pays a whole fsync;
//! with many, the writer thread's group commit makes one fsync cover all entries that queued
//! meanwhile, which is what the throughput shows.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use mnemo::limits::WAL_SEGMENT_BYTES_MAX;
use mnemo::raft::wal::{Wal, WalEntry};
use parking_lot::Mutex;

use super::{budget, full_run};

/// Payload sizes: a small put, and a put of a 4 KiB Kubernetes object.
const PAYLOAD_BYTES: [usize; 2] = [256, 4096];
/// Concurrent appenders, each waiting for its own entry.
const APPENDERS: [usize; 3] = [1, 8, 64];
/// Entry kind written; the WAL treats it as opaque.
const ENTRY_KIND: u8 = 1;

/// The log and the next index to give out, under one lock: entries must reach the writer
/// in index order, so an appender picks its index and queues its entry without letting
/// another appender in between.
struct Tail {
    wal: Wal,
    next_index: u64,
}

impl Tail {
    /// Queues one entry; `done` hears when it is durable.
    fn append(&mut self, payload: &Bytes, done: mpsc::Sender<std::io::Result<()>>) {
        let entry = WalEntry {
            index: self.next_index,
            term: 1,
            kind: ENTRY_KIND,
            payload: payload.clone(),
        };
        self.next_index += 1;
        self.wal
            .append(
                vec![entry],
                Box::new(move |result| {
                    // The appender is blocked on the receiver until this arrives.
                    let _ = done.send(result);
                }),
            )
            .expect("wal writer running");
    }
}

/// `appenders` threads each append `rounds` entries one at a time, each waiting for its
/// entry to be durable. Returns the elapsed time.
fn run(tail: &Mutex<Tail>, payload: &Bytes, appenders: usize, rounds: u64) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..appenders {
            scope.spawn(|| {
                let (done, durable) = mpsc::channel();
                for _ in 0..rounds {
                    tail.lock().append(payload, done.clone());
                    durable
                        .recv()
                        .expect("completion runs")
                        .expect("entry durable");
                }
            });
        }
    });
    started.elapsed()
}

pub fn benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("wal");
    // Every iteration waits for at least one fsync: keep the sample count at criterion's
    // minimum.
    budget(&mut group, 10, Duration::from_secs(3));
    for payload_bytes in PAYLOAD_BYTES {
        let payload = Bytes::from(vec![b'w'; payload_bytes]);
        for appenders in APPENDERS {
            let dir = tempfile::tempdir().expect("temp dir");
            let (wal, recovered) = Wal::open(dir.path(), WAL_SEGMENT_BYTES_MAX).expect("wal");
            assert!(recovered.entries.is_empty(), "a new log is empty");
            let tail = Mutex::new(Tail { wal, next_index: 1 });
            // One iteration is one durable entry per appender.
            group.throughput(Throughput::Elements(appenders as u64));
            group.bench_function(
                format!("append_fsync/payload_bytes={payload_bytes}/appenders={appenders}"),
                |bench| bench.iter_custom(|rounds| run(&tail, &payload, appenders, rounds)),
            );
            let Tail { wal, next_index } = tail.into_inner();
            drop(wal);
            // Everything acknowledged is read back: the benchmark wrote real entries. Only
            // under `cargo test`: a real run leaves hundreds of MB that recovery would load.
            if !full_run() {
                let (_, recovered) = Wal::open(dir.path(), WAL_SEGMENT_BYTES_MAX).expect("reopen");
                assert_eq!(recovered.entries.len() as u64, next_index - 1);
                assert!(
                    recovered
                        .entries
                        .iter()
                        .all(|entry| entry.payload == payload)
                );
            }
        }
    }
    group.finish();
}
