//! The `watch` workload: writers change keys under one prefix while watchers keep watching it,
//! dropping and resuming their streams the way a reconnecting client does; then every watcher
//! must converge on the final revision, collectors replay the whole history on every member, and
//! [`crate::checker::watch`] judges the watch guarantees (jepsen.md §2.5, §6.2).
//!
//! Owns the watch schedule and what it records. Live ([`run`]):
//! - **Writers** (`--concurrency`, pinned to members round-robin) change [`WatchOptions::keys`]
//!   keys under [`PREFIX`]: unique-valued Puts, Deletes, and Txns putting (and sometimes
//!   deleting) two or three distinct keys in one revision. Each is one request, never retried.
//! - **Watchers** ([`WatchOptions::watchers`], spread over the members; one in four filters out
//!   puts and one in four deletes) watch the prefix with `prev_kv` and `progress_notify`, and
//!   ask for a progress report every [`PROGRESS_REQUEST_INTERVAL`]. Each works in segments: a
//!   segment is one stream on one member; after a random while, or any error, end of stream or
//!   cancellation, the watcher drops it and opens the next on a random member from the revision
//!   after the last one it was given (an event's, or a progress notification's). Now and then
//!   a segment instead rewinds to a recent past revision. A compaction notice moves the resume
//!   point to the compact revision, as a client that accepts the hole would.
//! - **Compactor** (only with [`WatchOptions::compact_interval`]): compacts a little behind the
//!   newest acknowledged write now and then, so that compaction notices happen.
//! - **Final phase**: after the heal, one last put ([`FINAL_KEY`]); each watcher keeps going
//!   until it has been given that revision, within [`CONVERGE_TIMEOUT`] (one that does not is a
//!   problem, which makes the run unknown, never a pass); a **collector** per member watches the
//!   prefix from revision 1 until the same revision. The collectors' events are the checker's
//!   truth.
//!
//! Vocabulary. `history.jsonl` (model `watch`) holds the writes, as [`WriteInput`] and
//! [`WriteOutput`] with an `"f"` field:
//! ```json
//! {"type":"invoke","process":3,"time":120,"input":{"f":"put","key":"watch/k2","value":"v3-17"}}
//! {"type":"ok","process":3,"time":450,"output":{"f":"put","revision":88}}
//! {"type":"invoke","process":4,"time":130,"input":{"f":"txn","ops":[{"op":"put","key":"watch/k1",
//!   "value":"v4-9"},{"op":"delete","key":"watch/k5"}]}}
//! {"type":"ok","process":4,"time":470,"output":{"f":"txn","revision":89}}
//! {"type":"invoke","process":5,"time":140,"input":{"f":"delete","key":"watch/k0"}}
//! {"type":"ok","process":5,"time":480,"output":{"f":"delete","revision":90,"deleted":1}}
//! {"type":"invoke","process":1073741824,"time":490,"input":{"f":"compact","revision":40}}
//! {"type":"ok","process":1073741824,"time":520,"output":{"f":"compact","revision":90}}
//! ```
//! `watch.jsonl` in the run directory holds one [`WatchLine`] per segment start, response and
//! segment end (`"kind"`: `segment`, `response`, `end`), each naming the watcher, the segment and
//! the member; responses carry the header revision, the progress flag, the compact revision,
//! the created and canceled flags and every event with its type, key, value, create and mod
//! revisions, version and `prev_kv`.
//!
//! Everything sent is plain etcd v3 (no mnemo-only request or metadata), so the workload runs
//! unchanged against etcd.
//!
//! Must not: retry a write, inject faults, or judge anything itself beyond convergence (the
//! checker does).

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::watch as signal;
use tokio::task::JoinSet;

