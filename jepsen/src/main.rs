//! The `mnemo-jepsen` command: `check` judges a recorded history, `test` runs a live cluster under
//! faults and judges what it recorded, `bugcheck` shows that `test` catches an injected bug,
//! `report` rebuilds a finished run's report.
//!
//! Owns the command line and the exit codes. `check` and `test`: 0 valid (every check passed), 1
//! a violation, 2 unknown or bad input or a run that could not be carried out (including usage
//! errors, which clap reports with 2 as well). `bugcheck`: 0 when the run was judged not
//! linearizable (the bug was caught), 1 when it was not (valid or unknown), 2 when it could not
//! run. `report`: 0 when written, 2 when not. Must not: hold checking or harness logic;
//! everything it prints comes from the library.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mnemo_jepsen::bugs;
use mnemo_jepsen::checker::elle;
use mnemo_jepsen::checker::linearizable::{
    CheckOptions, PARTITION_TIME_BUDGET_DEFAULT, Verdict, check,
};
use mnemo_jepsen::checker::watch::check_run_dir;
use mnemo_jepsen::cluster::{BUG_BINARY_NAME, ETCD_BINARY_DEFAULT, Target, default_binary};
use mnemo_jepsen::history::jsonl::{AnyHistory, Header, ModelName};
use mnemo_jepsen::history::{History, edn_kv, jepsen_etcd, jsonl};
use mnemo_jepsen::model::Determinized;
use mnemo_jepsen::model::Model;
use mnemo_jepsen::model::etcd::EtcdKeyModel;
use mnemo_jepsen::model::kv::KvModel;
use mnemo_jepsen::model::register::RegisterModel;
use mnemo_jepsen::nemesis::{self, Fault, NemesisOptions, PartitionShape};
use mnemo_jepsen::report;
use mnemo_jepsen::run::{TestOptions, Validity, run_test};
use mnemo_jepsen::workload::append::{self, AppendOptions};
use mnemo_jepsen::workload::lease::{self, LeaseOptions};
use mnemo_jepsen::workload::register::{self, RegisterOptions};
use mnemo_jepsen::workload::watch::{self, WatchOptions};
use mnemo_jepsen::workload::{WorkloadName, WorkloadOptions};

/// `--time-limit` of `test` unless told otherwise.
const TIME_LIMIT_DEFAULT_SECS: u64 = 60;
/// `--leader-percent` of `test` unless told otherwise.
const LEADER_PERCENT_DEFAULT: u64 = 50;
/// Members' `--snapshot-count` unless told: small, as in Jepsen's etcd suite, so that runs
/// exercise snapshots.
const SNAPSHOT_COUNT_DEFAULT: u64 = 100;
/// Exit code when the history is linearizable.
const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code when it is not.
const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit code when the checker could not decide, or the input could not be read.
const EXIT_UNKNOWN_OR_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "mnemo-jepsen",
    version,
    about = "Black-box testing of mnemo, Jepsen style"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a recorded history for linearizability; a JSONL history of the append workload is
    /// checked for strict serializability (Elle-lite) instead, and a watch run's directory for
    /// the watch guarantees.
    Check {
        /// The history file (for `--format watch`, the run directory).
        file: PathBuf,
        /// The file's format.
        #[arg(long, value_enum)]
        format: Format,
        /// Search time allowed per partition (key) before the verdict is "unknown".
        #[arg(long, default_value_t = PARTITION_TIME_BUDGET_DEFAULT.as_secs())]
        timeout_secs: u64,
    },
    /// Run a live cluster under faults, record a history, and check it.
    Test(RunArgs),
    /// Run `test` against a binary with an injected bug; succeed only if the run is judged not
    /// linearizable.
    Bugcheck(RunArgs),
    /// Rebuild `summary.txt` and `report.html` of a finished run from its `results.json` and
    /// `history.jsonl`.
    Report {
        /// The run directory (`<store>/<timestamp>`, or `<store>/latest`).
        run_dir: PathBuf,
    },
}

