//! A long-running etcdctl (`watch`, `lease keep-alive`, ...) started by a test, its standard
//! output collected by a reader thread so the test can wait for what it prints.

use std::io::{Read as _, Write as _};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Member, etcdctl_command};

/// How long a test waits for etcdctl to print what it expects, or to exit.
pub const OUTPUT_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two looks at etcdctl's output.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running etcdctl; killed (it is a process the test started) when dropped.
pub struct EtcdctlChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl EtcdctlChild {
    /// Starts `etcdctl <args>` against `member`, with a pipe to its standard input.
    pub fn start(member: &Member, args: &[&str]) -> EtcdctlChild {
        let mut child = etcdctl_command(&member.endpoint(), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn etcdctl {args:?}: {err}"));
        let stdin = child.stdin.take();
        let mut pipe = child.stdout.take().expect("etcdctl stdout pipe");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stdout);
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends when etcdctl exits and the pipe closes.
            while let Ok(read) = pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock()
                    .expect("stdout buffer")
                    .extend_from_slice(&buffer[..read]);
            }
        });
        EtcdctlChild {
            child,
            stdin,
            stdout,
            reader: Some(reader),
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout buffer")).into_owned()
    }

    /// Writes one line to etcdctl's standard input (interactive mode).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("etcdctl stdin");
        writeln!(stdin, "{line}").expect("write to etcdctl");
        stdin.flush().expect("flush etcdctl stdin");
    }

    /// Waits until the output is at least `bytes` long; false when it is not within `timeout`.
    /// Panics if etcdctl exits.
    pub async fn wait_for_len(&mut self, bytes: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().len() >= bytes {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcdctl exited with {status}; printed:\n{}", self.output());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until `bytes` bytes in all have been printed, failing loudly otherwise.
    pub async fn expect_len(&mut self, bytes: usize) {
        if !self.wait_for_len(bytes, OUTPUT_TIMEOUT).await {
            panic!(
                "etcdctl printed {} of {bytes} expected bytes within {OUTPUT_TIMEOUT:?}:\n{}",
                self.output().len(),
                self.output()
            );
        }
    }

    /// Waits until `line` has been printed `count` times; panics otherwise.
    pub async fn wait_for_lines(&self, line: &str, count: usize) {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        while self
            .output()
            .lines()
            .filter(|printed| *printed == line)
            .count()
            < count
        {
            assert!(
                Instant::now() < deadline,
                "{count} × {line:?} not printed within {OUTPUT_TIMEOUT:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for etcdctl to exit by itself and returns whether it succeeded and what it
    /// printed; panics if it still runs after [`OUTPUT_TIMEOUT`].
    pub async fn wait_exit(mut self) -> (bool, String) {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on etcdctl") {
                self.join_reader();
                return (status.success(), self.output());
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl still ran after {OUTPUT_TIMEOUT:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Kills etcdctl and returns everything it printed.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
        self.output()
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader");
        }
    }
}

impl Drop for EtcdctlChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
