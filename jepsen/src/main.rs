//! The `mnemo-jepsen` command: `check` judges a recorded history; `test` will run one.
//!
//! Owns the command line and the exit codes: 0 linearizable, 1 not linearizable, 2 unknown or bad
//! input (including usage errors, which clap reports with 2 as well). Must not: hold checking
//! logic; everything it prints comes from the library.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mnemo_jepsen::checker::linearizable::{
    CheckOptions, PARTITION_TIME_BUDGET_DEFAULT, Verdict, check,
};
use mnemo_jepsen::history::jsonl::AnyHistory;
use mnemo_jepsen::history::{History, edn_kv, jepsen_etcd, jsonl};
use mnemo_jepsen::model::Determinized;
use mnemo_jepsen::model::Model;
use mnemo_jepsen::model::etcd::EtcdKeyModel;
use mnemo_jepsen::model::kv::KvModel;
use mnemo_jepsen::model::register::RegisterModel;

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
    /// Check a recorded history for linearizability.
    Check {
        /// The history file.
        file: PathBuf,
        /// The file's format.
        #[arg(long, value_enum)]
        format: Format,
        /// Search time allowed per partition (key) before the verdict is "unknown".
        #[arg(long, default_value_t = PARTITION_TIME_BUDGET_DEFAULT.as_secs())]
        timeout_secs: u64,
    },
    /// Run a test against a live cluster (not built yet).
    Test {
        /// Ignored for now.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Jepsen's etcd register log (`INFO  jepsen.util - P\t:type\t:f\tvalue`).
    JepsenEtcd,
    /// Porcupine's kv EDN lines (`{:process P, :type :ok, :f :get, :key "k", :value "v"}`).
    Kv,
    /// mnemo-jepsen's own JSON lines (see the `history::jsonl` module).
    Jsonl,
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
        Command::Test { .. } => {
            eprintln!("mnemo-jepsen test: not built yet (only `check` exists)");
            ExitCode::from(EXIT_UNKNOWN_OR_BAD_INPUT)
        }
    }
}

fn run_check(file: &Path, format: Format, options: &CheckOptions) -> anyhow::Result<u8> {
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
        Format::Jsonl => match jsonl::parse(reader).with_context(context)? {
            AnyHistory::Register(history) => judge(&RegisterModel, &history, options),
            AnyHistory::Kv(history) => judge(&KvModel, &history, options),
            AnyHistory::Etcd(history) => judge(&Determinized(EtcdKeyModel), &history, options),
        },
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
