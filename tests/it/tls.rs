//! TLS on the client and peer ports, with etcd's flags (`--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth` and their `--peer-*` twins).
//!
//! Each test makes a throwaway PKI with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate (common name `alice`), and a certificate from a second CA
//! that nobody trusts. Members are started directly (the shared harness speaks plain HTTP);
//! etcdctl, curl and mnemo's own gRPC client talk to them. Every etcdctl and curl check also
//! holds against etcd: `MNEMO_IT_SERVER=/usr/bin/etcd cargo test --test it tls`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnemo::client::{GrpcClient, KvClient as _};
use mnemo::tls::ClientTls;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{
    EXIT_TIMEOUT, HTTP_TIMEOUT, READY_TIMEOUT, etcdctl_command, free_port, ok_stdout, poll_until,
    server_binary, stderr_of, stdout_of, testing_mnemo,
};

/// How long a refused etcdctl command may try: long enough for a handshake on a loaded
/// machine, short enough that three refusals do not dominate the test.
const REFUSED_COMMAND_TIMEOUT: &str = "--command-timeout=3s";
/// How long a member that cannot join may take to give up and exit.
const JOIN_GIVE_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A throwaway PKI in a temporary directory.
struct Pki {
    dir: TempDir,
}

/// Parameters of a leaf certificate for `common_name`, valid for 127.0.0.1 and localhost,
/// usable as a server and as a client certificate (peers are both).
fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("leaf parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
}

fn new_ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

impl Pki {
    /// Writes `ca.pem`, `server.pem`/`server-key.pem`, `client.pem`/`client-key.pem` (CN
    /// alice) from the trusted CA, and `rogue.pem`/`rogue-key.pem` (CN mallory) from another
    /// CA (`other-ca.pem`).
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mnemo-it-tls-")
            .tempdir()
            .expect("temp dir");
        let pki = Pki { dir };
        let trusted = new_ca("mnemo-it-ca");
        let other = new_ca("mnemo-it-other-ca");
        pki.write("ca.pem", &trusted.pem());
        pki.write("other-ca.pem", &other.pem());
        for (name, common_name, issuer) in [
            ("server", "mnemo-server", &trusted),
            ("client", "alice", &trusted),
            ("rogue", "mallory", &other),
        ] {
            let key = KeyPair::generate().expect("leaf key");
            let cert = leaf_params(common_name)
                .signed_by(&key, issuer)
                .expect("sign leaf");
            pki.write(&format!("{name}.pem"), &cert.pem());
            pki.write(&format!("{name}-key.pem"), &key.serialize_pem());
        }
        pki
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write PEM file");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The client port flags of a member: the server certificate and, with
    /// `client_cert_auth`, the trusted CA and `--client-cert-auth` (etcd requires client
    /// certificates as soon as a trusted CA is given, so without it neither is passed).
    fn client_port_flags(&self, client_cert_auth: bool) -> Vec<String> {
        let mut flags = vec![
            format!("--cert-file={}", self.arg("server.pem")),
            format!("--key-file={}", self.arg("server-key.pem")),
        ];
        if client_cert_auth {
            flags.push(format!("--trusted-ca-file={}", self.arg("ca.pem")));
            flags.push("--client-cert-auth".to_owned());
        }
        flags
    }

    /// The peer port flags of a member presenting `cert` (`server` or `rogue`), trusting the
    /// CA and requiring peers to present a certificate it signed.
    fn peer_port_flags(&self, cert: &str) -> Vec<String> {
        vec![
            format!("--peer-cert-file={}", self.arg(&format!("{cert}.pem"))),
            format!("--peer-key-file={}", self.arg(&format!("{cert}-key.pem"))),
            format!("--peer-trusted-ca-file={}", self.arg("ca.pem")),
            "--peer-client-cert-auth".to_owned(),
        ]
    }

    /// etcdctl's TLS flags: the CA, and the certificate `cert` (`client`, `rogue`) if any.
    fn etcdctl_flags(&self, cert: Option<&str>) -> Vec<String> {
        let mut flags = vec![format!("--cacert={}", self.arg("ca.pem"))];
        if let Some(cert) = cert {
            flags.push(format!("--cert={}", self.arg(&format!("{cert}.pem"))));
            flags.push(format!("--key={}", self.arg(&format!("{cert}-key.pem"))));
        }
        flags
    }