/// The flags of `test` and `bugcheck`.
#[derive(Args, Clone, Debug)]
struct RunArgs {
    /// The workload: register, append, watch or lease. [default: register for test; the bug's
    /// own for bugcheck]
    #[arg(long)]
    workload: Option<String>,
    /// Faults: a comma-separated list of kill, pause, partition, delay, member, admin; or all,
    /// or none.
    /// [default: kill,pause,partition for test; the bug's own for bugcheck]
    #[arg(long)]
    nemesis: Option<String>,
    /// The store under test: mnemo, or etcd (Debian's etcd-server, judged by the same harness).
    #[arg(long, default_value = "mnemo")]
    target: String,
    /// Shapes partitions take: a comma-separated list of isolate, halves, bridge. [default:
    /// all of them for test; the bug's own for bugcheck]
    #[arg(long)]
    partition_shapes: Option<String>,
    /// Members.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload (setup, the final phase and the check come on top). [default: 60 for
    /// test; the bug's own for bugcheck]
    #[arg(long)]
    time_limit: Option<u64>,
    /// Seed of the operation and fault schedules [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Target operations per second, all workers together.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Workers, each pinned to one member round-robin [default: 2 per member].
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Keys active at once (register), or keys written (watch, at least 3).
    #[arg(long, default_value_t = register::KEYS_DEFAULT)]
    keys: usize,
    /// Operations per key before it is replaced by a fresh one (register).
    #[arg(long, default_value_t = register::OPS_PER_KEY_DEFAULT)]
    ops_per_key: usize,
    /// Keys active at once (append).
    #[arg(long, default_value_t = append::KEYS_DEFAULT)]
    append_keys: usize,
    /// Micro-operations per transaction at most (append).
    #[arg(long, default_value_t = append::MAX_TXN_LEN_DEFAULT)]
    max_txn_len: usize,
    /// Appends to a key before it is replaced by a fresh one (append).
    #[arg(long, default_value_t = append::APPENDS_PER_KEY_DEFAULT)]
    appends_per_key: usize,
    /// Watchers of the watch workload, spread over the members [default: 2 per member].
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Share of the watch workload's segments that rewind to a past revision instead of
    /// resuming, percent.
    #[arg(long, default_value_t = watch::REWIND_PERCENT_DEFAULT)]
    rewind_percent: u64,
    /// Mean seconds between two compactions in the watch workload (0: none).
    #[arg(long, default_value_t = 0.0)]
    compact_interval: f64,
    /// lease workload: TTL, seconds, of the leases that carry keys.
    #[arg(long, default_value_t = lease::KEY_TTL_SECS_DEFAULT)]
    lease_ttl: i64,
    /// lease workload: TTL, seconds, of the lock holders' leases.
    #[arg(long, default_value_t = lease::LOCK_TTL_SECS_DEFAULT)]
    lock_ttl: i64,
    /// lease workload: leases each key worker keeps granted at once.
    #[arg(long, default_value_t = lease::LEASES_PER_WORKER_DEFAULT)]
    leases_per_worker: usize,
    /// Mean seconds a fault is held, and mean seconds between faults. [default: 5 for test; the
    /// bug's own for bugcheck]
    #[arg(long)]
    nemesis_interval: Option<f64>,
    /// Chance, percent, that a fault targets the leader instead of another member.
    /// [default: 50 for test; the bug's own for bugcheck]
    #[arg(long)]
    leader_percent: Option<u64>,
    /// Seconds before a request's outcome counts as unknown.
    #[arg(long, default_value_t = 2.0)]
    request_timeout: f64,
    /// Seconds between the final heal and the final reads.
    #[arg(long, default_value_t = 5.0)]
    heal_wait: f64,
    /// Linearizability search seconds allowed per key.
    #[arg(long, default_value_t = PARTITION_TIME_BUDGET_DEFAULT.as_secs())]
    check_timeout: u64,
    /// The members' --snapshot-count (Jepsen's etcd suite uses 100, to exercise snapshots).
    /// [default: 100; for bugcheck, the bug's own where it has one]
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Seconds between lease checkpoints of the members (mnemo's
    /// --experimental-lease-checkpoint-interval, at least 1), which turns lease checkpointing
    /// on. [default: off]
    #[arg(long)]
    lease_checkpoint_interval: Option<f64>,
    /// The members' --heartbeat-interval, ms.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// The members' --election-timeout, ms.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// The mnemo binary. [default: `$CARGO_TARGET_DIR/debug/mnemo`, or `target/debug/mnemo`; for
    /// bugcheck, mnemo-bug-injection beside it]
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Directory under which each run gets a directory of its own [default: a directory in the
    /// system's temp dir].
    #[arg(long)]
    store: Option<PathBuf>,
    /// An injected bug the members should have (`MNEMO_BUG`); the binary must be built with
    /// `--features bug-injection`. For bugcheck it also picks the workload, faults, leader
    /// targeting and time limit that catch it, unless those flags are given. [default for
    /// bugcheck: stale-local-read]
    #[arg(long)]
    bug: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Jepsen's etcd register log (`INFO  jepsen.util - P\t:type\t:f\tvalue`).
    JepsenEtcd,
    /// Porcupine's kv EDN lines (`{:process P, :type :ok, :f :get, :key "k", :value "v"}`).
    Kv,
    /// mnemo-jepsen's own JSON lines (see the `history::jsonl` module).
    Jsonl,
    /// A watch run's directory: its `history.jsonl` and `watch.jsonl`, judged for the watch
    /// guarantees (see the `checker::watch` module).
    Watch,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            file,
            format,
            timeout_secs,
        } => {
            let options = CheckOptions {
                partition_time_budget: Duration::from_secs(timeout_secs),
                ..CheckOptions::default()
            };
            match run_check(&file, format, &options) {
                Ok(code) => ExitCode::from(code),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT)
                }
            }
        }
        Command::Test(args) => run_live(&args, false),
        Command::Bugcheck(args) => run_live(&args, true),
        Command::Report { run_dir } => match report::regenerate(&run_dir) {
            Ok(rebuilt) => {
                println!("{}", rebuilt.run_dir.join(report::HTML_FILE).display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT)
            }
        },
    }
}