use super::{CheckResult, Counts, Ctx, ERROR_BACKOFF, FINAL_PROCESS_BASE, WorkloadReport, lock};
use crate::checker::watch::{
    ResponseLine, Revision, SegmentEnd, SegmentStart, TxnOp, WatchLine, WriteInput, WriteOutput,
    check_run_dir,
};
use crate::client::watch::{WatchReply, WatchSpec, WatchStream, WriteClient, WriteResult};
use crate::history::recorder::Recorder;
use crate::random::SeededRng;

/// Every key the workload writes starts with this, and every watch covers it.
pub const PREFIX: &str = "watch/";
/// The final write's key.
pub const FINAL_KEY: &str = "watch/final";
/// Keys written unless told otherwise.
pub const KEYS_DEFAULT: usize = 8;
/// Watchers per member unless told otherwise.
pub const WATCHERS_PER_MEMBER_DEFAULT: usize = 2;
/// Share of writes that are multi-key Txns, percent, unless told otherwise.
pub const TXN_PERCENT_DEFAULT: u64 = 25;
/// Share of writes that are Deletes, percent, unless told otherwise.
pub const DELETE_PERCENT_DEFAULT: u64 = 20;
/// Share of segments that rewind instead of resuming, percent, unless told otherwise.
pub const REWIND_PERCENT_DEFAULT: u64 = 15;
/// Shortest life of a watcher's segment.
pub const SEGMENT_MIN: Duration = Duration::from_millis(500);
/// Longest life of a watcher's segment.
pub const SEGMENT_MAX: Duration = Duration::from_secs(4);
/// How often a segment asks for a progress report: it gives NOPUT and NODELETE watchers (and
/// quiet ones) a revision to resume from, and the bookmarkable check something to judge.
pub const PROGRESS_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// How far back a rewind goes at most, in revisions; recent history is where members differ
/// most, and a short replay keeps the log small.
const REWIND_REVISIONS_MAX: usize = 200;
/// Distinct keys in one Txn, at least 2.
pub const TXN_KEYS_MAX: usize = 3;
/// Share of a Txn's operations that are deletes, percent (one put always stays).
const TXN_DELETE_PERCENT: u64 = 25;
/// Pause after a segment broke before the next is opened, so a member that refuses at once is
/// not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// How long watchers and collectors get, after the final write, to be given its revision.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts of the final write, each on the next member.
const FINAL_WRITE_ATTEMPTS: usize = 6;
/// Pause between two attempts of the final write.
const FINAL_WRITE_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Revisions a compaction leaves below the newest acknowledged write: a watcher resuming where
/// it left off usually stays clear of it, while rewinds and watchers of a lagging member run into
/// it.
pub const COMPACT_LAG_REVISIONS: Revision = 50;
/// The compactor's process ids start here, far above any writer's.
const COMPACTOR_PROCESS_BASE: u64 = 1 << 30;
/// Collectors' watcher ids start here, far above any watcher's.
const COLLECTOR_ID_BASE: u64 = 1_000_000;
/// Seed streams of the writers' operation sequences, their pacing and the watchers, so that
/// none perturbs another.
const WRITER_OPS_STREAM: u64 = 1 << 20;
const WRITER_PACE_STREAM: u64 = 2 << 20;
const WATCHER_STREAM: u64 = 3 << 20;
const COMPACTOR_STREAM: u64 = 4 << 20;
/// Functions that must each have succeeded at least once.
const REQUIRED: [&str; 4] = ["put", "delete", "txn", "watch"];

/// The `watch` workload's options.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Watchers, spread over the members round-robin; 0 means
    /// [`WATCHERS_PER_MEMBER_DEFAULT`] per member.
    pub watchers: usize,
    /// Keys written.
    pub keys: usize,
    /// Share of multi-key Txns, percent.
    pub txn_percent: u64,
    /// Share of Deletes, percent; the rest are Puts.
    pub delete_percent: u64,
    /// Share of segments that rewind to a past revision, percent.
    pub rewind_percent: u64,
    /// Mean time between two compactions (each [`COMPACT_LAG_REVISIONS`] behind the newest
    /// acknowledged write); zero for none. Compaction makes watchers that fall behind it get
    /// compaction notices, and leaves the truth only the history above it.
    pub compact_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            watchers: 0,
            keys: KEYS_DEFAULT,
            txn_percent: TXN_PERCENT_DEFAULT,
            delete_percent: DELETE_PERCENT_DEFAULT,
            rewind_percent: REWIND_PERCENT_DEFAULT,
            compact_interval: Duration::ZERO,
        }
    }
}

