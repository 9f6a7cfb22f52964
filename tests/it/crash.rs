//! Durability: a put that was acknowledged is never lost, even when the member is killed with
//! SIGKILL in the middle of a write load.
//!
//! Method: 16 writers put distinct keys with unique values and record every acknowledged put
//! (key, value, header revision). After about 2 s of load (or 20,000 puts) the member gets
//! `kill -9` while writers are still sending. It restarts on the same data directory, and every
//! acknowledged put must be there with its exact value and with mod_revision equal to the
//! acknowledged revision. A put after the restart must get a revision above all earlier ones.
//! Puts in flight at the kill have an unknown outcome and are not checked.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::{PutRequest, RangeRequest};

use crate::support::{Member, header_revision, poll_until, put, range};

const WRITERS: usize = 16;
const LOAD_DURATION: Duration = Duration::from_secs(2);
const PUTS_MAX: u64 = 20_000;
/// Acknowledged puts required before the kill, so the check has something to check.
const ACKS_MIN: u64 = 50;

struct Ack {
    key: String,
    value: String,
    revision: i64,
}

struct WriterReport {
    acks: Vec<Ack>,
    /// Errors seen before the kill was ordered; a healthy member returns none.
    errors_before_kill: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_kill_9_mid_load() {
    let mut member = Member::start().await;
    let issued = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let killing = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::with_capacity(WRITERS);
    for writer in 0..WRITERS {
        let mut kv = member.kv().await;
        let (issued, acked, killing) = (
            Arc::clone(&issued),
            Arc::clone(&acked),
            Arc::clone(&killing),
        );
        writers.push(tokio::spawn(async move {
            let mut report = WriterReport {
                acks: Vec::new(),
                errors_before_kill: Vec::new(),
            };
            // Bounded by PUTS_MAX across all writers; each call is bounded by the RPC timeout.
            for sequence in 0..PUTS_MAX {
                let number = issued.fetch_add(1, Ordering::SeqCst);
                if number >= PUTS_MAX {
                    break;
                }
                let key = format!("crash/{writer:02}/{sequence:06}");
                let value = format!(
                    "w{writer}-s{sequence}-n{number}-{}",
                    "#".repeat((number % 41) as usize)
                );
                let request = PutRequest {
                    key: key.clone().into_bytes().into(),
                    value: value.clone().into_bytes().into(),
                    ..Default::default()
                };
                match kv.put(request).await {
                    Ok(response) => {
                        let revision = header_revision(&response.into_inner());
                        report.acks.push(Ack {
                            key,
                            value,
                            revision,
                        });
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => {
                        if !killing.load(Ordering::SeqCst) {
                            report.errors_before_kill.push(format!("{key}: {status:?}"));
                        }
                        break;
                    }
                }
            }
            report
        }));
    }

    let load_started = Instant::now();
    poll_until(
        "the write load to run its course",
        Duration::from_secs(60),
        || {
            let (issued, acked) = (issued.load(Ordering::SeqCst), acked.load(Ordering::SeqCst));
            let done = issued >= PUTS_MAX
                || (load_started.elapsed() >= LOAD_DURATION && acked >= ACKS_MIN);
            async move { done.then_some(()) }
        },
    )
    .await;
    killing.store(true, Ordering::SeqCst);
    member.kill9();
    let issued_at_kill = issued.load(Ordering::SeqCst);

    let mut acks = Vec::new();
    let mut errors_before_kill = Vec::new();
    for writer in writers {
        let report = tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("writers stop once the member is gone")
            .expect("writer task panicked");
        acks.extend(report.acks);
        errors_before_kill.extend(report.errors_before_kill);
    }
    assert!(
        errors_before_kill.is_empty(),
        "puts failed before the kill: {errors_before_kill:#?}"
    );
    assert!(
        acks.len() as u64 >= ACKS_MIN,
        "only {} acknowledged puts",
        acks.len()
    );
    eprintln!(
        "crash: {} puts acknowledged of {} issued before kill -9",
        acks.len(),
        issued_at_kill.min(PUTS_MAX)
    );

    let revisions: HashSet<i64> = acks.iter().map(|ack| ack.revision).collect();
    assert_eq!(
        revisions.len(),
        acks.len(),
        "every acknowledged put got its own revision"
    );
    let highest_acked = acks
        .iter()
        .map(|ack| ack.revision)
        .max()
        .expect("at least one ack");

    member.restart().await;
    let mut kv = member.kv().await;
    let stored = range(
        &mut kv,
        RangeRequest {
            key: b"crash/".to_vec().into(),
            range_end: b"crash0".to_vec().into(),
            ..Default::default()
        },
    )
    .await;
    let after_restart = header_revision(&stored);
    assert!(
        after_restart >= highest_acked,
        "revision went back: {after_restart} < acknowledged {highest_acked}"
    );
    let by_key: BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64)> = stored
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.to_vec(),
                (
                    kv.value.to_vec(),
                    kv.mod_revision,
                    kv.create_revision,
                    kv.version,
                ),
            )
        })
        .collect();
    let mut lost = Vec::new();
    for ack in &acks {
        match by_key.get(ack.key.as_bytes()) {
            None => lost.push(format!("{} (rev {}) is missing", ack.key, ack.revision)),
            Some((value, mod_revision, create_revision, version)) => {
                if value != ack.value.as_bytes()
                    || *mod_revision != ack.revision
                    || *create_revision != ack.revision
                    || *version != 1
                {
                    lost.push(format!(
                        "{}: acknowledged {:?} at rev {}, stored {:?} mod {mod_revision} create {create_revision} version {version}",
                        ack.key,
                        ack.value,
                        ack.revision,
                        String::from_utf8_lossy(value)
                    ));
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged puts are wrong after kill -9; first ones: {:#?}",
        lost.len(),
        acks.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(by_key.len() >= acks.len());
    assert!(
        by_key.len() as u64 <= issued_at_kill.min(PUTS_MAX),
        "more keys than puts ever sent"
    );

    let next = put(&mut kv, "crash-after-restart", "v").await;
    let next_revision = header_revision(&next);
    assert!(
        next_revision > highest_acked && next_revision > after_restart,
        "a new put got revision {next_revision}, not above {highest_acked} / {after_restart}"
    );
}