/// `test` and `bugcheck`.
fn run_live(args: &RunArgs, bugcheck: bool) -> ExitCode {
    let options = match test_options(args, bugcheck) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT);
        }
    };
    eprintln!(
        "seed {} (replay the schedules with --seed {}); binary {}",
        options.seed,
        options.seed,
        options.binary.display()
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: start the runtime: {error}");
            return ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run_test(&options) => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Workers and the nemesis hold the cluster; shutting the runtime down drops them, and with
    // them the last reference, which kills the members.
    runtime.shutdown_timeout(Duration::from_secs(10));
    let report = match outcome {
        None => {
            eprintln!("interrupted; members killed");
            return ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT);
        }
        Some(Err(error)) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT);
        }
        Some(Ok(report)) => report,
    };
    let mut out = std::io::stdout().lock();
    let mut text = report.summary();
    if report.validity == Validity::Invalid {
        text.push_str(&report.explanations());
    }
    drop(out.write_all(text.as_bytes()));
    let code = match (bugcheck, report.validity) {
        (false, Validity::Valid) | (true, Validity::Invalid) => EXIT_LINEARIZABLE,
        (false, Validity::Invalid) | (true, Validity::Valid | Validity::Unknown) => {
            EXIT_NOT_LINEARIZABLE
        }
        (false, Validity::Unknown) => EXIT_UNKNOWN_OR_BAD_INPUT,
    };
    if bugcheck {
        drop(writeln!(
            out,
            "bugcheck: the injected bug was {}",
            if code == EXIT_LINEARIZABLE {
                "caught"
            } else {
                "NOT caught"
            }
        ));
    }
    ExitCode::from(code)
}

fn test_options(args: &RunArgs, bugcheck: bool) -> anyhow::Result<TestOptions> {
    let bug = args
        .bug
        .clone()
        .or_else(|| bugcheck.then(|| "stale-local-read".to_owned()));
    // bugcheck takes the bug's own workload, faults and length unless told otherwise.
    let case = match (&bug, bugcheck) {
        (Some(name), true) => Some(bugs::find(name).with_context(|| {
            let known: Vec<&str> = bugs::BUGS.iter().map(|case| case.name).collect();
            format!("unknown bug {name:?}; bugcheck knows {}", known.join(", "))
        })?),
        _ => None,
    };
    let workload: WorkloadName = match (&args.workload, case) {
        (Some(name), _) => name.parse().map_err(anyhow::Error::msg)?,
        (None, Some(case)) => case.workload,
        (None, None) => WorkloadName::Register,
    };
    if args.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    let time_limit = args
        .time_limit
        .or(case.map(|case| case.time_limit_secs))
        .unwrap_or(TIME_LIMIT_DEFAULT_SECS);
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_secs() % 1_000_000
    });
    let target: Target = args.target.parse().map_err(anyhow::Error::msg)?;
    if target == Target::Etcd && (bugcheck || bug.is_some()) {
        anyhow::bail!("injected bugs exist only in mnemo; drop --bug or --target etcd");
    }
    let binary = args.binary.clone().unwrap_or_else(|| {
        let plain = default_binary();
        match target {
            Target::Etcd => PathBuf::from(ETCD_BINARY_DEFAULT),
            Target::Mnemo if bugcheck => plain.with_file_name(BUG_BINARY_NAME),
            Target::Mnemo => plain,
        }
    });
    Ok(TestOptions {
        target,
        nodes: args.nodes,
        binary,
        store: args
            .store
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("mnemo-jepsen")),
        time_limit: Duration::from_secs(time_limit),
        seed,
        rate: args.rate,
        concurrency: args.concurrency,
        workload,
        workloads: workload_options(args)?,
        nemesis: nemesis_options(args, case)?,
        request_timeout: seconds(args.request_timeout, "--request-timeout")?,
        heal_wait: seconds(args.heal_wait, "--heal-wait")?,
        check_timeout: Duration::from_secs(args.check_timeout),
        snapshot_count: args
            .snapshot_count
            .or(case.and_then(|case| case.snapshot_count))
            .unwrap_or(SNAPSHOT_COUNT_DEFAULT),
        lease_checkpoint_interval: lease_checkpoint_interval(args, target)?,
        heartbeat_interval_ms: args.heartbeat_interval,
        election_timeout_ms: args.election_timeout,
        bug,
    })
}

