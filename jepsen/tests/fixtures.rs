//! The checker against labelled histories from porcupine's test data, read from the shared
//! fixtures folder beside the repository (never copied into it).
//!
//! Every Jepsen etcd log must get the verdict `LABELS` gives it, every kv file the one its
//! `-ok`/`-bad` name says, each within `FILE_SECONDS_MAX`. A missing fixtures folder fails the
//! test: a checker test that silently checks nothing proves nothing.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mnemo_jepsen::checker::linearizable::{CheckOptions, Verdict, check};
use mnemo_jepsen::history::{edn_kv, jepsen_etcd};
use mnemo_jepsen::model::kv::KvModel;
use mnemo_jepsen::model::register::RegisterModel;

/// Wall time allowed per fixture file (the whole check, parsing included).
const FILE_SECONDS_MAX: Duration = Duration::from_secs(10);

/// How many Jepsen etcd logs the fixture set has; guards against a truncated copy.
const JEPSEN_ETCD_LOG_COUNT: usize = 80;

fn fixtures_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/linearizability");
    assert!(
        dir.is_dir(),
        "linearizability fixtures not found: looked in {} (expected shared/ beside the repository \
         clone, holding fixtures/linearizability/{{jepsen-etcd,kv}})",
        dir.display()
    );
    dir
}

fn open(path: &Path) -> BufReader<File> {
    BufReader::new(File::open(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())))
}

/// Whether a verdict matches the expected label; `Unknown` matches nothing.
fn matches_label(verdict: &Verdict, linearizable: bool) -> bool {
    match verdict {
        Verdict::Linearizable => linearizable,
        Verdict::NotLinearizable { .. } => !linearizable,
        Verdict::Unknown { .. } => false,
    }
}

/// Checks each file, then asserts every verdict and time at once so one run reports all misses.
fn check_all(files: &[(PathBuf, bool)], check_file: impl Fn(&Path) -> Verdict) {
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for (path, linearizable) in files {
        let started = Instant::now();
        let verdict = check_file(path);
        let elapsed = started.elapsed();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !matches_label(&verdict, *linearizable) {
            let expected = if *linearizable {
                "linearizable"
            } else {
                "not linearizable"
            };
            failures.push(format!("{name}: expected {expected}, got {verdict}"));
        }
        if elapsed > FILE_SECONDS_MAX {
            failures.push(format!(
                "{name}: took {elapsed:?}, over {FILE_SECONDS_MAX:?}"
            ));
        }
        if elapsed >= slowest.0 {
            slowest = (elapsed, name);
        }
    }
    println!(
        "checked {} files; slowest {} in {:.2?}",
        files.len(),
        slowest.1,
        slowest.0
    );
    assert!(
        failures.is_empty(),
        "{} of {} files wrong:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn jepsen_etcd_logs_match_labels() {
    let dir = fixtures_dir().join("jepsen-etcd");
    let labels = std::fs::read_to_string(dir.join("LABELS")).expect("jepsen-etcd/LABELS");
    let mut files = Vec::new();
    for line in labels.lines().filter(|line| !line.trim().is_empty()) {
        let (name, label) = line
            .split_once(char::is_whitespace)
            .expect("`NAME LABEL` lines");
        let linearizable = match label.trim() {
            "linearizable" => true,
            "not-linearizable" => false,
            other => panic!("unknown label {other:?} for {name}"),
        };
        files.push((dir.join(name), linearizable));
    }
    // Every log on disk must be labelled, so none is silently skipped.
    let mut logs: Vec<String> = std::fs::read_dir(&dir)
        .expect("jepsen-etcd dir")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| Path::new(name).extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    let mut labelled: Vec<String> = files
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    labelled.sort();
    assert_eq!(logs, labelled, "LABELS and the .log files disagree");
    assert_eq!(logs.len(), JEPSEN_ETCD_LOG_COUNT);

    check_all(&files, |path| {
        let history = jepsen_etcd::parse(open(path))
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        check(&RegisterModel, &history, &CheckOptions::default())
    });
}

#[test]
fn kv_files_match_their_names() {
    let dir = fixtures_dir().join("kv");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("kv dir") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let linearizable = if name.ends_with("-ok.txt") {
            true
        } else if name.ends_with("-bad.txt") {
            false
        } else {
            continue;
        };
        files.push((path, linearizable));
    }
    files.sort();
    assert!(
        files.iter().any(|(_, ok)| *ok) && files.iter().any(|(_, ok)| !*ok),
        "need both kinds: {files:?}"
    );

    check_all(&files, |path| {
        let history =
            edn_kv::parse(open(path)).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        check(&KvModel, &history, &CheckOptions::default())
    });
}