/// The seeded write sequence of one writer.
#[derive(Clone, Debug)]
pub struct WriteGenerator {
    options: WatchOptions,
    rng: SeededRng,
    writer: usize,
    next_value: u64,
}

impl WriteGenerator {
    /// Writer `writer`'s sequence for `seed`.
    ///
    /// # Panics
    /// When `options` has fewer than [`TXN_KEYS_MAX`] keys.
    #[must_use]
    pub fn new(options: WatchOptions, seed: u64, writer: usize) -> Self {
        assert!(
            options.keys >= TXN_KEYS_MAX,
            "the watch workload needs at least {TXN_KEYS_MAX} keys"
        );
        WriteGenerator {
            rng: SeededRng::fork(seed, WRITER_OPS_STREAM + writer as u64),
            options,
            writer,
            next_value: 0,
        }
    }

    fn key(&mut self) -> String {
        format!("{PREFIX}k{}", self.rng.below(self.options.keys))
    }

    /// Values are unique across writers: the checker names a write by its value.
    fn value(&mut self) -> String {
        self.next_value += 1;
        format!("v{}-{}", self.writer, self.next_value)
    }

    /// The next write.
    pub fn next_write(&mut self) -> WriteInput {
        let roll = self.rng.next_u64() % 100;
        if roll < self.options.txn_percent {
            let count = 2 + self.rng.below(TXN_KEYS_MAX - 1);
            let mut keys: Vec<String> = Vec::with_capacity(count);
            while keys.len() < count {
                let key = self.key();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            // The first operation is always a put, so the Txn always makes a revision.
            let ops = keys
                .into_iter()
                .enumerate()
                .map(|(index, key)| {
                    if index > 0 && self.rng.chance(TXN_DELETE_PERCENT) {
                        TxnOp::Delete { key }
                    } else {
                        TxnOp::Put {
                            key,
                            value: self.value(),
                        }
                    }
                })
                .collect();
            WriteInput::Txn { ops }
        } else if roll < self.options.txn_percent + self.options.delete_percent {
            WriteInput::Delete { key: self.key() }
        } else {
            WriteInput::Put {
                key: self.key(),
                value: self.value(),
            }
        }
    }
}

/// Where the run is, as watchers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Writers write; watchers segment on.
    Running,
    /// The final write made this revision: a watcher given it is done.
    Converge(Revision),
    /// Everyone stops (the final write failed).
    Stop,
}

/// `watch.jsonl`, shared by every watcher.
struct WatchLog {
    file: Mutex<BufWriter<File>>,
}

