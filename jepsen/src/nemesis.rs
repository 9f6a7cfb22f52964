//! The nemesis: faults injected into the cluster on a seeded schedule, each one undone again.
//!
//! Owns the fault schedule and the `nemesis` lines of the history. After an initial quiet
//! interval, it repeats: pick a fault class (each enabled class once per round, in a seeded
//! order) and its targets, start the fault, hold it for about one interval, stop it, rest about
//! one interval. Faults do not overlap, so every fault's effect can be told apart in the history.
//! Classes (jepsen.md §1.3, §6.3):
//! - `kill`: `kill -9`, restarted on the same data directory when the fault stops. Targets: the
//!   leader (`--leader-percent`), another member, or with 5 or more members sometimes a
//!   minority of them at once;
//! - `pause`: SIGSTOP, then SIGCONT; the same targets;
//! - `partition`: links cut both ways at the peer proxies, then healed. Shapes: one member
//!   isolated (the leader or another), random halves (a minority cut from the majority), or a
//!   bridge (two sides that cannot talk, and one member that talks to both);
//! - `delay`: slow links (every link, or every link of one member), 50 to 250 ms each way per
//!   chunk, at the proxies;
//! - `member`: a follower removed from the membership (`MemberRemove`), killed and wiped; added
//!   back as a new member on an empty data directory when the fault stops;
//! - `admin`: a compaction at a recent revision (sometimes physical), then a defragment of one
//!   member; instantaneous, so it has no stop.
//!
//! When the time limit comes, whatever is in force is stopped and [`Cluster::heal_all`] runs, so
//! the final phase always starts on a whole cluster; the runner heals again if this task died,
//! and dropping the cluster kills everything.
//!
//! Must not: send client requests other than the admin fault's Compact and Defragment and the
//! Status and membership calls it makes through [`Cluster`], or signal anything but the cluster's
//! own children. A failed action is recorded with an `error` and does not stop the run.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::Cluster;
use crate::history::recorder::Recorder;
use crate::net::proxy::{Link, link};
use crate::random::SeededRng;

/// `--nemesis-interval` unless told otherwise (Jepsen's etcd suite uses 5 s).
pub const INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// How long a cut may take to close the connections it crosses.
const CUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Actions per run at most; with the shortest interval of 1 s that is hours of faults.
const ACTIONS_MAX: usize = 10_000;
/// Shortest delay of a slow link, each way.
const DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest delay of a slow link, each way: RTT stays under the election timeout.
const DELAY_MAX: Duration = Duration::from_millis(250);
/// An admin compaction goes at most this many revisions behind the current one.
const COMPACT_BEHIND_MAX: usize = 50;
/// Members at which kill and pause may take a minority at once instead of one member.
const MINORITY_TARGETS_FROM: usize = 5;

/// A fault class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9, then restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Cut links at the peer proxies, then heal.
    Partition,
    /// Slow links at the peer proxies, then heal.
    Delay,
    /// Remove a member and wipe it, then add it back.
    Member,
    /// Compact and defragment under load.
    Admin,
}

impl Fault {
    /// Every class, as `--nemesis all` enables them.
    pub const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::Delay,
        Fault::Member,
        Fault::Admin,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Delay => "delay",
            Fault::Member => "member",
            Fault::Admin => "admin",
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
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown nemesis {text:?} (expected kill, pause, partition, delay, member, \
                     admin, all or none)"
                )
            })
    }
}

/// Parses `--nemesis`: a comma-separated list, `all`, or `none`.
///
/// # Errors
/// On an unknown class.
pub fn parse_faults(text: &str) -> Result<Vec<Fault>, String> {
    match text.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(Fault::ALL.to_vec()),
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

/// The shapes a partition can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionShape {
    /// One member cut from all others: the leader (`leader_percent`) or another.
    Isolate,
    /// A random minority cut from the majority.
    Halves,
    /// Two sides that cannot talk, and one member that talks to both.
    Bridge,
}

impl PartitionShape {
    /// Every shape.
    pub const ALL: [PartitionShape; 3] = [
        PartitionShape::Isolate,
        PartitionShape::Halves,
        PartitionShape::Bridge,
    ];

    fn name(self) -> &'static str {
        match self {
            PartitionShape::Isolate => "isolate",
            PartitionShape::Halves => "halves",
            PartitionShape::Bridge => "bridge",
        }
    }
}