/// The members' lease checkpoint interval, refused for etcd, whose 3.4 has no such flag.
fn lease_checkpoint_interval(args: &RunArgs, target: Target) -> anyhow::Result<Option<Duration>> {
    let Some(value) = args.lease_checkpoint_interval else {
        return Ok(None);
    };
    if target == Target::Etcd {
        anyhow::bail!("--lease-checkpoint-interval needs mnemo: etcd 3.4 cannot set the interval");
    }
    seconds(value, "--lease-checkpoint-interval").map(Some)
}

/// `value` seconds given by `flag`, refused when negative or not a number.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} must be >= 0"))
}

/// The faults, their shapes, targeting and pace: the flags when given, else the bug case's.
fn nemesis_options(args: &RunArgs, case: Option<&bugs::BugCase>) -> anyhow::Result<NemesisOptions> {
    let faults = match (&args.nemesis, case) {
        (Some(list), _) => nemesis::parse_faults(list).map_err(anyhow::Error::msg)?,
        (None, Some(case)) => case.faults.to_vec(),
        (None, None) => vec![Fault::Kill, Fault::Pause, Fault::Partition],
    };
    let partition_shapes = match (&args.partition_shapes, case) {
        (Some(list), _) => list
            .split(',')
            .map(|shape| shape.trim().parse())
            .collect::<Result<Vec<PartitionShape>, String>>()
            .map_err(anyhow::Error::msg)?,
        (None, Some(case)) => case.partition_shapes.to_vec(),
        (None, None) => Vec::new(),
    };
    let leader_percent = args
        .leader_percent
        .or(case.map(|case| case.leader_percent))
        .unwrap_or(LEADER_PERCENT_DEFAULT);
    let interval = seconds(
        args.nemesis_interval
            .or(case.map(|case| case.nemesis_interval_secs))
            .unwrap_or(nemesis::INTERVAL_DEFAULT.as_secs_f64()),
        "--nemesis-interval",
    )?;
    if interval < Duration::from_millis(100) && !faults.is_empty() {
        anyhow::bail!("--nemesis-interval must be at least 0.1 s");
    }
    Ok(NemesisOptions {
        faults,
        interval,
        leader_percent: leader_percent.min(100),
        partition_shapes,
    })
}

/// Every workload's options, from the flags that shape them.
fn workload_options(args: &RunArgs) -> anyhow::Result<WorkloadOptions> {
    Ok(WorkloadOptions {
        register: RegisterOptions {
            keys: args.keys.max(1),
            ops_per_key: args.ops_per_key.max(1),
            ..RegisterOptions::default()
        },
        append: AppendOptions {
            keys: args.append_keys.max(1),
            max_txn_len: args.max_txn_len.max(1),
            appends_per_key: args.appends_per_key.max(1),
        },
        watch: WatchOptions {
            watchers: args.watchers,
            keys: args.keys.max(watch::TXN_KEYS_MAX),
            rewind_percent: args.rewind_percent.min(100),
            compact_interval: Duration::try_from_secs_f64(args.compact_interval)
                .context("--compact-interval must be >= 0")?,
            ..WatchOptions::default()
        },
        lease: LeaseOptions {
            key_ttl_secs: args.lease_ttl,
            lock_ttl_secs: args.lock_ttl,
            leases_per_worker: args.leases_per_worker,
        },
    })
}