impl WatchLog {
    fn create(path: &Path) -> anyhow::Result<WatchLog> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(WatchLog {
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Writes one line. A write error panics: a log with holes would be judged wrongly.
    fn write(&self, line: &WatchLine) {
        let mut file = lock(&self.file);
        serde_json::to_writer(&mut *file, line).expect("write to the watch log");
        file.write_all(b"\n").expect("write to the watch log");
    }

    fn flush(&self) -> std::io::Result<()> {
        lock(&self.file).flush()
    }
}

/// One watcher's part.
#[derive(Clone, Copy, Debug)]
struct Role {
    id: u64,
    collector: bool,
    /// The member of the first segment (a collector's only member).
    member: usize,
    no_put: bool,
    no_delete: bool,
}

/// What a watcher did.
#[derive(Clone, Debug)]
struct WatcherReport {
    role: Role,
    /// It was given the final revision.
    converged: bool,
    /// The revision after the last one it was given.
    next_revision: Revision,
    counts: Counts,
}

/// Runs the workload live: writers and watchers until the deadline, the heal, the final write,
/// convergence and the collectors, the check.
///
/// # Errors
/// When a client cannot be made, a task panics, or the recorded files cannot be read back.
pub async fn run(ctx: Arc<Ctx>, options: &WatchOptions) -> anyhow::Result<WorkloadReport> {
    let nodes = ctx.cluster.len();
    let log = Arc::new(WatchLog::create(&ctx.run_dir.join("watch.jsonl"))?);
    let (phase_tx, phase) = signal::channel(Phase::Running);
    let watcher_count = if options.watchers == 0 {
        WATCHERS_PER_MEMBER_DEFAULT * nodes
    } else {
        options.watchers
    };
    let mut watchers = JoinSet::new();
    for index in 0..watcher_count {
        let role = Role {
            id: index as u64,
            collector: false,
            member: index % nodes,
            // One watcher in four drops puts, one in four deletes.
            no_put: index % 4 == 2,
            no_delete: index % 4 == 3,
        };
        watchers.spawn(run_watcher(
            Arc::clone(&ctx),
            Arc::clone(&log),
            role,
            options.rewind_percent,
            phase.clone(),
        ));
    }
    // The newest revision a writer was told of, for the compactor.
    let latest = Arc::new(AtomicI64::new(0));
    let mut writers = JoinSet::new();
    for writer in 0..ctx.concurrency {
        let (ctx, options, latest) = (Arc::clone(&ctx), options.clone(), Arc::clone(&latest));
        writers.spawn(async move { run_writer(ctx, options, writer, latest).await });
    }
    if !options.compact_interval.is_zero() {
        let (ctx, interval) = (Arc::clone(&ctx), options.compact_interval);
        writers.spawn(async move { run_compactor(ctx, interval, latest).await });
    }
    let mut counts = Counts::default();
    while let Some(joined) = writers.join_next().await {
        counts.merge(joined.context("a writer panicked")??);
    }
    eprintln!("writers done ({} writes)", counts.total());
    ctx.end_faults().await;
    let mut problems = Vec::new();
    let final_revision = final_write(&ctx, &mut counts).await?;
    if let Some(revision) = final_revision {
        eprintln!("final write at revision {revision}; watchers converging");
        phase_tx.send_replace(Phase::Converge(revision));
        for member in 0..nodes {
            let role = Role {
                id: COLLECTOR_ID_BASE + member as u64,
                collector: true,
                member,
                no_put: false,
                no_delete: false,
            };
            let collector = run_watcher(Arc::clone(&ctx), Arc::clone(&log), role, 0, phase.clone());
            watchers.spawn(collector);
        }
    } else {
        problems.push("the final write never succeeded; nothing could converge".to_owned());
        phase_tx.send_replace(Phase::Stop);
    }
    let mut reports = Vec::new();
    while let Some(joined) = watchers.join_next().await {
        reports.push(joined.context("a watcher panicked")?);
    }
    drop(phase_tx);
    reports.sort_by_key(|report| report.role.id);
    for report in &reports {
        counts.merge(report.counts.clone());
    }
    if let Some(revision) = final_revision {
        problems.extend(unconverged(&reports, revision));
    }
    ctx.recorder.flush()?;
    log.flush()?;
    let mut check = check_files(&ctx.run_dir).await?;
    check.details["final_revision"] = json!(final_revision);
    check.details["converged"] = json!(reports.iter().filter(|r| r.converged).count());
    check.details["watchers_and_collectors"] = json!(reports.len());
    if let Some(revision) = final_revision {
        let covered = &check.details["stats"]["truth_covered"];
        let reaches = covered
            .as_array()
            .and_then(|ranges| ranges.last())
            .and_then(|range| range[1].as_i64())
            .is_some_and(|to| to >= revision);
        if !reaches {
            problems.push(format!(
                "the collectors' history does not reach the final revision {revision}: {covered}"
            ));
        }
    }
    Ok(WorkloadReport {
        counts,
        required: REQUIRED.iter().map(|&f| f.to_owned()).collect(),
        checks: vec![check],
        problems,
    })
}

/// A problem for each watcher or collector that was never given `final_revision`.
fn unconverged(reports: &[WatcherReport], final_revision: Revision) -> Vec<String> {
    reports
        .iter()
        .filter(|report| !report.converged)
        .map(|report| {
            format!(
                "{} {} (first on n{}) was never given the final revision {final_revision} \
                 within {CONVERGE_TIMEOUT:?}; it reached {}",
                if report.role.collector {
                    "collector"
                } else {
                    "watcher"
                },
                report.role.id,
                report.role.member + 1,
                report.next_revision - 1
            )
        })
        .collect()
}

/// Reads `history.jsonl` and `watch.jsonl` back from `run_dir` and checks them.
///
/// # Errors
/// When either cannot be read or parsed, or the checker panics.
pub async fn check_files(run_dir: &Path) -> anyhow::Result<CheckResult> {
    let run_dir = run_dir.to_path_buf();
    eprintln!("checking {}", run_dir.display());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let found = check_run_dir(&run_dir)?;
        Ok(found.to_check_result(started.elapsed().as_secs_f64()))
    })
    .await
    .context("the watch checker panicked")?
}