impl FromStr for PartitionShape {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PartitionShape::ALL
            .into_iter()
            .find(|shape| shape.name() == text)
            .ok_or_else(|| {
                format!("unknown partition shape {text:?} (expected isolate, halves or bridge)")
            })
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
    /// Chance, percent, that a fault aimed at one member targets the leader; otherwise it
    /// targets another member (any member when no leader is known).
    pub leader_percent: u64,
    /// Shapes partitions take, chosen among at random; empty means every shape.
    pub partition_shapes: Vec<PartitionShape>,
}

/// What the nemesis did.
#[derive(Clone, Debug, Default)]
pub struct NemesisReport {
    /// Faults that started, by class name.
    pub started: Vec<String>,
    /// Actions that failed.
    pub errors: Vec<String>,
}

/// A fault in force, to be stopped.
struct Active {
    fault: Fault,
    targets: Vec<usize>,
}

/// The seeded choices of one fault, drawn before the cluster is looked at, so the same seed gives
/// the same choices whatever the timing.
struct Draw {
    wants_leader: bool,
    pick: usize,
    shape: usize,
    order: Vec<usize>,
    delay: Duration,
    behind: usize,
    physical: bool,
}

impl Draw {
    fn new(rng: &mut SeededRng, members: usize, leader_percent: u64) -> Draw {
        let mut order: Vec<usize> = (0..members).collect();
        rng.shuffle(&mut order);
        Draw {
            wants_leader: rng.chance(leader_percent),
            pick: rng.below(members.max(1)),
            shape: rng.below(3),
            order,
            delay: rng.duration_between(DELAY_MIN, DELAY_MAX),
            behind: rng.below(COMPACT_BEHIND_MAX + 1),
            physical: rng.chance(50),
        }
    }
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
    let interval = options.interval;
    sleep_until_or(deadline, interval).await;
    // Faults not yet used in this round; every class comes once per round, in a seeded order,
    // so even a short run sees each class.
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
        let draw = Draw::new(&mut rng, cluster.len(), options.leader_percent);
        let hold = rng.duration_between(interval / 2, interval * 3 / 2);
        let rest = rng.duration_between(interval / 2, interval * 3 / 2);
        if let Some(active) = start(cluster, recorder, fault, &draw, options, &mut report).await {
            sleep_until_or(deadline, hold).await;
            stop(cluster, recorder, &active, &mut report).await;
        }
        sleep_until_or(deadline, rest).await;
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

/// One member: the leader when the draw wants it and there is one, else the draw's pick among
/// the others (any member when no leader is known).
fn one_member(leader: Option<usize>, members: usize, draw: &Draw) -> usize {
    match leader {
        Some(leader) if draw.wants_leader => leader,
        Some(leader) if members > 1 => {
            let others: Vec<usize> = (0..members).filter(|&other| other != leader).collect();
            others[draw.pick % others.len()]
        }
        _ => draw.pick % members,
    }
}

/// Targets of kill and pause: one member, or with enough members sometimes a minority.
fn process_targets(leader: Option<usize>, members: usize, draw: &Draw) -> Vec<usize> {
    if members >= MINORITY_TARGETS_FROM && draw.shape == 0 {
        let mut minority = draw.order[..(members - 1) / 2].to_vec();
        minority.sort_unstable();
        minority
    } else {
        vec![one_member(leader, members, draw)]
    }
}

/// A partition's shape: its name, the members it is aimed at, and the links it cuts.
fn partition_links(
    leader: Option<usize>,
    members: usize,
    shape: PartitionShape,
    draw: &Draw,
) -> (&'static str, Vec<usize>, Vec<Link>) {
    let across = |left: &[usize], right: &[usize]| -> Vec<Link> {
        left.iter()
            .flat_map(|&a| right.iter().map(move |&b| link(a, b)))
            .collect()
    };
    match shape {
        // Random halves: the first half of the seeded order is the minority.
        PartitionShape::Halves if members >= 2 => {
            let (minority, majority) = draw.order.split_at(members / 2);
            ("halves", minority.to_vec(), across(minority, majority))
        }
        // A bridge: the first member of the order talks to both sides, which cannot talk.
        PartitionShape::Bridge if members >= 3 => {
            let bridge = draw.order[0];
            let rest = &draw.order[1..];
            let (left, right) = rest.split_at(rest.len() / 2);
            ("bridge", vec![bridge], across(left, right))
        }
        _ => {
            let target = one_member(leader, members, draw);
            let others: Vec<usize> = (0..members).filter(|&other| other != target).collect();
            ("isolate", vec![target], across(&[target], &others))
        }
    }
}

async fn start(
    cluster: &Cluster,
    recorder: &Recorder,
    fault: Fault,
    draw: &Draw,
    options: &NemesisOptions,
    report: &mut NemesisReport,
) -> Option<Active> {
    let f = format!("start-{fault}");
    let members = cluster.len();
    let leader = cluster.leader().await;
    let names = |targets: &[usize]| -> Vec<String> {
        targets
            .iter()
            .map(|&index| cluster.name(index).to_owned())
            .collect()
    };
    let mut value = json!({ "leader": leader.map(|index| cluster.name(index).to_owned()) });
    let (targets, outcome): (Vec<usize>, anyhow::Result<()>) = match fault {
        Fault::Kill | Fault::Pause => {
            let targets = process_targets(leader, members, draw);
            let outcome = targets.iter().try_for_each(|&target| {
                if fault == Fault::Kill {
                    cluster.kill9(target)
                } else {
                    cluster.pause(target)
                }
            });
            (targets, outcome)
        }
        Fault::Partition => {
            let shapes: &[PartitionShape] = if options.partition_shapes.is_empty() {
                &PartitionShape::ALL
            } else {
                &options.partition_shapes
            };
            let shape = shapes[draw.shape % shapes.len()];
            let (shape, targets, links) = partition_links(leader, members, shape, draw);
            cluster.network().cut(&links);
            value["shape"] = json!(shape);
            value["cut"] = json!(link_names(cluster, &links));
            let outcome = if cluster.network().wait_cut(CUT_TIMEOUT).await {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "connections still open {CUT_TIMEOUT:?} after the cut"
                ))
            };
            (targets, outcome)
        }
        Fault::Delay => {
            let network = cluster.network();
            let (targets, links) = if draw.shape == 0 {
                (Vec::new(), network.all_links())
            } else {
                let target = one_member(leader, members, draw);
                let links = (0..members)
                    .filter(|&other| other != target)
                    .map(|other| link(target, other))
                    .collect();
                (vec![target], links)
            };
            network.slow(&links, draw.delay);
            value["delay_ms"] = json!(draw.delay.as_millis());
            value["slowed"] = json!(link_names(cluster, &links));
            (targets, Ok(()))
        }
        Fault::Member => {
            // A follower: removing the leader would mostly test the election that follows, which
            // kill already does.
            let followers: Vec<usize> = (0..members)
                .filter(|&index| Some(index) != leader && !cluster.is_removed(index))
                .collect();
            if members < 2 || followers.is_empty() {
                (Vec::new(), Err(anyhow::anyhow!("no follower to remove")))
            } else {
                let target = followers[draw.pick % followers.len()];
                (vec![target], cluster.remove(target).await)
            }
        }
        Fault::Admin => {
            let node = draw.pick % members;
            let outcome = admin(cluster, node, draw, &mut value).await;
            (vec![node], outcome)
        }
    };
    value["targets"] = json!(names(&targets));
    let in_force = Active { fault, targets };
    match outcome {
        Ok(()) => {
            recorder.nemesis(&f, value);
            report.started.push(fault.name().to_owned());
            (fault != Fault::Admin).then_some(in_force)
        }
        Err(why) => {
            let error = format!("{f} {:?}: {why:#}", names(&in_force.targets));
            value["error"] = json!(error);
            recorder.nemesis(&f, value);
            report.errors.push(error);
            // A partition whose connections did not all close is still in force, and so is
            // whatever part of a multi-member kill or pause succeeded; stopping heals them.
            matches!(fault, Fault::Partition | Fault::Kill | Fault::Pause).then_some(in_force)
        }
    }
}

