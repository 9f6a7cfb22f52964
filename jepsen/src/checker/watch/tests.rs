//! Hand-made histories: valid ones (resumes, a rewind, filters, a compaction cancel) that must
//! pass, and one minimal anomaly per guarantee that must be flagged as exactly that guarantee.
//!
//! Every history shares one truth, seen by a collector from revision 1:
//! ```text
//! r2 put a=v1            r5 delete b
//! r3 put b=v2, c=v3      r6 put b=v5 (a new life of b)
//! r4 put a=v4            r7 put c=v6
//! ```

use super::*;

const PREFIX: &str = "w/";
const COLLECTOR: u64 = 100;
const WATCHER: u64 = 1;

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn prev(value: &str, create_revision: Revision, mod_revision: Revision, version: i64) -> PrevKv {
    PrevKv {
        value: value.to_owned(),
        create_revision,
        mod_revision,
        version,
    }
}

fn put(
    name: &str,
    value: &str,
    revision: Revision,
    create_revision: Revision,
    version: i64,
    prev_kv: Option<PrevKv>,
) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        key: key(name),
        value: value.to_owned(),
        create_revision,
        mod_revision: revision,
        version,
        prev_kv,
    }
}

fn delete(name: &str, revision: Revision, prev_kv: Option<PrevKv>) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        key: key(name),
        value: String::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        prev_kv,
    }
}

/// The truth's events, one inner vector per revision (2 to 7).
fn revisions() -> Vec<Vec<WatchEvent>> {
    vec![
        vec![put("a", "v1", 2, 2, 1, None)],
        vec![put("b", "v2", 3, 3, 1, None), put("c", "v3", 3, 3, 1, None)],
        vec![put("a", "v4", 4, 2, 2, Some(prev("v1", 2, 2, 1)))],
        vec![delete("b", 5, Some(prev("v2", 3, 3, 1)))],
        vec![put("b", "v5", 6, 6, 1, None)],
        vec![put("c", "v6", 7, 3, 2, Some(prev("v3", 3, 3, 1)))],
    ]
}

/// The events of revision `revision`.
fn at(revision: Revision) -> Vec<WatchEvent> {
    revisions()[usize::try_from(revision - 2).expect("revision at least 2")].clone()
}

fn writes() -> Vec<Write> {
    let ok_put = |name: &str, value: &str, revision| Write {
        input: WriteInput::Put {
            key: key(name),
            value: value.to_owned(),
        },
        outcome: WriteOutcome::Ok(WriteOutput::Put { revision }),
    };
    vec![
        ok_put("a", "v1", 2),
        Write {
            input: WriteInput::Txn {
                ops: vec![
                    TxnOp::Put {
                        key: key("b"),
                        value: "v2".to_owned(),
                    },
                    TxnOp::Put {
                        key: key("c"),
                        value: "v3".to_owned(),
                    },
                ],
            },
            outcome: WriteOutcome::Ok(WriteOutput::Txn { revision: 3 }),
        },
        ok_put("a", "v4", 4),
        Write {
            input: WriteInput::Delete { key: key("b") },
            outcome: WriteOutcome::Ok(WriteOutput::Delete {
                revision: 5,
                deleted: 1,
            }),
        },
        ok_put("b", "v5", 6),
        // Its outcome is unknown: it may be the put at 7, and is.
        Write {
            input: WriteInput::Put {
                key: key("c"),
                value: "v6".to_owned(),
            },
            outcome: WriteOutcome::Unknown,
        },
        Write {
            input: WriteInput::Put {
                key: key("d"),
                value: "v7".to_owned(),
            },
            outcome: WriteOutcome::Fail,
        },
    ]
}

/// A `watch.jsonl` being written by hand.
#[derive(Default)]
struct Log {
    lines: Vec<WatchLine>,
}

impl Log {
    /// A collector's single segment from revision 1 that saw everything, then a progress
    /// notification at 7.
    fn with_collector() -> Log {
        let mut log = Log::default();
        log.segment(COLLECTOR, 0, 1, false);
        for revision in 2..=7 {
            log.events(COLLECTOR, 0, at(revision));
        }
        log.progress(COLLECTOR, 0, 7);
        log
    }