    /// mnemo's client TLS: the CA, and the certificate `cert` if any.
    fn client_tls(&self, cert: Option<&str>) -> ClientTls {
        let cert_files = cert.map(|cert| {
            (
                self.path(&format!("{cert}.pem")),
                self.path(&format!("{cert}-key.pem")),
            )
        });
        ClientTls::from_files(
            &self.path("ca.pem"),
            cert_files
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path())),
        )
        .expect("client TLS files")
    }

    /// A rustls client for raw HTTP/1.1 over TLS, trusting the CA and presenting `cert`.
    fn rustls_client(&self, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("read CA") {
            roots.add(ca.expect("CA PEM")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let mut config = match cert {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{cert}.pem")))
                    .expect("read cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert PEM");
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{cert}-key.pem")))
                    .expect("key PEM");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// `GET path` over TLS with HTTP/1.1, returning the status code and body.
async fn https_get(
    port: u16,
    path: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let server_name = ServerName::try_from("127.0.0.1").expect("an IP server name");
        let mut stream = connector.connect(server_name, tcp).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        // A server may close without TLS close_notify; what arrived before is the answer.
        if let Err(err) = stream.read_to_end(&mut raw).await
            && raw.is_empty()
        {
            return Err(err);
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("HTTPS GET timed out")))
}

/// A member process started with TLS flags; killed (and its directory removed) on drop.
struct TlsMember {
    name: String,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl TlsMember {
    fn new(name: &str) -> TlsMember {
        let dir = tempfile::Builder::new()
            .prefix("mnemo-it-")
            .tempdir()
            .expect("temp dir");
        TlsMember {
            name: name.to_owned(),
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("member.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the member with `https://` client and peer URLs, the given cluster and state,
    /// and `flags`.
    fn spawn(&mut self, initial_cluster: &str, state: &str, flags: &[String]) {
        let log = std::fs::File::create(self.log_path()).expect("create the member log");
        let log_err = log.try_clone().expect("clone the log handle");
        let child = Command::new(server_binary())
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={}", self.peer_url()))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url()))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=it-tls")
            .args(flags)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn the server binary");
        self.child = Some(child);
    }

    /// Waits until `/health` over TLS answers 200, presenting `config`'s certificate.
    async fn wait_healthy(&mut self, config: &Arc<rustls::ClientConfig>) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        for _ in 0..=READY_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().expect("try_wait")
            {
                panic!(
                    "member {} exited with {status} before serving\n{}",
                    self.name,
                    self.log_text()
                );
            }
            match https_get(self.client_port, "/health", Arc::clone(config)).await {
                Ok((200, body)) if body.contains("true") => return,
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(err) => last = err.to_string(),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!(
            "member {} not healthy over TLS after {READY_TIMEOUT:?}: {last}\n{}",
            self.name,
            self.log_text()
        );
    }

    /// Waits up to `timeout` for the process to exit by itself.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        for _ in 0..=timeout.as_millis() / POLL_INTERVAL.as_millis() {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        None
    }

    /// Runs etcdctl against this member with `tls_flags` and `args`.
    fn etcdctl(&self, tls_flags: &[String], args: &[&str]) -> Output {
        let mut all: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        etcdctl_command(&self.endpoint(), &all)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }
}

impl Drop for TlsMember {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a single member with an `https://` client URL (and `https://` peer URL).
async fn single_member(pki: &Pki, client_cert_auth: bool) -> TlsMember {
    let mut member = TlsMember::new("tls0");
    let mut flags = pki.client_port_flags(client_cert_auth);
    flags.extend(pki.peer_port_flags("server"));
    let cluster = format!("tls0={}", member.peer_url());
    member.spawn(&cluster, "new", &flags);
    member
        .wait_healthy(&pki.rustls_client(Some("client")))
        .await;
    member
}

#[track_caller]
fn assert_refused(output: &Output, what: &str) {
    assert!(
        !output.status.success(),
        "{what}: expected a refusal, got success: {}",
        stdout_of(output)
    );
    assert_eq!(
        stdout_of(output),
        "",
        "{what}: nothing on stdout when refused"
    );
}

/// With `--client-cert-auth`, etcdctl with a certificate from the trusted CA reads and
/// writes; without a certificate, or with one from another CA, it is refused at the handshake
/// (etcd: `tls: client didn't provide a certificate`, `certificate signed by unknown
/// authority`), and the member logs the rejected connection.
#[tokio::test(flavor = "multi_thread")]
async fn client_cert_auth_admits_only_certificates_of_the_trusted_ca() {
    let pki = Pki::new();
    let member = single_member(&pki, true).await;

    let with_cert = pki.etcdctl_flags(Some("client"));
    assert_eq!(
        ok_stdout(&member.etcdctl(&with_cert, &["put", "tls-key", "tls-value"])),
        "OK\n"
    );
    assert_eq!(
        ok_stdout(&member.etcdctl(&with_cert, &["get", "tls-key"])),
        "tls-key\ntls-value\n"
    );

    let without_cert = pki.etcdctl_flags(None);
    let refused = member.etcdctl(&without_cert, &[REFUSED_COMMAND_TIMEOUT, "get", "tls-key"]);
    assert_refused(&refused, "etcdctl without a client certificate");
    assert!(
        stderr_of(&refused).contains("context deadline exceeded"),
        "{}",
        stderr_of(&refused)
    );
    let foreign = pki.etcdctl_flags(Some("rogue"));
    let refused = member.etcdctl(&foreign, &[REFUSED_COMMAND_TIMEOUT, "get", "tls-key"]);
    assert_refused(&refused, "etcdctl with a certificate from another CA");

    // Plain HTTP/1.1 over TLS on the same port: with the certificate it is served, without it
    // the handshake fails.
    let (status, body) = https_get(
        member.client_port,
        "/health",
        pki.rustls_client(Some("client")),
    )
    .await
    .expect("GET /health with a client certificate");
    assert_eq!(status, 200, "{body}");
    assert!(
        https_get(member.client_port, "/health", pki.rustls_client(None))
            .await
            .is_err(),
        "GET /health without a client certificate must fail"
    );

    let log = member.log_text();
    assert!(
        log.contains("rejected connection"),
        "the member logs refused handshakes:\n{log}"
    );
}

/// With auth on, a gRPC client that sends no token is the user its verified certificate's
/// common name names (here `alice`, a user without password); a token, when sent, names
/// the user instead.
#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_common_name_is_the_user_when_no_token_is_sent() {
    let pki = Pki::new();
    let member = single_member(&pki, true).await;
    let with_cert = pki.etcdctl_flags(Some("client"));
    let ctl = |args: &[&str]| member.etcdctl(&with_cert, args);
    for args in [
        &["user", "add", "root:root-Pw1"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice", "--no-password"],
        &["role", "add", "r"],
        &[
            "role",
            "grant-permission",
            "r",
            "readwrite",
            "--prefix",
            "a/",
        ],
        &["user", "grant-role", "alice", "r"],
        &["auth", "enable"],
    ] {
        ok_stdout(&ctl(args));
    }
    assert_eq!(ok_stdout(&ctl(&["put", "a/1", "v"])), "OK\n");
    assert_eq!(
        ok_stdout(&ctl(&["get", "a/1", "--print-value-only"])),
        "v\n"
    );
    let denied = ctl(&["put", "b/1", "v"]);
    assert_refused(&denied, "alice writing outside her prefix");
    assert!(
        stderr_of(&denied).contains("etcdserver: permission denied"),
        "{}",
        stderr_of(&denied)
    );
    assert!(
        stderr_of(&ctl(&["user", "list"])).contains("etcdserver: permission denied"),
        "alice is not root"
    );
    // A token overrides the certificate.
    assert_eq!(
        ok_stdout(&ctl(&["--user=root:root-Pw1", "put", "b/1", "v"])),
        "OK\n"
    );
}

/// mnemo's own gRPC client dials an `https://` member with the CA and its certificate, and
/// without a certificate it is refused when `--client-cert-auth` is on.
#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_client_connects_over_tls() {
    let pki = Pki::new();
    let member = single_member(&pki, true).await;
    let client =
        GrpcClient::connect_with_tls(&member.endpoint(), Some(&pki.client_tls(Some("client"))))
            .await
            .expect("connect with a client certificate");
    client.set("grpc-tls", "yes").await.expect("put over TLS");
    let read = client.get("grpc-tls").await.expect("get over TLS");
    assert_eq!(read.expect("the key exists").value, "yes");

    let without_cert =
        GrpcClient::connect_with_tls(&member.endpoint(), Some(&pki.client_tls(None))).await;
    match without_cert {
        // The refusal may come at connect or at the first call, depending on when the server's
        // alert is read.
        Ok(client) => assert!(client.get("grpc-tls").await.is_err()),
        Err(err) => assert!(err.to_string().contains("transport"), "{err}"),
    }
    assert!(
        GrpcClient::connect(&member.endpoint()).await.is_err(),
        "an https endpoint without TLS settings is refused"
    );
}

/// Without `--client-cert-auth`, a client that only trusts the CA is served: etcdctl reads
/// and writes, and curl gets `/health` and `/version` over TLS on the same port as gRPC.
#[tokio::test(flavor = "multi_thread")]
async fn without_client_cert_auth_any_client_trusting_the_ca_is_served() {
    let pki = Pki::new();
    let member = single_member(&pki, false).await;
    let ca_only = pki.etcdctl_flags(None);
    assert_eq!(
        ok_stdout(&member.etcdctl(&ca_only, &["put", "open", "door"])),
        "OK\n"
    );
    assert_eq!(
        ok_stdout(&member.etcdctl(&ca_only, &["get", "open"])),
        "open\ndoor\n"
    );
    for (path, expected) in [
        ("/health", "\"health\":\"true\""),
        ("/version", "\"etcdserver\""),
    ] {
        let output = curl(&pki, member.client_port, path);
        let body = stdout_of(&output);
        assert!(
            output.status.success(),
            "curl {path} failed: {}",
            stderr_of(&output)
        );
        assert!(body.contains(expected), "curl {path}: {body}");
    }
}

/// Runs `curl --cacert ca.pem https://127.0.0.1:<port><path>`; fails the test loudly when
/// curl is not installed.
fn curl(pki: &Pki, port: u16, path: &str) -> Output {
    let curl = ["/usr/bin/curl", "/bin/curl", "/usr/local/bin/curl"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("curl is not installed: the TLS /health check needs it (apt-get install curl)")
        });
    Command::new(curl)
        .arg("--silent")
        .arg("--show-error")
        .arg("--max-time")
        .arg("10")
        .arg("--cacert")
        .arg(pki.path("ca.pem"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// Three members with `https://` peer URLs and `--peer-client-cert-auth` elect a leader and
/// replicate a write that every member then serves. A fourth member, added to the cluster
/// but presenting a peer certificate from another CA, is refused by the members' peer ports
/// (they log the rejected connection), never joins, and the cluster keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn peers_over_tls_replicate_and_refuse_a_foreign_certificate() {
    let pki = Pki::new();
    let mut members: Vec<TlsMember> = (0..3)
        .map(|index| TlsMember::new(&format!("tls{index}")))
        .collect();
    let cluster = members
        .iter()
        .map(|member| format!("{}={}", member.name, member.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let mut flags = pki.client_port_flags(true);
    flags.extend(pki.peer_port_flags("server"));
    for member in &mut members {
        member.spawn(&cluster, "new", &flags);
    }
    let health_client = pki.rustls_client(Some("client"));
    for member in &mut members {
        member.wait_healthy(&health_client).await;
    }

    let etcdctl_tls = pki.etcdctl_flags(Some("client"));
    assert_eq!(
        ok_stdout(&members[0].etcdctl(&etcdctl_tls, &["put", "replicated", "over-tls"])),
        "OK\n"
    );
    for member in &members {
        // Serializable: each member answers from its own copy of the data.
        poll_until(
            &format!("{} to have the write", member.name),
            READY_TIMEOUT,
            || async {
                let output =
                    member.etcdctl(&etcdctl_tls, &["get", "replicated", "--consistency=s"]);
                (output.status.success() && stdout_of(&output) == "replicated\nover-tls\n")
                    .then_some(())
            },
        )
        .await;
    }

    let mut rogue = TlsMember::new("tls3");
    // etcd refuses a member change until its members have been connected for a few seconds
    // ("unhealthy cluster"), so the add is retried.
    let add_args = [
        "member".to_owned(),
        "add".to_owned(),
        "tls3".to_owned(),
        "--learner".to_owned(),
        format!("--peer-urls={}", rogue.peer_url()),
    ];
    let add_args: Vec<&str> = add_args.iter().map(String::as_str).collect();
    poll_until("the learner to be added", READY_TIMEOUT, || async {
        let output = members[0].etcdctl(&etcdctl_tls, &add_args);
        output.status.success().then_some(())
    })
    .await;
    let mut rogue_flags = pki.client_port_flags(true);
    rogue_flags.extend(pki.peer_port_flags("rogue"));
    let rogue_cluster = format!("{cluster},tls3={}", rogue.peer_url());
    rogue.spawn(&rogue_cluster, "existing", &rogue_flags);
    let exited = rogue.wait_exit(JOIN_GIVE_UP_TIMEOUT).await;
    assert!(
        exited.is_some_and(|status| !status.success()),
        "a member with a foreign peer certificate must fail to join, got {exited:?}\n{}",
        rogue.log_text()
    );
    poll_until("a member to log the refused peer", EXIT_TIMEOUT, || async {
        members
            .iter()
            .any(|member| member.log_text().contains("rejected connection"))
            .then_some(())
    })
    .await;

    let listed = ok_stdout(&members[1].etcdctl(&etcdctl_tls, &["member", "list"]));
    let rogue_line = listed
        .lines()
        .find(|line| line.contains(&rogue.peer_url()))
        .unwrap_or_else(|| panic!("the added member is listed:\n{listed}"));
    assert!(
        rogue_line.contains("unstarted"),
        "the foreign member never started: {rogue_line}"
    );
    assert_eq!(
        ok_stdout(&members[2].etcdctl(&etcdctl_tls, &["put", "still", "serving"])),
        "OK\n"
    );
    if testing_mnemo() {
        assert!(
            rogue.log_text().contains("cannot join the cluster"),
            "{}",
            rogue.log_text()
        );
    }
}

/// Starts the server with an `https://` client URL, a plain peer URL and `flags`, expecting
/// it to refuse to start; returns what it printed.
async fn refused_start(flags: &[String]) -> String {
    let mut member = TlsMember::new("default");
    let client_url = member.endpoint();
    let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
    let log = std::fs::File::create(member.log_path()).expect("create the log");
    let log_err = log.try_clone().expect("clone the log handle");
    let child = Command::new(server_binary())
        .arg(format!(
            "--data-dir={}",
            member.dir.path().join("data").display()
        ))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        .args(flags)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .expect("spawn the server binary");
    member.child = Some(child);
    let exited = member.wait_exit(EXIT_TIMEOUT).await;
    assert!(
        exited.is_some_and(|status| !status.success()),
        "the server must refuse {flags:?}, got {exited:?}\n{}",
        member.log_text()
    );
    member.log_text()
}

/// An `https://` client URL without a certificate and key, or a certificate without its key,
/// is refused at start with etcd's messages.
#[tokio::test(flavor = "multi_thread")]
async fn inconsistent_tls_flags_are_refused_with_etcds_messages() {
    let pki = Pki::new();
    let printed = refused_start(&[]).await;
    let expected = "must be provided for client url https://127.0.0.1:";
    assert!(
        printed.contains("TLS key/cert (--cert-file, --key-file) ") && printed.contains(expected),
        "{printed}"
    );
    let cert = pki.arg("server.pem");
    let printed = refused_start(&[format!("--cert-file={cert}")]).await;
    let expected = format!("KeyFile and CertFile must both be present[key: , cert: {cert}]");
    assert!(printed.contains(&expected), "{printed}");
}

/// Ends a process this test started when the test ends, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mnemo apiserver` stores its objects in a member that serves TLS clients with certificates
/// only, given kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`;
/// without the certificate the member refuses it, and the API server exits saying why.
#[tokio::test(flavor = "multi_thread")]
async fn the_apiserver_reaches_a_tls_member_with_kube_apiservers_flags() {
    let pki = Pki::new();
    let member = single_member(&pki, true).await;
    let apiserver = |with_cert: bool| {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_mnemo"));
        command.args([
            "apiserver",
            "--listen",
            &listen,
            "--etcd-endpoints",
            &member.endpoint(),
            "--etcd-cafile",
            &pki.arg("ca.pem"),
        ]);
        if with_cert {
            command
                .arg(format!("--etcd-certfile={}", pki.arg("client.pem")))
                .arg(format!("--etcd-keyfile={}", pki.arg("client-key.pem")));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mnemo apiserver");
        (
            KillOnDrop(child),
            listen.parse::<std::net::SocketAddr>().unwrap(),
        )
    };

    let (_served, addr) = apiserver(true);
    let namespaces = poll_until("the API server lists namespaces", READY_TIMEOUT, || async {
        let response = crate::support::http_get(addr, "/api/v1/namespaces")
            .await
            .ok()?;
        (response.status == 200).then(|| response.body_text())
    })
    .await;
    assert!(namespaces.contains("\"kube-system\""), "{namespaces}");
    // The seeded namespaces are in the member, read back over TLS.
    let client =
        GrpcClient::connect_with_tls(&member.endpoint(), Some(&pki.client_tls(Some("client"))))
            .await
            .expect("connect with a client certificate");
    let stored = client
        .get("/registry/namespaces/kube-system")
        .await
        .expect("get over TLS");
    assert!(stored.is_some(), "the API server wrote through TLS");

    let (mut refused, _) = apiserver(false);
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        if let Some(status) = refused.0.try_wait().expect("poll the refused API server") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "an API server without a certificate kept running"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(refused.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("mnemo apiserver: "), "{stderr}");
    assert!(!stderr.contains("ready to serve"), "{stderr}");
}