/// One writer, pinned to member `writer % nodes`: writes until the deadline, one at a time,
/// pausing a random while before each. An `info` retires its process id.
async fn run_writer(
    ctx: Arc<Ctx>,
    options: WatchOptions,
    writer: usize,
    latest: Arc<AtomicI64>,
) -> anyhow::Result<Counts> {
    let node = writer % ctx.cluster.len();
    let mut client = WriteClient::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
    let mut generator = WriteGenerator::new(options, ctx.seed, writer);
    let mut pace = SeededRng::fork(ctx.seed, WRITER_PACE_STREAM + writer as u64);
    let mut process = writer as u64;
    let mut counts = Counts::default();
    // Each write takes at least one pause or one round trip; the bound only guards against a
    // clock that never advances.
    for _ in 0..10_000_000_u64 {
        if ctx.pace(&mut pace).await {
            break;
        }
        let input = generator.next_write();
        let result = invoke_and_record(&ctx.recorder, &mut client, process, &input).await;
        if matches!(result, WriteResult::Info(_)) {
            process += ctx.concurrency as u64;
        }
        if let WriteResult::Ok(output) = &result {
            latest.fetch_max(output_revision(output), Ordering::Relaxed);
        }
        let failed = !matches!(result, WriteResult::Ok(_));
        count(&mut counts, &input, &result);
        if failed {
            ctx.sleep_within(ERROR_BACKOFF).await;
        }
    }
    Ok(counts)
}

/// Compacts every `interval` or so (at random between half and one and a half of it), up to
/// [`COMPACT_LAG_REVISIONS`] below the newest revision a writer was told of, through a random
/// member, until the deadline.
async fn run_compactor(
    ctx: Arc<Ctx>,
    interval: Duration,
    latest: Arc<AtomicI64>,
) -> anyhow::Result<Counts> {
    let mut rng = SeededRng::fork(ctx.seed, COMPACTOR_STREAM);
    let mut process = COMPACTOR_PROCESS_BASE;
    let mut compacted: Revision = 0;
    let mut counts = Counts::default();
    loop {
        ctx.sleep_within(rng.duration_between(interval / 2, interval * 3 / 2))
            .await;
        if Instant::now() >= ctx.deadline {
            return Ok(counts);
        }
        let revision = latest.load(Ordering::Relaxed) - COMPACT_LAG_REVISIONS;
        if revision <= compacted {
            continue;
        }
        let node = rng.below(ctx.cluster.len());
        let mut client = WriteClient::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
        let input = WriteInput::Compact { revision };
        let result = invoke_and_record(&ctx.recorder, &mut client, process, &input).await;
        count(&mut counts, &input, &result);
        match result {
            WriteResult::Ok(_) => compacted = revision,
            WriteResult::Info(_) => process += 1,
            WriteResult::Fail(_) => {}
        }
    }
}

