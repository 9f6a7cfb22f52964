//! The nemesis: faults injected into the cluster on a seeded schedule, each one undone again.
//!
//! Owns the fault schedule and the `nemesis` lines of the history. After an initial quiet
//! interval, it repeats: pick a fault class (each enabled class once per round, in a seeded
//! order) and a target (the leader, or one of the other members), start the fault, hold it for
//! about one interval, stop it, rest about one interval. Faults do not overlap in this first
//! version. Classes (jepsen.md §1.3, §6.3):
//! - `kill`: `kill -9` of the target, restarted on its data directory when the fault stops;
//! - `pause`: SIGSTOP, then SIGCONT;
//! - `partition`: every link of the target cut both ways at the peer proxies, then healed.
//!
//! When the time limit comes, whatever is in force is stopped and [`Cluster::heal_all`] runs, so
//! the final phase always starts on a whole cluster; the runner heals again if this task died,
//! and dropping the cluster kills everything.
//!
//! Must not: send client requests (it only asks Maintenance.Status who leads), or signal anything
//! but the cluster's own children. A failed action is recorded with an `error` and does not stop
//! the run.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::Cluster;
use crate::history::recorder::Recorder;
use crate::random::SeededRng;

/// `--nemesis-interval` unless told otherwise (Jepsen's etcd suite uses 5 s).
pub const INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// How long a cut may take to close the connections it crosses.
const CUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Actions per run at most; with the shortest interval of 1 s that is hours of faults.
const ACTIONS_MAX: usize = 10_000;

/// A fault class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9, then restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Isolate one member at the peer proxies, then heal.
    Partition,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            "partition" => Ok(Fault::Partition),
            other => Err(format!(
                "unknown nemesis {other:?} (expected kill, pause or partition)"
            )),
        }
    }
}

/// Parses `--nemesis`: a comma-separated list, `all`, or `none`.
///
/// # Errors
/// On an unknown class.
pub fn parse_faults(text: &str) -> Result<Vec<Fault>, String> {
    match text.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(vec![Fault::Kill, Fault::Pause, Fault::Partition]),
        list => {
            let mut faults: Vec<Fault> = Vec::new();
            for name in list.split(',') {
                let fault = name.trim().parse()?;
                if !faults.contains(&fault) {
                    faults.push(fault);
                }
            }
            Ok(faults)
        }
    }
}

/// What the nemesis does.
#[derive(Clone, Debug)]
pub struct NemesisOptions {
    /// Enabled classes; empty means no faults.
    pub faults: Vec<Fault>,
    /// Mean hold time and mean rest time; each is drawn uniformly from half to one and a half
    /// times this.
    pub interval: Duration,
    /// Chance, percent, that a fault targets the leader; otherwise it targets another member
    /// (any member when no leader is known).
    pub leader_percent: u64,
}

/// What the nemesis did.
#[derive(Clone, Debug, Default)]
pub struct NemesisReport {
    /// Faults that started, by class name.
    pub started: Vec<String>,
    /// Actions that failed.
    pub errors: Vec<String>,
}

/// A fault in force.
struct Active {
    fault: Fault,
    target: usize,
}