    fn segment(&mut self, watcher: u64, segment: u64, start: Revision, resume: bool) {
        self.segment_filtered(watcher, segment, start, resume, (false, false));
    }

    fn segment_filtered(
        &mut self,
        watcher: u64,
        segment: u64,
        start: Revision,
        resume: bool,
        (no_put, no_delete): (bool, bool),
    ) {
        self.lines.push(WatchLine::Segment(SegmentStart {
            watcher,
            segment,
            collector: watcher == COLLECTOR || watcher == COLLECTOR + 1,
            member: 0,
            time: 0,
            prefix: PREFIX.to_owned(),
            start_revision: start,
            resume,
            no_put,
            no_delete,
            prev_kv: true,
        }));
        self.response(watcher, segment, 1, Vec::new(), |line| line.created = true);
    }

    fn response(
        &mut self,
        watcher: u64,
        segment: u64,
        header_revision: Revision,
        events: Vec<WatchEvent>,
        adjust: impl FnOnce(&mut ResponseLine),
    ) {
        let mut line = ResponseLine {
            watcher,
            segment,
            member: 0,
            time: 0,
            header_revision,
            watch_id: 0,
            created: false,
            canceled: false,
            compact_revision: 0,
            cancel_reason: String::new(),
            fragment: false,
            progress: false,
            events,
        };
        adjust(&mut line);
        line.progress = line.is_progress();
        self.lines.push(WatchLine::Response(line));
    }

    fn events(&mut self, watcher: u64, segment: u64, events: Vec<WatchEvent>) {
        let header = events.iter().map(|e| e.mod_revision).max().unwrap_or(1);
        self.response(watcher, segment, header, events, |_| {});
    }

    fn progress(&mut self, watcher: u64, segment: u64, revision: Revision) {
        self.response(watcher, segment, revision, Vec::new(), |_| {});
    }

    /// The watcher saw every revision in `revisions`, one response each.
    fn revisions(
        &mut self,
        watcher: u64,
        segment: u64,
        revisions: impl IntoIterator<Item = Revision>,
    ) {
        for revision in revisions {
            self.events(watcher, segment, at(revision));
        }
    }

    fn check(&self) -> WatchCheck {
        check(&writes(), &self.lines)
    }
}

/// Asserts the check found violations of `guarantee` and of nothing else.
fn assert_only(found: &WatchCheck, guarantee: Guarantee) {
    assert_eq!(
        found.broken(),
        vec![guarantee],
        "violations: {:#?}",
        found.violations
    );
    let result = found.to_check_result(0.0);
    assert_eq!(result.validity, Validity::Invalid);
    assert!(result.details["explanation"].is_string());
    assert!(result.details["violations"][guarantee.name()].as_u64() > Some(0));
}

fn assert_valid(found: &WatchCheck) {
    assert!(
        found.violations.is_empty(),
        "violations: {:#?}",
        found.violations
    );
    assert_eq!(found.to_check_result(0.0).validity, Validity::Valid);
}

#[test]
fn a_watcher_that_saw_everything_is_valid() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=7);
    let found = log.check();
    assert_valid(&found);
    assert_eq!(found.stats.truth_covered, vec![(1, 7)]);
    assert_eq!(found.stats.writes_checked, 5);
    assert_eq!(found.stats.collectors, 1);
    assert_eq!(found.stats.watchers, 1);
}

#[test]
fn resumes_rewinds_and_progress_notifications_are_valid() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=3);
    log.progress(WATCHER, 0, 3);
    // Resumed from the notification, on another member, then dropped after revision 5.
    log.segment(WATCHER, 1, 4, true);
    log.revisions(WATCHER, 1, 4..=5);
    // A rewind to revision 3 begins a new run, so 3 to 5 arrive again legitimately.
    log.segment(WATCHER, 2, 3, false);
    log.revisions(WATCHER, 2, 3..=7);
    log.progress(WATCHER, 2, 7);
    let found = log.check();
    assert_valid(&found);
    assert_eq!(found.stats.resumes, 1);
    assert_eq!(found.stats.rewinds, 1);
    assert_eq!(found.stats.progress_notifications, 3);
}