fn output_revision(output: &WriteOutput) -> Revision {
    match output {
        WriteOutput::Put { revision }
        | WriteOutput::Delete { revision, .. }
        | WriteOutput::Txn { revision }
        | WriteOutput::Compact { revision } => *revision,
    }
}

fn function(input: &WriteInput) -> &'static str {
    match input {
        WriteInput::Put { .. } => "put",
        WriteInput::Delete { .. } => "delete",
        WriteInput::Txn { .. } => "txn",
        WriteInput::Compact { .. } => "compact",
    }
}

fn count(counts: &mut Counts, input: &WriteInput, result: &WriteResult) {
    let function = function(input);
    match result {
        WriteResult::Ok(_) => counts.add(function, "ok", None),
        WriteResult::Fail(why) => counts.add(function, "fail", Some(why)),
        WriteResult::Info(why) => counts.add(function, "info", Some(why)),
    }
}

async fn invoke_and_record(
    recorder: &Recorder,
    client: &mut WriteClient,
    process: u64,
    input: &WriteInput,
) -> WriteResult {
    recorder.invoke(process, input);
    let result = client.invoke(input).await;
    match &result {
        WriteResult::Ok(output) => recorder.ok(process, output),
        WriteResult::Fail(_) => recorder.fail(process),
        WriteResult::Info(_) => recorder.info(process),
    }
    result
}

/// Puts [`FINAL_KEY`] through one member after another until one acknowledges it; its revision
/// is the one every watcher must reach. `None` if none did.
async fn final_write(ctx: &Ctx, counts: &mut Counts) -> anyhow::Result<Option<Revision>> {
    for attempt in 0..FINAL_WRITE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(FINAL_WRITE_RETRY_PAUSE).await;
        }
        let node = attempt % ctx.cluster.len();
        let mut client = WriteClient::new(&ctx.cluster.endpoint(node), ctx.request_timeout)?;
        let input = WriteInput::Put {
            key: FINAL_KEY.to_owned(),
            value: format!("final-{attempt}"),
        };
        let process = FINAL_PROCESS_BASE + attempt as u64;
        let result = invoke_and_record(&ctx.recorder, &mut client, process, &input).await;
        count(counts, &input, &result);
        if let WriteResult::Ok(WriteOutput::Put { revision }) = result {
            return Ok(Some(revision));
        }
    }
    Ok(None)
}