/// The admin fault: a compaction a few revisions behind the current one, then a defragment of
/// member `node`. A compaction refused because the history is already compacted that far is no
/// failure of the nemesis.
async fn admin(
    cluster: &Cluster,
    node: usize,
    draw: &Draw,
    value: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let current = cluster.revision(node).await?;
    let behind = i64::try_from(draw.behind).unwrap_or(0);
    let revision = (current - behind).max(1);
    value["compact_revision"] = json!(revision);
    value["physical"] = json!(draw.physical);
    if let Err(why) = cluster.compact(node, revision, draw.physical).await {
        let text = format!("{why:#}");
        if !text.contains("compacted") {
            return Err(why);
        }
        value["compact"] = json!(text);
    }
    cluster.defragment(node).await
}

fn link_names(cluster: &Cluster, links: &[Link]) -> Vec<[String; 2]> {
    links
        .iter()
        .map(|&(a, b)| [cluster.name(a).to_owned(), cluster.name(b).to_owned()])
        .collect()
}

async fn stop(cluster: &Cluster, recorder: &Recorder, active: &Active, report: &mut NemesisReport) {
    let f = format!("stop-{}", active.fault);
    let names: Vec<String> = active
        .targets
        .iter()
        .map(|&index| cluster.name(index).to_owned())
        .collect();
    let mut errors = Vec::new();
    match active.fault {
        Fault::Kill => {
            for &target in &active.targets {
                if !cluster.is_running(target)
                    && let Err(why) = cluster.restart(target).await
                {
                    errors.push(format!("restart {}: {why:#}", cluster.name(target)));
                }
            }
        }
        Fault::Pause => {
            for &target in &active.targets {
                if let Err(why) = cluster.resume(target) {
                    errors.push(format!("resume {}: {why:#}", cluster.name(target)));
                }
            }
        }
        Fault::Partition | Fault::Delay => cluster.network().heal(),
        Fault::Member => {
            for &target in &active.targets {
                if let Err(why) = cluster.add_back(target).await {
                    errors.push(format!("add back {}: {why:#}", cluster.name(target)));
                }
            }
        }
        Fault::Admin => {}
    }
    if errors.is_empty() {
        recorder.nemesis(&f, json!({ "targets": names }));
    } else {
        let error = format!("{f}: {}", errors.join("; "));
        recorder.nemesis(&f, json!({ "targets": names, "error": error }));
        report.errors.push(error);
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
        assert_eq!(parse_faults("all").unwrap(), Fault::ALL.to_vec());
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(parse_faults("kill,kill").unwrap(), vec![Fault::Kill]);
        assert_eq!(
            parse_faults("delay,member,admin").unwrap(),
            vec![Fault::Delay, Fault::Member, Fault::Admin]
        );
        assert!(parse_faults("clock").is_err());
    }

    fn draw(shape: usize, order: Vec<usize>, wants_leader: bool, pick: usize) -> Draw {
        Draw {
            wants_leader,
            pick,
            shape,
            order,
            delay: DELAY_MIN,
            behind: 0,
            physical: false,
        }
    }

    #[test]
    fn partitions_cut_exactly_their_shape() {
        // Isolating the leader cuts its two links and nothing else.
        let (shape, targets, links) = partition_links(
            Some(1),
            3,
            PartitionShape::Isolate,
            &draw(0, vec![0, 1, 2], true, 0),
        );
        assert_eq!((shape, targets), ("isolate", vec![1]));
        assert_eq!(links, vec![link(1, 0), link(1, 2)]);
        // Isolating another member never picks the leader.
        for pick in 0..4 {
            let (_, targets, _) = partition_links(
                Some(1),
                3,
                PartitionShape::Isolate,
                &draw(0, vec![0, 1, 2], false, pick),
            );
            assert_ne!(targets, vec![1]);
        }
        // Halves of five: the first two of the order against the other three, six links.
        let (shape, minority, links) = partition_links(
            None,
            5,
            PartitionShape::Halves,
            &draw(1, vec![3, 0, 4, 1, 2], false, 0),
        );
        assert_eq!((shape, minority), ("halves", vec![3, 0]));
        assert_eq!(links.len(), 6);
        assert!(links.contains(&link(3, 4)) && !links.contains(&link(3, 0)));
        // A bridge of three: the bridge keeps both links, the two sides lose theirs.
        let (shape, bridge, links) = partition_links(
            None,
            3,
            PartitionShape::Bridge,
            &draw(2, vec![2, 0, 1], false, 0),
        );
        assert_eq!((shape, bridge), ("bridge", vec![2]));
        assert_eq!(links, vec![link(0, 1)]);
        // A bridge of five: sides of two, four links cut, none touching the bridge.
        let (_, _, links) = partition_links(
            None,
            5,
            PartitionShape::Bridge,
            &draw(2, vec![4, 0, 1, 2, 3], false, 0),
        );
        assert_eq!(links.len(), 4);
        assert!(links.iter().all(|&(a, b)| a != 4 && b != 4));
    }

    #[test]
    fn process_faults_take_one_member_or_a_minority_of_five() {
        assert_eq!(
            process_targets(Some(2), 3, &draw(0, vec![0, 1, 2], true, 0)),
            vec![2]
        );
        assert_eq!(
            process_targets(Some(2), 3, &draw(0, vec![0, 1, 2], false, 1)),
            vec![1]
        );
        assert_eq!(
            process_targets(Some(0), 5, &draw(0, vec![4, 1, 0, 2, 3], false, 0)),
            vec![1, 4]
        );
        assert_eq!(
            process_targets(None, 5, &draw(1, vec![4, 1, 0, 2, 3], false, 3)),
            vec![3]
        );
    }
}