#[test]
fn a_compaction_cancel_and_the_resume_from_the_compact_revision_are_valid() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=3);
    // Revision 4 was compacted away before the watcher got it: the member says so and cancels.
    log.response(WATCHER, 0, 0, Vec::new(), |line| {
        line.canceled = true;
        line.compact_revision = 5;
    });
    log.segment(WATCHER, 1, 5, true);
    log.revisions(WATCHER, 1, 5..=7);
    let found = log.check();
    assert_valid(&found);
    assert_eq!(found.stats.compactions, 1);
}

#[test]
fn a_truth_that_starts_at_a_compaction_checks_what_it_can() {
    let mut log = Log::default();
    // The collector asked for revision 1, learned that history below 4 was compacted, and
    // resumed at 4.
    log.segment(COLLECTOR, 0, 1, false);
    log.response(COLLECTOR, 0, 0, Vec::new(), |line| {
        line.canceled = true;
        line.compact_revision = 4;
    });
    log.segment(COLLECTOR, 1, 4, true);
    log.revisions(COLLECTOR, 1, 4..=7);
    log.progress(COLLECTOR, 1, 7);
    log.segment(WATCHER, 0, 4, false);
    log.revisions(WATCHER, 0, 4..=7);
    let found = log.check();
    assert_valid(&found);
    // The compact revision itself is not vouched for (see the next test).
    assert_eq!(found.stats.truth_covered, vec![(5, 7)]);
    assert_eq!(found.stats.writes_checked, 2);
    assert_eq!(found.stats.writes_unchecked, 3);
}

#[test]
fn a_delete_at_the_compact_revision_missing_from_a_watch_started_there_is_valid() {
    let mut log = Log::default();
    // Compaction at 5, the revision of b's delete: a watch from 5 may not get that delete (etcd
    // drops a tombstone made exactly at the compact revision), while a watcher that was already
    // past it had it.
    log.segment(COLLECTOR, 0, 1, false);
    log.response(COLLECTOR, 0, 0, Vec::new(), |line| {
        line.canceled = true;
        line.compact_revision = 5;
    });
    log.segment(COLLECTOR, 1, 5, true);
    log.revisions(COLLECTOR, 1, 6..=7);
    log.progress(COLLECTOR, 1, 7);
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=7);
    let found = log.check();
    assert_valid(&found);
    assert_eq!(found.stats.truth_covered, vec![(6, 7)]);
}

#[test]
fn filtered_watchers_see_only_their_kind() {
    let mut log = Log::with_collector();
    log.segment_filtered(WATCHER, 0, 1, false, (true, false));
    log.revisions(WATCHER, 0, [5]);
    log.progress(WATCHER, 0, 7);
    log.segment_filtered(WATCHER + 1, 0, 1, false, (false, true));
    log.revisions(WATCHER + 1, 0, [2, 3, 4, 6, 7]);
    assert_valid(&log.check());
}

#[test]
fn fragments_are_joined_before_atomicity_is_judged() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=2);
    let mut three = at(3);
    let second = three.pop().expect("two events");
    log.response(WATCHER, 0, 3, three, |line| line.fragment = true);
    log.events(WATCHER, 0, vec![second]);
    log.revisions(WATCHER, 0, 4..=7);
    assert_valid(&log.check());
}

#[test]
fn ordered_flags_a_revision_going_back() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, [2, 4, 3, 5, 6, 7]);
    assert_only(&log.check(), Guarantee::Ordered);
}

#[test]
fn unique_flags_an_event_delivered_twice() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, [2, 3, 4, 4, 5, 6, 7]);
    assert_only(&log.check(), Guarantee::Unique);
}