/// Why a segment ended.
enum SegmentOutcome {
    /// Its time was up, or the watcher converged: the stream was fine.
    Dropped(&'static str),
    /// The member ended it, cancelled it, or it broke.
    Broken(String),
}

impl SegmentOutcome {
    fn reason(&self) -> String {
        match self {
            SegmentOutcome::Dropped(reason) => (*reason).to_owned(),
            SegmentOutcome::Broken(reason) => reason.clone(),
        }
    }
}

/// One watcher (or collector): segments until it converges, gives up, or is told to stop.
async fn run_watcher(
    ctx: Arc<Ctx>,
    log: Arc<WatchLog>,
    role: Role,
    rewind_percent: u64,
    mut phase: signal::Receiver<Phase>,
) -> WatcherReport {
    let nodes = ctx.cluster.len();
    let mut rng = SeededRng::fork(ctx.seed, WATCHER_STREAM + role.id);
    let mut counts = Counts::default();
    // The first revision not yet given to the watcher; a fresh watcher wants all history.
    let mut next: Revision = 1;
    let mut give_up: Option<Instant> = None;
    let mut converged = false;
    // Bounded by the give-up time once converging; before that by the deadline, since every
    // segment takes at least a reconnect pause or a segment's life.
    for segment in 0_u64.. {
        let current = *phase.borrow();
        match current {
            Phase::Stop => break,
            Phase::Converge(target) => {
                if next > target {
                    converged = true;
                    break;
                }
                let limit = *give_up.get_or_insert_with(|| Instant::now() + CONVERGE_TIMEOUT);
                if Instant::now() >= limit {
                    break;
                }
            }
            Phase::Running => {}
        }
        let member = if role.collector || segment == 0 {
            role.member
        } else {
            rng.below(nodes)
        };
        let (start, resume) = choose_start(&mut rng, segment, next, rewind_percent);
        next = start;
        let spec = WatchSpec {
            prefix: PREFIX.to_owned(),
            start_revision: start,
            no_put: role.no_put,
            no_delete: role.no_delete,
            prev_kv: true,
            progress_notify: true,
        };
        log.write(&WatchLine::Segment(SegmentStart {
            watcher: role.id,
            segment,
            collector: role.collector,
            member,
            time: ctx.recorder.now(),
            prefix: spec.prefix.clone(),
            start_revision: start,
            resume,
            no_put: spec.no_put,
            no_delete: spec.no_delete,
            prev_kv: spec.prev_kv,
        }));
        // Collectors hold their one stream until they converge; watchers drop theirs.
        let life = if role.collector {
            CONVERGE_TIMEOUT
        } else {
            rng.duration_between(SEGMENT_MIN, SEGMENT_MAX)
        };
        let outcome = match WatchStream::open(
            &ctx.cluster.endpoint(member),
            &spec,
            ctx.request_timeout,
        )
        .await
        {
            Ok(mut stream) => {
                counts.add("watch", "ok", None);
                let place = Place {
                    log: &log,
                    recorder: &ctx.recorder,
                    watcher: role.id,
                    segment,
                    member,
                };
                follow(&mut stream, &place, &mut next, &mut phase, life).await
            }
            Err(why) => {
                counts.add("watch", "fail", Some(&why));
                SegmentOutcome::Broken(format!("error: {why}"))
            }
        };
        log.write(&WatchLine::End(SegmentEnd {
            watcher: role.id,
            segment,
            time: ctx.recorder.now(),
            reason: outcome.reason(),
        }));
        if matches!(outcome, SegmentOutcome::Broken(_)) {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    if let Phase::Converge(target) = *phase.borrow() {
        converged |= next > target;
    }
    WatcherReport {
        role,
        converged,
        next_revision: next,
        counts,
    }
}

/// Where segment `segment` starts, given that `next` is the first revision the watcher has not
/// been given, and whether that is a resume: the first segment starts at `next` (revision 1),
/// later ones resume there, or now and then rewind up to [`REWIND_REVISIONS_MAX`] revisions.
fn choose_start(
    rng: &mut SeededRng,
    segment: u64,
    next: Revision,
    rewind_percent: u64,
) -> (Revision, bool) {
    let behind = usize::try_from(next - 1).unwrap_or(0);
    if segment == 0 || behind == 0 || !rng.chance(rewind_percent) {
        return (next, segment > 0);
    }
    let back = 1 + rng.below(REWIND_REVISIONS_MAX.min(behind));
    let back = Revision::try_from(back).expect("at most REWIND_REVISIONS_MAX");
    (next - back, false)
}

/// Where a segment's responses are logged from.
struct Place<'a> {
    log: &'a WatchLog,
    recorder: &'a Recorder,
    watcher: u64,
    segment: u64,
    member: usize,
}

impl Place<'_> {
    fn record(&self, reply: &WatchReply) {
        let line = ResponseLine {
            watcher: self.watcher,
            segment: self.segment,
            member: self.member,
            time: self.recorder.now(),
            header_revision: reply.header_revision,
            watch_id: reply.watch_id,
            created: reply.created,
            canceled: reply.canceled,
            compact_revision: reply.compact_revision,
            cancel_reason: reply.cancel_reason.clone(),
            fragment: reply.fragment,
            progress: false,
            events: reply.events.clone(),
        };
        let progress = line.is_progress();
        self.log
            .write(&WatchLine::Response(ResponseLine { progress, ..line }));
    }
}

/// Receives a segment's responses, logging each and moving `next` past what it was given,
/// until the segment's `life` is over, the watcher converges, or the stream ends.
async fn follow(
    stream: &mut WatchStream,
    place: &Place<'_>,
    next: &mut Revision,
    phase: &mut signal::Receiver<Phase>,
    life: Duration,
) -> SegmentOutcome {
    let end = tokio::time::sleep(life);
    tokio::pin!(end);
    let mut progress_ticks = tokio::time::interval(PROGRESS_REQUEST_INTERVAL);
    // The first tick is immediate; a report is only useful once the stream has had a moment.
    progress_ticks.tick().await;
    loop {
        if let Phase::Converge(target) = *phase.borrow()
            && *next > target
        {
            return SegmentOutcome::Dropped("converged");
        }
        tokio::select! {
            received = stream.next() => match received {
                Ok(Some(reply)) => {
                    place.record(&reply);
                    if let Some(last) = reply.events.iter().map(|e| e.mod_revision).max() {
                        *next = (*next).max(last + 1);
                    } else if !reply.created && !reply.canceled && reply.header_revision != 0 {
                        // A progress notification vouches for everything up to its revision.
                        *next = (*next).max(reply.header_revision + 1);
                    }
                    if reply.canceled {
                        if reply.compact_revision != 0 {
                            // Resume at the compact revision, accepting the hole below it.
                            *next = (*next).max(reply.compact_revision);
                            return SegmentOutcome::Broken("compacted".to_owned());
                        }
                        return SegmentOutcome::Broken(format!("canceled: {}", reply.cancel_reason));
                    }
                }
                Ok(None) => return SegmentOutcome::Broken("closed".to_owned()),
                Err(why) => return SegmentOutcome::Broken(format!("error: {why}")),
            },
            _ = progress_ticks.tick() => {
                // A full queue means earlier requests are still unsent; the next tick retries.
                let _ = stream.request_progress();
            }
            () = &mut end => return SegmentOutcome::Dropped("timer"),
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == Phase::Stop {
                    return SegmentOutcome::Dropped("stopped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_writes_and_values_are_unique() {
        let writes = |seed, writer| {
            let mut generator = WriteGenerator::new(WatchOptions::default(), seed, writer);
            (0..500).map(|_| generator.next_write()).collect::<Vec<_>>()
        };
        assert_eq!(writes(7, 0), writes(7, 0));
        assert_ne!(writes(7, 0), writes(8, 0));
        let mut values = Vec::new();
        for writer in 0..3 {
            for write in writes(7, writer) {
                match write {
                    WriteInput::Put { value, .. } => values.push(value),
                    WriteInput::Txn { ops } => {
                        assert!(matches!(ops[0], TxnOp::Put { .. }), "{ops:?}");
                        let mut keys: Vec<&str> = ops
                            .iter()
                            .map(|op| match op {
                                TxnOp::Put { key, .. } | TxnOp::Delete { key } => key.as_str(),
                            })
                            .collect();
                        let count = keys.len();
                        keys.sort_unstable();
                        keys.dedup();
                        assert_eq!(keys.len(), count, "a txn's keys are distinct");
                        values.extend(ops.into_iter().filter_map(|op| match op {
                            TxnOp::Put { value, .. } => Some(value),
                            TxnOp::Delete { .. } => None,
                        }));
                    }
                    WriteInput::Delete { key } => assert!(key.starts_with(PREFIX)),
                    WriteInput::Compact { .. } => panic!("writers never compact"),
                }
            }
        }
        let total = values.len();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), total);
    }
}
