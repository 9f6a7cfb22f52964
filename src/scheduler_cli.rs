//! `mnemo scheduler`: flags and startup of the pod scheduler. Part of the binary, not the
//! library: it only parses flags and runs [`mnemo::scheduler::run`] until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use mnemo::scheduler::{self, Options, SCHEDULER_NAME_DEFAULT};

/// Binds pods without a node to Ready nodes with room for their requests, through a
/// Kubernetes API server (`mnemo apiserver` or kube-apiserver).
#[derive(Parser, Debug)]
#[command(bin_name = "mnemo scheduler")]
struct SchedulerFlags {
    /// The API server's URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Schedule pods whose spec.schedulerName is this (pods naming none get the default).
    #[arg(long, default_value = SCHEDULER_NAME_DEFAULT)]
    scheduler_name: String,
}

/// Runs `mnemo scheduler ...` (`args` starts after the binary name).
pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let flags = SchedulerFlags::parse_from(args);
    if !flags.server.starts_with("http://") {
        eprintln!(
            "mnemo scheduler: --server {:?} must be an http:// URL",
            flags.server
        );
        return ExitCode::from(2);
    }
    mnemo::logging::init(
        mnemo::logging::LogFormat::Text,
        mnemo::logging::LogLevel::Info,
        "scheduler",
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mnemo scheduler: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = Options {
        server: flags.server,
        name: flags.scheduler_name,
    };
    runtime.block_on(scheduler::run(options, shutdown_signal()));
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