#[test]
fn unique_flags_a_resume_that_repeats_the_last_revision() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=4);
    // An inclusive resume: it asked for 4, which the previous segment already had, so the
    // repeat is a duplicate along the run.
    log.segment(WATCHER, 1, 4, true);
    log.revisions(WATCHER, 1, 4..=7);
    assert_only(&log.check(), Guarantee::Unique);
}

#[test]
fn atomic_flags_a_revision_split_over_two_responses() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, [2]);
    let mut three = at(3);
    let second = three.pop().expect("two events");
    log.events(WATCHER, 0, three);
    log.events(WATCHER, 0, vec![second]);
    log.revisions(WATCHER, 0, 4..=7);
    assert_only(&log.check(), Guarantee::Atomic);
}

#[test]
fn bookmarkable_flags_an_event_behind_a_progress_notification() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=4);
    log.progress(WATCHER, 0, 5);
    log.revisions(WATCHER, 0, 5..=7);
    assert_only(&log.check(), Guarantee::Bookmarkable);
}

#[test]
fn reliable_flags_a_gap() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, [2, 3, 4, 6, 7]);
    assert_only(&log.check(), Guarantee::Reliable);
}

#[test]
fn reliable_flags_a_gap_vouched_for_by_a_progress_notification() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=5);
    log.progress(WATCHER, 0, 7);
    assert_only(&log.check(), Guarantee::Reliable);
}

#[test]
fn resumable_flags_a_resume_that_skips_its_first_event() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=3);
    // Asked for 4 onwards, as the injected watch-skip-on-resume bug does it: 4 never comes.
    log.segment(WATCHER, 1, 4, true);
    log.revisions(WATCHER, 1, 5..=7);
    assert_only(&log.check(), Guarantee::Resumable);
}

#[test]
fn resumable_flags_a_segment_that_starts_before_its_start_revision() {
    let mut log = Log::with_collector();
    // A rewind (a new run), so only the start is wrong.
    log.segment(WATCHER, 0, 4, false);
    log.revisions(WATCHER, 0, 3..=7);
    assert_only(&log.check(), Guarantee::Resumable);
}

#[test]
fn prev_kv_flags_a_wrong_previous_version() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=3);
    // The bug of taking prev_kv from the current value.
    log.events(
        WATCHER,
        0,
        vec![put("a", "v4", 4, 2, 2, Some(prev("v4", 2, 4, 2)))],
    );
    log.revisions(WATCHER, 0, 5..=7);
    assert_only(&log.check(), Guarantee::PrevKv);
}

#[test]
fn prev_kv_flags_one_sent_for_a_created_key() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=5);
    // b was deleted at 5: its new life at 6 has no previous version.
    log.events(
        WATCHER,
        0,
        vec![put("b", "v5", 6, 6, 1, Some(prev("v2", 3, 3, 1)))],
    );
    log.revisions(WATCHER, 0, [7]);
    assert_only(&log.check(), Guarantee::PrevKv);
}

#[test]
fn filter_flags_a_put_sent_to_a_noput_watcher() {
    let mut log = Log::with_collector();
    log.segment_filtered(WATCHER, 0, 1, false, (true, false));
    log.revisions(WATCHER, 0, [4, 5]);
    log.progress(WATCHER, 0, 7);
    assert_only(&log.check(), Guarantee::Filter);
}

#[test]
fn same_history_flags_a_value_other_than_the_collectors_saw() {
    let mut log = Log::with_collector();
    log.segment(WATCHER, 0, 1, false);
    log.revisions(WATCHER, 0, 2..=3);
    log.events(
        WATCHER,
        0,
        vec![put("a", "v9", 4, 2, 2, Some(prev("v1", 2, 2, 1)))],
    );
    log.revisions(WATCHER, 0, 5..=7);
    assert_only(&log.check(), Guarantee::SameHistory);
}