fn run_check(file: &Path, format: Format, options: &CheckOptions) -> anyhow::Result<u8> {
    if matches!(format, Format::Watch) {
        return judge_watch_run(file);
    }
    let reader = BufReader::new(
        File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let context = || format!("cannot parse {}", file.display());
    Ok(match format {
        Format::JepsenEtcd => judge(
            &RegisterModel,
            &jepsen_etcd::parse(reader).with_context(context)?,
            options,
        ),
        Format::Kv => judge(
            &KvModel,
            &edn_kv::parse(reader).with_context(context)?,
            options,
        ),
        Format::Jsonl if jsonl_model(file) == Some(ModelName::Append) => {
            judge_append(reader).with_context(context)?
        }
        Format::Jsonl => match jsonl::parse(reader).with_context(context)? {
            AnyHistory::Register(history) => judge(&RegisterModel, &history, options),
            AnyHistory::Kv(history) => judge(&KvModel, &history, options),
            AnyHistory::Etcd(history) => judge(&Determinized(EtcdKeyModel), &history, options),
        },
        Format::Watch => unreachable!("judged above"),
    })
}

/// Checks a watch run's directory, prints the verdict and the violations, and returns the exit
/// code.
fn judge_watch_run(run_dir: &Path) -> anyhow::Result<u8> {
    let started = Instant::now();
    let found = check_run_dir(run_dir)?;
    let result = found.to_check_result(started.elapsed().as_secs_f64());
    let mut out = std::io::stdout().lock();
    let mut text = format!(
        "{} (checked in {:.2?})\n",
        result.summary,
        started.elapsed()
    );
    if let Some(explanation) = result.details["explanation"].as_str() {
        text.push_str(explanation);
        text.push('\n');
    }
    // As in `judge`: a reader that went away must not turn the verdict into a panic.
    drop(out.write_all(text.as_bytes()));
    Ok(if found.violations.is_empty() {
        EXIT_LINEARIZABLE
    } else {
        EXIT_NOT_LINEARIZABLE
    })
}

/// The model a JSONL history's header names, if its first line is a header.
fn jsonl_model(file: &Path) -> Option<ModelName> {
    let mut first = String::new();
    BufReader::new(File::open(file).ok()?)
        .read_line(&mut first)
        .ok()?;
    serde_json::from_str::<Header>(&first)
        .ok()
        .map(|header| header.model)
}

/// Checks an append history with Elle-lite, prints the verdict and every explained anomaly, and
/// returns the exit code.
fn judge_append(reader: impl BufRead) -> anyhow::Result<u8> {
    let txns = elle::read_history(reader)?;
    let started = Instant::now();
    let report = elle::check(&txns)?;
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    let printed = if report.is_valid() {
        writeln!(
            out,
            "strict serializable ({} transactions checked in {elapsed:.2?})",
            txns.len()
        )
    } else {
        let classes: Vec<String> = report
            .counts
            .iter()
            .map(|(class, count)| format!("{class} x{count}"))
            .collect();
        writeln!(
            out,
            "anomalies: {} ({} transactions checked in {elapsed:.2?})",
            classes.join(", "),
            txns.len()
        )
        .and_then(|()| write!(out, "{}", report.explanation(usize::MAX)))
    };
    // As in `judge`: a reader that went away must not turn the verdict into a panic.
    drop(printed);
    Ok(if report.is_valid() {
        EXIT_LINEARIZABLE
    } else {
        EXIT_NOT_LINEARIZABLE
    })
}

/// Checks, prints the verdict, and returns the exit code.
fn judge<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> u8 {
    let started = Instant::now();
    let verdict = check(model, history, options);
    let elapsed = started.elapsed();
    let code = match verdict {
        Verdict::Linearizable => EXIT_LINEARIZABLE,
        Verdict::NotLinearizable { .. } => EXIT_NOT_LINEARIZABLE,
        Verdict::Unknown { .. } => EXIT_UNKNOWN_OR_BAD_INPUT,
    };
    let mut out = std::io::stdout().lock();
    let printed = writeln!(
        out,
        "{verdict} ({} operations checked in {elapsed:.2?})",
        history.len()
    )
    .and_then(|()| match &verdict {
        Verdict::NotLinearizable { diagnostic, .. } => write!(out, "{diagnostic}"),
        Verdict::Linearizable | Verdict::Unknown { .. } => Ok(()),
    });
    // A reader that went away (`| head`) must not turn the verdict into a panic; the exit code
    // still carries it.
    drop(printed);
    code
}
