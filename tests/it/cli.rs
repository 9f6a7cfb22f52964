//! The `mnemo` command line: etcd's flag names, `MNEMO_*` environment variables in place of
//! `ETCD_*`, and a clear message with a non-zero exit for anything it cannot use.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mnemo::pb::etcdserverpb::MemberListRequest;
use mnemo::pb::etcdserverpb::cluster_client::ClusterClient;

use crate::support::{EXIT_TIMEOUT, free_port, poll_until};

/// How long a refused start may take before the test calls it a hang.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(20);

/// This build's binary: these checks are about mnemo's own command line, whatever server the
/// rest of the suite is pointed at.
fn server_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_mnemo"))
}

/// Runs the binary with `args` (and `envs`) in a fresh directory and waits for it to exit.
fn refused_start(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(server_binary());
    command
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    let child = command.spawn().expect("spawn mnemo");
    let pid = child.id();
    // Wait for the exit itself on another thread, so the deadline does not need polling.
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait_with_output());
    });
    match exit.recv_timeout(REFUSAL_DEADLINE) {
        Ok(output) => output.expect("collect output"),
        Err(_) => {
            // Only this test's own child, by the pid it was given.
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("mnemo {args:?} kept running; it should have refused to start");
        }
    }
}

/// Kills the child it holds when dropped, so a failing test leaves no process behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unknown_flag_is_refused_with_a_message() {
    let output = refused_start(&["--no-such-flag"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--no-such-flag"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn malformed_url_is_refused_naming_the_flag() {
    let output = refused_start(&["--listen-client-urls", "127.0.0.1:2379"], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--listen-client-urls"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn election_timeout_below_five_heartbeats_is_refused_as_etcd_words_it() {
    let output = refused_start(
        &["--heartbeat-interval", "100", "--election-timeout", "300"],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "--election-timeout[300] should be at least as 5 times as --heartbeat-interval[100]"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_auto_compaction_flags_are_refused_naming_the_flag() {
    let output = refused_start(&["--auto-compaction-mode", "hourly"], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown auto-compaction-mode \"hourly\""),
        "{}",
        stderr(&output)
    );
    let output = refused_start(
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("invalid auto-compaction-retention \"1h\" for mode revision"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_lease_checkpoint_interval_under_a_second_is_refused_naming_the_flag() {
    let output = refused_start(
        &[
            "--experimental-enable-lease-checkpoint",
            "--experimental-lease-checkpoint-interval",
            "200ms",
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(
            "--experimental-lease-checkpoint-interval must be at least 1000 ms, got 200 ms"
        ),
        "{}",
        stderr(&output)
    );
}

/// An unknown token kind, JWT options that cannot be loaded, and a bcrypt cost bcrypt does
/// not accept stop the start with a message naming the flag.
#[test]
fn unsupported_auth_settings_are_refused_naming_the_flag() {
    for (flag, expected) in [
        ("paseto", "--auth-token \"paseto\" is not supported"),
        (
            "jwt,pub-key=/nonexistent/k.pub",
            "--auth-token: auth: reading /nonexistent/k.pub",
        ),
        (
            "jwt,sign-method=RS256",
            "--auth-token: auth: missing key data",
        ),
    ] {
        let output = refused_start(&["--auth-token", flag], &[]);
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains(expected),
            "{flag}: {}",
            stderr(&output)
        );
    }
    let output = refused_start(&["--bcrypt-cost", "3"], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--bcrypt-cost 3 is out of range"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn environment_variable_values_are_checked_too() {
    let output = refused_start(&[], &[("MNEMO_INITIAL_CLUSTER_STATE", "sideways")]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("sideways"), "{}", stderr(&output));
}

#[test]
fn name_missing_from_initial_cluster_is_refused() {
    let output = refused_start(
        &[
            "--name",
            "alone",
            "--initial-cluster",
            "other=http://127.0.0.1:1",
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output)
            .contains("couldn't find local name \"alone\" in the initial cluster configuration"),
        "{}",
        stderr(&output)
    );
}

/// Every setting also comes from `MNEMO_<FLAG>`: a member configured only through the
/// environment uses its name, data dir and URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_mnemo_environment_variables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let data_dir = dir.path().join("from-env.data");
    let child = Command::new(server_binary())
        .current_dir(dir.path())
        .env("MNEMO_NAME", "from-env")
        .env("MNEMO_DATA_DIR", &data_dir)
        .env("MNEMO_LISTEN_CLIENT_URLS", &client_url)
        .env("MNEMO_ADVERTISE_CLIENT_URLS", &client_url)
        .env("MNEMO_LISTEN_PEER_URLS", &peer_url)
        .env("MNEMO_INITIAL_ADVERTISE_PEER_URLS", &peer_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mnemo");
    let _child = KillOnDrop(child);
    // Readiness has no event to wait on from outside: poll the member list until it answers.
    let members = poll_until(
        "member configured from the environment",
        EXIT_TIMEOUT,
        || {
            let client_url = client_url.clone();
            async move {
                let mut cluster = ClusterClient::connect(client_url).await.ok()?;
                let response = cluster
                    .member_list(MemberListRequest::default())
                    .await
                    .ok()?;
                Some(response.into_inner().members)
            }
        },
    )
    .await;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "from-env");
    assert_eq!(members[0].peer_ur_ls, vec![peer_url]);
    assert_eq!(members[0].client_ur_ls, vec![client_url]);
    assert!(
        data_dir.join("member").join("wal").is_dir(),
        "data dir from MNEMO_DATA_DIR was not used"
    );
}