#[test]
fn same_history_flags_collectors_that_disagree() {
    let mut log = Log::with_collector();
    log.segment(COLLECTOR + 1, 0, 1, false);
    log.revisions(COLLECTOR + 1, 0, 2..=3);
    log.events(
        COLLECTOR + 1,
        0,
        vec![put("a", "v9", 4, 2, 2, Some(prev("v1", 2, 2, 1)))],
    );
    log.revisions(COLLECTOR + 1, 0, 5..=7);
    assert_only(&log.check(), Guarantee::SameHistory);
}

#[test]
fn is_create_flags_a_new_life_that_keeps_the_old_create_revision() {
    let mut log = Log::default();
    log.segment(COLLECTOR, 0, 1, false);
    log.revisions(COLLECTOR, 0, 2..=5);
    // b was deleted at 5, so its put at 6 is a creation: create revision 6, version 1.
    log.events(COLLECTOR, 0, vec![put("b", "v5", 6, 3, 2, None)]);
    log.revisions(COLLECTOR, 0, [7]);
    log.progress(COLLECTOR, 0, 7);
    assert_only(&log.check(), Guarantee::IsCreate);
}

#[test]
fn writes_flags_an_acknowledged_write_missing_at_its_revision() {
    let log = Log::with_collector();
    let mut writes = writes();
    writes.push(Write {
        input: WriteInput::Put {
            key: key("e"),
            value: "v8".to_owned(),
        },
        outcome: WriteOutcome::Ok(WriteOutput::Put { revision: 7 }),
    });
    assert_only(&check(&writes, &log.lines), Guarantee::Writes);
}

#[test]
fn writes_flags_an_event_of_a_failed_write() {
    let log = Log::with_collector();
    let mut writes = writes();
    // The put at 7 (c=v6) said it failed.
    writes[5].outcome = WriteOutcome::Fail;
    assert_only(&check(&writes, &log.lines), Guarantee::Writes);
}

#[test]
fn lines_and_writes_round_trip_through_their_files() {
    let log = Log::with_collector();
    let mut text = String::new();
    for line in &log.lines {
        text.push_str(&serde_json::to_string(line).expect("serialize"));
        text.push('\n');
    }
    assert!(text.contains(r#""kind":"segment""#), "{text}");
    assert!(text.contains(r#""type":"put""#), "{text}");
    let parsed = parse_watch_log(text.as_bytes()).expect("parse");
    assert_eq!(parsed, log.lines);

    let history = concat!(
        r#"{"format":"mnemo-history","version":1,"model":"watch"}"#,
        "\n",
        r#"{"type":"invoke","process":0,"time":1,"input":{"f":"put","key":"w/a","value":"v1"}}"#,
        "\n",
        r#"{"type":"nemesis","time":2,"f":"start-kill","value":{}}"#,
        "\n",
        r#"{"type":"invoke","process":1,"time":3,"input":{"f":"txn","ops":[{"op":"put","key":"w/b","value":"v2"},{"op":"delete","key":"w/c"}]}}"#,
        "\n",
        r#"{"type":"ok","process":0,"time":4,"output":{"f":"put","revision":2}}"#,
        "\n",
        r#"{"type":"invoke","process":2,"time":5,"input":{"f":"delete","key":"w/a"}}"#,
        "\n",
        r#"{"type":"fail","process":2,"time":6}"#,
        "\n",
        r#"{"type":"invoke","process":9,"time":7,"input":{"f":"compact","revision":2}}"#,
        "\n",
        r#"{"type":"ok","process":9,"time":8,"output":{"f":"compact","revision":3}}"#,
        "\n",
    );
    let writes = parse_writes(history.as_bytes()).expect("parse");
    assert_eq!(writes.len(), 4);
    assert_eq!(
        writes[2].outcome,
        WriteOutcome::Ok(WriteOutput::Compact { revision: 3 })
    );
    assert_eq!(
        writes[0].outcome,
        WriteOutcome::Ok(WriteOutput::Put { revision: 2 })
    );
    assert_eq!(writes[1].outcome, WriteOutcome::Fail);
    assert!(matches!(writes[3].input, WriteInput::Txn { .. }));
    assert_eq!(writes[3].outcome, WriteOutcome::Unknown);
}