/// Runs the schedule until `deadline`, then heals everything.
pub async fn run(
    cluster: &Cluster,
    recorder: &Recorder,
    options: &NemesisOptions,
    mut rng: SeededRng,
    deadline: Instant,
) -> NemesisReport {
    let mut report = NemesisReport::default();
    if options.faults.is_empty() {
        return report;
    }
    {
        let interval = options.interval;
        sleep_until_or(deadline, interval).await;
        // Faults not yet used in this round; every class comes once per round, in a seeded
        // order, so even a short run sees each class.
        let mut round: Vec<Fault> = Vec::new();
        for _ in 0..ACTIONS_MAX {
            if Instant::now() >= deadline {
                break;
            }
            if round.is_empty() {
                round = options.faults.clone();
                rng.shuffle(&mut round);
            }
            let Some(fault) = round.pop() else {
                break;
            };
            let wants_leader = rng.chance(options.leader_percent);
            let pick = rng.below(cluster.len());
            let hold = rng.duration_between(interval / 2, interval * 3 / 2);
            let rest = rng.duration_between(interval / 2, interval * 3 / 2);
            let leader = cluster.leader().await;
            let target = match leader {
                Some(leader) if wants_leader => leader,
                // Another member: the `pick`-th of the others.
                Some(leader) if cluster.len() > 1 => {
                    let others: Vec<usize> = (0..cluster.len())
                        .filter(|&other| other != leader)
                        .collect();
                    others[pick % others.len()]
                }
                _ => pick,
            };
            let is_leader = leader == Some(target);
            if let Some(active) =
                start(cluster, recorder, fault, target, is_leader, &mut report).await
            {
                sleep_until_or(deadline, hold).await;
                stop(cluster, recorder, &active, &mut report).await;
            }
            sleep_until_or(deadline, rest).await;
        }
    }
    let failures = cluster.heal_all().await;
    recorder.nemesis("heal", json!({ "errors": failures }));
    report.errors.extend(failures);
    report
}

/// Sleeps `duration`, or until `deadline` if that comes first.
async fn sleep_until_or(deadline: Instant, duration: Duration) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(duration.min(remaining)).await;
}

async fn start(
    cluster: &Cluster,
    recorder: &Recorder,
    fault: Fault,
    target: usize,
    is_leader: bool,
    report: &mut NemesisReport,
) -> Option<Active> {
    let f = format!("start-{fault}");
    let name = cluster.name(target).to_owned();
    let outcome = match fault {
        Fault::Kill => cluster.kill9(target),
        Fault::Pause => cluster.pause(target),
        Fault::Partition => {
            cluster.network().isolate(target);
            if cluster.network().wait_cut(CUT_TIMEOUT).await {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "connections still open {CUT_TIMEOUT:?} after the cut"
                ))
            }
        }
    };
    match outcome {
        Ok(()) => {
            let mut value = json!({ "target": name, "leader": is_leader });
            if fault == Fault::Partition {
                let cut: Vec<[String; 2]> = cluster
                    .network()
                    .cut_links()
                    .into_iter()
                    .map(|(a, b)| [cluster.name(a).to_owned(), cluster.name(b).to_owned()])
                    .collect();
                value["cut"] = json!(cut);
            }
            recorder.nemesis(&f, value);
            report.started.push(fault.name().to_owned());
            Some(Active { fault, target })
        }
        Err(why) => {
            let error = format!("{f} {name}: {why:#}");
            recorder.nemesis(&f, json!({ "target": name, "error": error }));
            report.errors.push(error);
            // A partition whose connections did not all close is still a partition in force.
            (fault == Fault::Partition).then_some(Active { fault, target })
        }
    }
}

async fn stop(cluster: &Cluster, recorder: &Recorder, active: &Active, report: &mut NemesisReport) {
    let f = format!("stop-{}", active.fault);
    let name = cluster.name(active.target).to_owned();
    let outcome = match active.fault {
        Fault::Kill => cluster.restart(active.target).await,
        Fault::Pause => cluster.resume(active.target),
        Fault::Partition => {
            cluster.network().heal();
            Ok(())
        }
    };
    match outcome {
        Ok(()) => recorder.nemesis(&f, json!({ "target": name })),
        Err(why) => {
            let error = format!("{f} {name}: {why:#}");
            recorder.nemesis(&f, json!({ "target": name, "error": error }));
            report.errors.push(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_lists() {
        assert_eq!(
            parse_faults("kill,pause,partition").unwrap(),
            vec![Fault::Kill, Fault::Pause, Fault::Partition]
        );
        assert_eq!(parse_faults("all").unwrap().len(), 3);
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(parse_faults("kill,kill").unwrap(), vec![Fault::Kill]);
        assert!(parse_faults("clock").is_err());
    }
}
