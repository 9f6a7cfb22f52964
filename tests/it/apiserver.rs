//! `mnemo apiserver` driven from the outside by the real kubectl 1.32 (the `kubectl.1.32`
//! binary beside the gcloud kubectl dispatcher, with a fresh `--cache-dir` per server so no
//! discovery leaks between tests), and by raw HTTP where kubectl has no command.
//!
//! Expected texts are kubectl's against kube-apiserver (apiserver.md §10b): whitespace is
//! collapsed and ages read as `<age>` before comparing.
//!
//! The server runs as a real process. Every kubectl flow runs three times (the
//! `on_every_store!` macro): on the server's embedded member, through `--etcd-endpoints` on a
//! 3-member mnemo cluster, and through `--etcd-endpoints` on a real etcd 3.4.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mnemo::limits::CLIENT_REQUEST_TIMEOUT;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::cluster::Cluster;
use crate::support::{self, Member, free_port, http_get, http_request};

/// How long the API server may take to answer `/version` after spawning.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Longest a `kubectl get -w` child is left running.
const WATCH_WAIT: Duration = Duration::from_secs(15);

/// The kubectl 1.32 binary: beside the real file behind the `kubectl` dispatcher on PATH.
/// Fails the test, never skips it, when it is missing.
fn kubectl_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file());
    let hint = "install the `kubectl` apt package (google-cloud-cli repository; scripts/setup \
                installs it), which ships kubectl.1.27 ... kubectl.1.33 beside its dispatcher";
    let dispatcher = on_path.unwrap_or_else(|| panic!("kubectl is not on PATH: {hint}"));
    let real = std::fs::canonicalize(&dispatcher).expect("resolve the kubectl symlink");
    let binary = real
        .parent()
        .expect("kubectl has a parent directory")
        .join("kubectl.1.32");
    assert!(binary.is_file(), "{} is missing: {hint}", binary.display());
    binary
}

/// The store under the API server.
#[derive(Clone, Copy, Debug)]
enum Store {
    /// The member `mnemo apiserver` embeds when given no `--etcd-endpoints`.
    Embedded,
    /// A 3-member mnemo cluster, all three listed in `--etcd-endpoints`.
    MnemoCluster,
    /// A real etcd 3.4 (Debian's etcd-server) in `--etcd-endpoints`.
    Etcd,
}

/// Keeps an external store running for as long as the API server on it.
enum Backing {
    None,
    Cluster { members: Cluster },
    Single { member: Member },
}

/// A running `mnemo apiserver` and a kubeconfig pointing at it.
struct ApiServer {
    /// Holds the kubeconfig, the kubectl cache, fixtures, the server log and its data dir.
    dir: TempDir,
    addr: SocketAddr,
    /// A client URL of the store, for etcdctl: the embedded member's, or the last member of a
    /// cluster (not the one the API server talks to first).
    etcd_endpoint: String,
    child: Option<Child>,
    /// Dropped after the server (fields drop in order), so the store outlives it.
    _backing: Backing,
}

impl ApiServer {
    /// Starts the store, then the API server on it with `extra` flags.
    async fn start_on(store: Store, extra: &[&str]) -> ApiServer {
        match store {
            Store::Embedded => ApiServer::start_with(&[], Backing::None, extra).await,
            Store::MnemoCluster => {
                let cluster = Cluster::start(3).await;
                let flag = format!("--etcd-endpoints={}", cluster.endpoints(&[0, 1, 2]));
                let endpoint = cluster.member(2).endpoint();
                let mut server =
                    ApiServer::start_with(&[&flag], Backing::Cluster { members: cluster }, extra)
                        .await;
                server.etcd_endpoint = endpoint;
                server
            }
            Store::Etcd => {
                let binary = PathBuf::from("/usr/bin/etcd");
                assert!(
                    binary.is_file(),
                    "/usr/bin/etcd is missing: run scripts/setup (installs Debian's etcd-server)"
                );
                let etcd = Member::start_with_binary("etcd0", binary).await;
                let endpoint = etcd.endpoint();
                let flag = format!("--etcd-endpoints={endpoint}");
                let mut server =
                    ApiServer::start_with(&[&flag], Backing::Single { member: etcd }, extra).await;
                server.etcd_endpoint = endpoint;
                server
            }
        }
    }

    /// Starts the API server with `store_flags` (none, or `--etcd-endpoints=...` for the store
    /// `backing` holds) and `extra` flags.
    async fn start_with(store_flags: &[&str], backing: Backing, extra: &[&str]) -> ApiServer {
        let dir = tempfile::Builder::new()
            .prefix("mnemo-apiserver-it-")
            .tempdir()
            .expect("create a temp dir");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let embedded = store_flags.is_empty();
        let mut args = vec![
            "apiserver".to_string(),
            format!("--listen={addr}"),
            format!("--data-dir={}", dir.path().join("data").display()),
        ];
        let etcd_endpoint = if embedded {
            let client = format!("http://127.0.0.1:{}", free_port());
            args.push(format!("--listen-client-urls={client}"));
            args.push(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                free_port()
            ));
            client
        } else {
            String::new()
        };
        args.extend(store_flags.iter().map(|flag| (*flag).to_string()));
        args.extend(extra.iter().map(|flag| (*flag).to_string()));
        let log = std::fs::File::create(dir.path().join("apiserver.log")).expect("create the log");
        let child = Command::new(env!("CARGO_BIN_EXE_mnemo"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn mnemo apiserver");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: it\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: it\n  user: {{}}\ncontexts:\n- name: it\n  context:\n    cluster: it\n    \
             user: it\n    namespace: default\ncurrent-context: it\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("write the kubeconfig");
        let mut server = ApiServer {
            dir,
            addr,
            etcd_endpoint,
            child: Some(child),
            _backing: backing,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let attempts_max = READY_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
        for _ in 0..attempts_max {
            let child = self.child.as_mut().expect("server started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("mnemo apiserver exited with {status}\n{}", self.log());
            }
            if let Ok(response) = http_get(self.addr, "/api/v1/namespaces/default").await
                && response.status == 200
            {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!(
            "mnemo apiserver did not serve within {READY_TIMEOUT:?}\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// Writes a fixture file into the server's directory and returns its path.
    fn fixture(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a fixture");
        path
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(kubectl_binary());
        command
            .current_dir(self.dir.path())
            .env_remove("KUBECONFIG")
            .arg(format!(
                "--kubeconfig={}",
                self.dir.path().join("kubeconfig").display()
            ))
            .arg(format!(
                "--cache-dir={}",
                self.dir.path().join("cache").display()
            ))
            .arg("--request-timeout=20s")
            .args(args);
        command
    }

    /// Runs kubectl and returns its output.
    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl.1.32")
    }

    /// Runs kubectl, requires success, and returns stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
        String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
    }

    /// Starts `kubectl -n demo get configmaps -w --output-watch-events`, its output going to
    /// `<name>-watch.out` (returned) and its errors to `<name>-watch.err`.
    fn watch_configmaps(&self, name: &str) -> (Child, PathBuf) {
        let out = self.dir.path().join(format!("{name}-watch.out"));
        let err = self.dir.path().join(format!("{name}-watch.err"));
        let child = self
            .kubectl_command(&[
                "-n",
                "demo",
                "get",
                "configmaps",
                "-w",
                "--output-watch-events",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create the watch output"))
            .stderr(std::fs::File::create(err).expect("create the watch errors"))
            .spawn()
            .expect("spawn kubectl get -w");
        (child, out)
    }

    /// Runs kubectl with `-o json`, requires success, and returns the parsed object.
    #[track_caller]
    fn get_json(&self, args: &[&str]) -> Value {
        let text = self.ok(&[args, &["-o", "json"][..]].concat());
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
    }

    /// Runs kubectl, requires exit code 1, and returns stderr.
    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "kubectl {args:?} should fail:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stderr).expect("kubectl prints UTF-8")
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// One raw HTTP request with a body of the given media type; returns the status and the
    /// JSON body.
    async fn request_with(&self, method: &str, path: &str, body: (&str, &[u8])) -> (u16, Value) {
        let response = http_request(self.addr, method, path, Some(body))
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let json = serde_json::from_slice(&response.body)
            .unwrap_or_else(|err| panic!("{method} {path}: {err}: {}", response.body_text()));
        (response.status, json)
    }

    /// One raw HTTP request; returns the status and the JSON body.
    async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|value| value.to_string().into_bytes());
        let response = http_request(
            self.addr,
            method,
            path,
            bytes.as_deref().map(|b| ("application/json", b)),
        )
        .await
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }
}

impl ApiServer {
    /// The cluster under the server; panics when it runs on something else.
    fn cluster_mut(&mut self) -> &mut Cluster {
        match &mut self._backing {
            Backing::Cluster { members } => members,
            _ => panic!("the API server does not run on a cluster"),
        }
    }

    /// The single member under the server; panics when it runs on something else.
    fn single_member(&self) -> &Member {
        match &self._backing {
            Backing::Single { member } => member,
            _ => panic!("the API server does not run on a single external member"),
        }
    }

    /// Sends SIGTERM to the server (by its PID) and waits for it to exit; returns its exit code.
    async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("server running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status =
            support::poll_until("the apiserver exits after SIGTERM", READY_TIMEOUT, || {
                let exited = child.try_wait().expect("try_wait");
                async move { exited }
            })
            .await;
        status.code()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `token` is a kube age (`5s`, `3m20s`, `2d`).
fn is_age(token: &str) -> bool {
    let mut digits = false;
    let mut ok = !token.is_empty();
    for c in token.chars() {
        if c.is_ascii_digit() {
            digits = true;
        } else if "smhdy".contains(c) && digits {
            digits = false;
        } else {
            ok = false;
        }
    }
    ok && !digits
}

/// `text` with whitespace collapsed per line and ages replaced by `<age>`.
fn normalized(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .map(|token| if is_age(token) { "<age>" } else { token })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

const NAMESPACE_DEMO: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n";

const POD_WEB: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: main
    image: nginx:1.27
";

#[test]
fn ages_normalize() {
    assert!(is_age("5s") && is_age("3m20s") && is_age("2d") && is_age("10m"));
    assert!(!is_age("web") && !is_age("0/1") && !is_age("5") && !is_age("s"));
    assert_eq!(normalized("NAME  AGE\nweb   5s\n"), "NAME AGE\nweb <age>");
}

/// Runs each kubectl flow `$flow(store)` as three tests in a module of its name: `embedded`,
/// `mnemo_cluster` and `etcd` (see [`Store`]).
macro_rules! on_every_store {
    ($($flow:ident),* $(,)?) => {$(
        mod $flow {
            use super::Store;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$flow(Store::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mnemo_cluster() {
                super::$flow(Store::MnemoCluster).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn etcd() {
                super::$flow(Store::Etcd).await;
            }
        }
    )*};
}

on_every_store!(
    discovery_and_version_match_kubectls_expectations,
    every_kind_creates_gets_and_deletes,
    pod_flows_print_kubes_texts,
    get_watch_sees_added_modified_deleted,
    watch_protocol_and_compaction,
    chunked_lists_page_at_one_revision,
    concurrent_updates_with_retries_count_exactly,
    objects_land_in_kubes_key_layout,
    apply_describe_events_and_sigterm,
    apply_keeps_containers_merged_by_name,
    generators_send_protobuf_bodies,
    unknown_fields_follow_field_validation,
    events_expire_after_the_event_ttl,
    a_revoked_event_lease_is_replaced,
    scheduler_binds_pods_evenly_within_capacity_and_waits_for_room,
);

/// Discovery, version, short names and the errors of unknown types and protobuf bodies.
async fn discovery_and_version_match_kubectls_expectations(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    let version = server.ok(&["version"]);
    assert!(version.contains("Server Version: v1.32."), "{version}");
    let resources = normalized(&server.ok(&["api-resources"]));
    for row in [
        "NAME SHORTNAMES APIVERSION NAMESPACED KIND",
        "pods po v1 true Pod",
        "namespaces ns v1 false Namespace",
        "nodes no v1 false Node",
        "services svc v1 true Service",
        "configmaps cm v1 true ConfigMap",
        "secrets v1 true Secret",
        "events ev v1 true Event",
        "deployments deploy apps/v1 true Deployment",
        "serviceaccounts sa v1 true ServiceAccount",
        "leases coordination.k8s.io/v1 true Lease",
    ] {
        assert!(
            resources.lines().any(|line| line == row),
            "no {row:?} in\n{resources}"
        );
    }
    assert_eq!(
        normalized(&server.ok(&["get", "ns"])),
        "NAME STATUS AGE\ndefault Active <age>\nkube-node-lease Active <age>\n\
         kube-public Active <age>\nkube-system Active <age>"
    );
    assert_eq!(
        server.fails(&["get", "foos"]).trim(),
        "error: the server doesn't have a resource type \"foos\""
    );
    // A body in a media type no kube client sends: kube's exact 415 text.
    let (status, body) = server
        .request_with("POST", "/api/v1/namespaces", ("text/plain", b"name: x"))
        .await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(
        body["message"],
        "the body of the request was in an unknown format - accepted media types include: \
         application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
    let openapi_v2 = http_get(server.addr, "/openapi/v2").await.unwrap();
    assert_eq!(openapi_v2.status, 404, "kubectl must fall back from v2");
}

/// Every served kind: create from a YAML file, get (table and JSON), delete.
async fn every_kind_creates_gets_and_deletes(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    server.fixture("ns.yaml", NAMESPACE_DEMO);
    assert_eq!(
        server.ok(&["create", "-f", "ns.yaml"]).trim(),
        "namespace/demo created"
    );
    let kinds: &[(&str, &str, &str, &str)] = &[
        (
            "pod",
            "web",
            POD_WEB,
            "NAME READY STATUS RESTARTS AGE\nweb 0/1 Pending 0 <age>",
        ),
        (
            "node",
            "node1",
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\nstatus:\n  conditions:\n  - type: Ready\n    status: \"True\"\n  nodeInfo:\n    kubeletVersion: v1.32.0\n",
            "NAME STATUS ROLES AGE VERSION\nnode1 Ready <none> <age> v1.32.0",
        ),
        (
            "service",
            "svc",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    protocol: TCP\n",
            "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE\nsvc ClusterIP <none> <none> 80/TCP <age>",
        ),
        (
            "configmap",
            "cfg",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n  b: \"2\"\n",
            "NAME DATA AGE\ncfg 2 <age>",
        ),
        (
            "secret",
            "sec",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sec\ndata:\n  token: c2VjcmV0\n",
            "NAME TYPE DATA AGE\nsec Opaque 1 <age>",
        ),
        (
            "event",
            "ev1",
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: ev1\ninvolvedObject:\n  kind: Pod\n  name: web\n  namespace: demo\nreason: Tested\nmessage: hello\ntype: Normal\n",
            "LAST SEEN TYPE REASON OBJECT MESSAGE\n<age> Normal Tested pod/web hello",
        ),
        (
            "deployment",
            "d",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: d\n  template:\n    metadata:\n      labels:\n        app: d\n    spec:\n      containers:\n      - name: main\n        image: nginx\n",
            "NAME READY UP-TO-DATE AVAILABLE AGE\nd 0/2 0 0 <age>",
        ),
        (
            "serviceaccount",
            "builder",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: builder\nsecrets:\n- name: token\n",
            "NAME SECRETS AGE\nbuilder 1 <age>",
        ),
        (
            "lease",
            "leader",
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: leader\nspec:\n  holderIdentity: me\n  leaseDurationSeconds: 15\n  renewTime: \"2024-01-01T00:00:00.000000Z\"\n",
            "NAME HOLDER AGE\nleader me <age>",
        ),
    ];
    // kubectl names a kind outside the core group with its group.
    let qualified = |kind: &str| match kind {
        "deployment" => "deployment.apps".to_string(),
        "lease" => "lease.coordination.k8s.io".to_string(),
        other => other.to_string(),
    };
    for (kind, name, yaml, table) in kinds {
        let file = format!("{kind}.yaml");
        server.fixture(&file, yaml);
        let shown = format!("{}/{name} created", qualified(kind));
        assert_eq!(
            server.ok(&["-n", "demo", "create", "-f", &file]).trim(),
            shown
        );
        assert_eq!(
            normalized(&server.ok(&["-n", "demo", "get", kind])),
            *table,
            "{kind}"
        );
        let object: Value =
            serde_json::from_str(&server.ok(&["-n", "demo", "get", kind, name, "-o", "json"]))
                .unwrap();
        assert_eq!(object["metadata"]["name"], *name);
        let rv = object["metadata"]["resourceVersion"].as_str().unwrap();
        assert!(rv.parse::<i64>().unwrap() > 0, "{kind}: {object}");
        assert_eq!(object["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(
            object["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        let namespaced = *kind != "node";
        assert_eq!(
            object["metadata"].get("namespace").and_then(Value::as_str),
            namespaced.then_some("demo"),
            "{kind}"
        );
        let described = normalized(&server.ok(&["-n", "demo", "describe", kind, name]));
        assert!(
            described.starts_with(&format!("Name: {name}\n")),
            "{kind}: {described}"
        );
        assert_eq!(
            described.contains("\nNamespace: demo\n"),
            namespaced,
            "{kind}: {described}"
        );
        let deleted = format!("{} \"{name}\" deleted", qualified(kind));
        assert_eq!(
            server.ok(&["-n", "demo", "delete", kind, name]).trim(),
            deleted
        );
        let missing = server.fails(&["-n", "demo", "get", kind, name]);
        let plural = match qualified(kind).split_once('.') {
            Some((singular, group)) => format!("{singular}s.{group}"),
            None => format!("{kind}s"),
        };
        assert_eq!(
            missing.trim(),
            format!("Error from server (NotFound): {plural} \"{name}\" not found")
        );
    }
    // A deployment tracks its generation; kube starts it at 1.
    server.ok(&["-n", "demo", "create", "-f", "deployment.yaml"]);
    // kube's apps/v1 defaults, as describe prints them.
    let described = normalized(&server.ok(&["-n", "demo", "describe", "deploy", "d"]));
    assert!(
        described.contains("\nStrategyType: RollingUpdate\n"),
        "{described}"
    );
    assert!(
        described.contains("\nRollingUpdateStrategy: 25% max unavailable, 25% max surge\n"),
        "{described}"
    );
    assert_eq!(
        server.ok(&[
            "-n",
            "demo",
            "get",
            "deploy",
            "d",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "1"
    );
    assert_eq!(
        server
            .ok(&["-n", "demo", "scale", "deploy", "d", "--replicas=3"])
            .trim(),
        "deployment.apps/d scaled"
    );
    assert_eq!(
        server.ok(&[
            "-n",
            "demo",
            "get",
            "deploy",
            "d",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "3 2"
    );
}

/// The pod flows of apiserver.md §10b: errors, labels, selectors, annotate, replace, generate
/// names, validation, binding, describe, delete, namespace cascade.
async fn pod_flows_print_kubes_texts(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    server.fixture("ns.yaml", NAMESPACE_DEMO);
    server.fixture("pod.yaml", POD_WEB);
    server.ok(&["create", "-f", "ns.yaml"]);
    assert_eq!(
        server
            .ok(&["-n", "demo", "create", "-f", "pod.yaml"])
            .trim(),
        "pod/web created"
    );
    assert_eq!(
        server
            .fails(&["-n", "demo", "create", "-f", "pod.yaml"])
            .trim(),
        "Error from server (AlreadyExists): error when creating \"pod.yaml\": pods \"web\" already exists"
    );
    assert_eq!(
        normalized(&server.ok(&["-n", "demo", "get", "pods", "-o", "wide"])),
        "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES\n\
         web 0/1 Pending 0 <age> <none> <none> <none> <none>"
    );
    assert_eq!(
        server.ok(&[
            "-n",
            "demo",
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].metadata.name}"
        ]),
        "web"
    );
    // A pod in a namespace that does not exist.
    assert_eq!(
        server
            .fails(&["-n", "nowhere", "create", "-f", "pod.yaml"])
            .trim(),
        "Error from server (NotFound): error when creating \"pod.yaml\": namespaces \"nowhere\" not found"
    );
    assert_eq!(
        server
            .ok(&["-n", "demo", "label", "pod", "web", "tier=fe"])
            .trim(),
        "pod/web labeled"
    );
    assert_eq!(
        server
            .ok(&["-n", "demo", "get", "pods", "-l", "tier=fe", "-o", "name"])
            .trim(),
        "pod/web"
    );
    let none = server.kubectl(&["-n", "demo", "get", "pods", "-l", "tier=be"]);
    assert!(none.status.success());
    assert!(none.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&none.stderr).trim(),
        "No resources found in demo namespace."
    );
    assert_eq!(
        normalized(&server.ok(&["-n", "demo", "get", "pods", "--show-labels"])),
        "NAME READY STATUS RESTARTS AGE LABELS\nweb 0/1 Pending 0 <age> app=web,tier=fe"
    );
    assert_eq!(
        normalized(&server.ok(&["get", "pods", "-A"])),
        "NAMESPACE NAME READY STATUS RESTARTS AGE\ndemo web 0/1 Pending 0 <age>"
    );
    assert_eq!(
        server
            .ok(&[
                "-n",
                "demo",
                "get",
                "pods",
                "--field-selector=metadata.name=web",
                "-o",
                "name"
            ])
            .trim(),
        "pod/web"
    );
    assert_eq!(
        server
            .ok(&[
                "-n",
                "demo",
                "get",
                "pods",
                "--field-selector=status.phase=Pending",
                "-o",
                "name"
            ])
            .trim(),
        "pod/web"
    );
    let unsupported = server.fails(&["-n", "demo", "get", "pods", "--field-selector=spec.foo=x"]);
    assert!(
        unsupported.starts_with("Error from server (BadRequest): ")
            && unsupported
                .trim_end()
                .ends_with("field label not supported: spec.foo"),
        "{unsupported}"
    );
    let stale = server.fails(&[
        "-n",
        "demo",
        "label",
        "pod",
        "web",
        "tier=be",
        "--overwrite",
        "--resource-version=1",
    ]);
    assert_eq!(
        stale.trim(),
        "Error from server (Conflict): Operation cannot be fulfilled on pods \"web\": the object \
         has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        server
            .ok(&["-n", "demo", "annotate", "pod", "web", "note=x"])
            .trim(),
        "pod/web annotated"
    );
    assert_eq!(
        server.ok(&[
            "-n",
            "demo",
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "x"
    );
    // replace with a stale resourceVersion: kube's conflict text.
    let current = server.ok(&["-n", "demo", "get", "pod", "web", "-o", "json"]);
    server.fixture("stale.json", &current);
    server.ok(&["-n", "demo", "label", "pod", "web", "moved=yes"]);
    assert_eq!(
        server
            .fails(&["-n", "demo", "replace", "-f", "stale.json"])
            .trim(),
        "Error from server (Conflict): error when replacing \"stale.json\": Operation cannot be \
         fulfilled on pods \"web\": the object has been modified; please apply your changes to \
         the latest version and try again"
    );
    // replace with the current resourceVersion succeeds.
    let fresh = server.ok(&["-n", "demo", "get", "pod", "web", "-o", "json"]);
    server.fixture("fresh.json", &fresh);
    assert_eq!(
        server
            .ok(&["-n", "demo", "replace", "-f", "fresh.json"])
            .trim(),
        "pod/web replaced"
    );
    // generateName.
    server.fixture(
        "gen.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: gen-\nspec:\n  containers:\n  - name: main\n    image: nginx\n",
    );
    let generated = server.ok(&["-n", "demo", "create", "-f", "gen.yaml"]);
    let generated = generated.trim();
    let suffix = generated
        .strip_prefix("pod/gen-")
        .and_then(|rest| rest.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("{generated}"));
    assert_eq!(suffix.len(), 5);
    assert!(
        suffix
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{suffix}"
    );
    assert_eq!(
        server
            .fails(&["-n", "demo", "apply", "-f", "gen.yaml"])
            .trim(),
        "error: from gen-: cannot use generate name with apply"
    );
    // Validation: 422 Invalid with kube's cause text.
    server.fixture(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: main\n",
    );
    assert_eq!(
        server
            .fails(&["-n", "demo", "create", "-f", "bad.yaml"])
            .trim(),
        "The Pod \"bad\" is invalid: spec.containers[0].image: Required value"
    );
    // Binding, once.
    server.fixture(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"web"},"target":{"kind":"Node","name":"node1"}}"#,
    );
    server.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/demo/pods/web/binding",
        "-f",
        "binding.json",
    ]);
    assert_eq!(
        server.ok(&[
            "-n",
            "demo",
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.nodeName}"
        ]),
        "node1"
    );
    let rebind = server.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/demo/pods/web/binding",
        "-f",
        "binding.json",
    ]);
    assert!(
        rebind.contains("pod web is already assigned to node \"node1\""),
        "{rebind}"
    );
    let described = server.ok(&["-n", "demo", "describe", "pod", "web"]);
    let described = normalized(&described);
    for line in [
        "Name: web",
        "Namespace: demo",
        "Status: Pending",
        "Events: <none>",
    ] {
        assert!(
            described.lines().any(|l| l == line),
            "no {line:?} in\n{described}"
        );
    }
    // Graceful deletion of a pod on a node: marked with its deadline, still there and shown
    // as Terminating, until the grace period is over.
    let (code, marked) = server
        .request(
            "DELETE",
            "/api/v1/namespaces/demo/pods/web",
            Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 60})),
        )
        .await;
    assert_eq!(code, 200, "{marked}");
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 60);
    let deadline = marked["metadata"]["deletionTimestamp"].as_str().unwrap();
    let deadline = humantime::parse_rfc3339(deadline).unwrap();
    let ahead = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(ahead > Duration::from_secs(50), "{marked}");
    assert_eq!(
        normalized(&server.ok(&["-n", "demo", "get", "pod", "web"])),
        "NAME READY STATUS RESTARTS AGE\nweb 0/1 Terminating 0 <age>"
    );
    // A shorter grace period moves the deadline closer; kubectl waits until the pod is gone.
    let started = Instant::now();
    assert_eq!(
        server
            .ok(&["-n", "demo", "delete", "pod", "web", "--grace-period=1"])
            .trim(),
        "pod \"web\" deleted"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        server.fails(&["-n", "demo", "get", "pod", "web"]).trim(),
        "Error from server (NotFound): pods \"web\" not found"
    );
    server.ok(&[
        "-n",
        "demo",
        "wait",
        "--for=delete",
        "pod/nope",
        "--timeout=2s",
    ]);
    // Deleting a namespace takes its objects with it, and returns.
    assert_eq!(
        server.ok(&["delete", "ns", "demo"]).trim(),
        "namespace \"demo\" deleted"
    );
    assert_eq!(
        server.fails(&["get", "ns", "demo"]).trim(),
        "Error from server (NotFound): namespaces \"demo\" not found"
    );
    let empty = server.kubectl(&["get", "pods", "-n", "demo"]);
    assert_eq!(
        String::from_utf8_lossy(&empty.stderr).trim(),
        "No resources found in demo namespace."
    );
}

/// `kubectl get -w` prints the current pod, then one row per change: a label (MODIFIED), a
/// create (ADDED) and a delete (DELETED).
async fn get_watch_sees_added_modified_deleted(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    server.fixture("pod.yaml", POD_WEB);
    server.ok(&["create", "-f", "pod.yaml"]);
    let out_path = server.dir.path().join("watch.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut watcher = server
        .kubectl_command(&["get", "pods", "-w", "--output-watch-events"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl get -w");
    let rows = |path: &Path| normalized(&std::fs::read_to_string(path).unwrap_or_default());
    support::poll_until("the watch prints the current pod", WATCH_WAIT, || async {
        rows(&out_path).contains("web").then_some(())
    })
    .await;
    server.ok(&["label", "pod", "web", "tier=fe"]);
    server.fixture("other.yaml", &POD_WEB.replace("name: web", "name: other"));
    server.ok(&["create", "-f", "other.yaml"]);
    server.ok(&["delete", "pod", "other"]);
    let seen = support::poll_until("the watch prints three changes", WATCH_WAIT, || async {
        let text = rows(&out_path);
        (text.lines().count() >= 5).then_some(text)
    })
    .await;
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(
        seen,
        "EVENT NAME READY STATUS RESTARTS AGE\nADDED web 0/1 Pending 0 <age>\n\
         MODIFIED web 0/1 Pending 0 <age>\nADDED other 0/1 Pending 0 <age>\n\
         DELETED other 0/1 Pending 0 <age>"
    );
}

/// Raw watch semantics: events strictly after `resourceVersion`, DELETED carrying the last
/// state at the delete revision, selectors turning leave/enter into DELETED/ADDED, and a
/// compacted start answered with a 410 ERROR event by the compactor's doing.
async fn watch_protocol_and_compaction(store: Store) {
    let server = ApiServer::start_on(store, &["--compaction-interval=1s"]).await;
    let (code, created) = server
        .request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let rv: i64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let patch = |labels: Value| json!({"metadata": {"labels": labels}});
    let patch_path = "/api/v1/namespaces/default/configmaps/c";
    for labels in [json!({"a": "2"}), json!({"a": "1"})] {
        let body = patch(labels).to_string().into_bytes();
        let response = http_request(
            server.addr,
            "PATCH",
            patch_path,
            Some(("application/merge-patch+json", &body)),
        )
        .await
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    let (code, _) = server.request("DELETE", patch_path, None).await;
    assert_eq!(code, 200);
    // The history since creation, through a selector on a=1: leaving the selector is a
    // DELETED, entering it again an ADDED.
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&labelSelector=a%3D1&timeoutSeconds=1"
    );
    let response = http_get(server.addr, &path).await.unwrap();
    assert_eq!(response.status, 200);
    let events: Vec<Value> = response
        .body_text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DELETED", "ADDED", "DELETED"], "{events:?}");
    let rvs: Vec<i64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]) && rvs[0] > rv,
        "{rvs:?}"
    );
    assert_eq!(
        events[2]["object"]["metadata"]["labels"]["a"], "1",
        "last state"
    );
    // The compactor (1s interval) compacts to the revision it saw one round earlier; poll until
    // the creation revision is gone, then a watch from it is one 410 ERROR event.
    let expired = support::poll_until("the compactor compacts", Duration::from_secs(20), || async {
        let path = format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1");
        let text = http_get(server.addr, &path).await.ok()?.body_text();
        text.contains("\"ERROR\"").then_some(text)
    })
    .await;
    let lines: Vec<&str> = expired.lines().collect();
    assert_eq!(lines.len(), 1, "{expired}");
    let error: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    // The election key kube-apiserver uses sits at the keyspace root.
    let endpoint = server.etcd_endpoint.clone();
    let keys = support::ok_stdout(&support::etcdctl(
        &endpoint,
        &["get", "compact_rev_key", "-w", "json"],
        None,
    ));
    assert!(keys.contains("\"version\""), "{keys}");
    // kubectl prints an expired watch as a Status and exits 0.
    let raw = server.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
    ]);
    assert!(raw.contains("\"code\":410"), "{raw}");
}

/// `--chunk-size` pages through a list at one revision, following `continue`.
async fn chunked_lists_page_at_one_revision(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    for i in 1..=5 {
        let (code, body) = server
            .request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm{i}")}})),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let output = server.kubectl(&["get", "cm", "--chunk-size=2", "-o", "name", "-v=6"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "configmap/cm1\nconfigmap/cm2\nconfigmap/cm3\nconfigmap/cm4\nconfigmap/cm5"
    );
    let log = String::from_utf8_lossy(&output.stderr);
    let lists: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("GET") && l.contains("/configmaps?"))
        .collect();
    assert_eq!(lists.len(), 3, "{log}");
    assert_eq!(
        lists.iter().filter(|l| l.contains("continue=")).count(),
        2,
        "{log}"
    );
    // Raw: page one at revision R; a write between pages does not show on page two.
    let (_, first) = server
        .request("GET", "/api/v1/namespaces/default/configmaps?limit=3", None)
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["metadata"]["remainingItemCount"], 2);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let (code, _) = server
        .request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm9"}})),
        )
        .await;
    assert_eq!(code, 201);
    let (_, second) = server
        .request(
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}"),
            None,
        )
        .await;
    let names: Vec<&str> = second["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cm4", "cm5"]);
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert!(second["metadata"].get("continue").is_none());
    // resourceVersion together with continue is a 400.
    let (code, status) = server
        .request(
            "GET",
            &format!(
                "/api/v1/namespaces/default/configmaps?limit=3&continue={token}&resourceVersion=5"
            ),
            None,
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));

    // deletecollection takes what the selector picks and answers with it as a list.
    server.ok(&["label", "cm", "cm2", "cm4", "batch=old"]);
    let (code, deleted) = server
        .request(
            "DELETE",
            "/api/v1/namespaces/default/configmaps?labelSelector=batch%3Dold",
            None,
        )
        .await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["kind"], "ConfigMapList", "{deleted}");
    let gone: Vec<&str> = deleted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(gone, ["cm2", "cm4"]);
    assert_eq!(
        server.ok(&["get", "cm", "-o", "name"]).trim(),
        "configmap/cm1\nconfigmap/cm3\nconfigmap/cm5\nconfigmap/cm9"
    );
    // Namespaces have no deletecollection, and a namespaced kind has none across every
    // namespace, as in kube.
    let (code, _) = server.request("DELETE", "/api/v1/namespaces", None).await;
    assert_eq!(code, 405);
    let (code, _) = server.request("DELETE", "/api/v1/configmaps", None).await;
    assert_eq!(code, 405);
    assert_eq!(server.ok(&["get", "cm", "-o", "name"]).lines().count(), 4);
}

/// 20 clients increment one configmap with read-modify-write PUTs, retrying on 409: exactly
/// 20 increments land, and the conflicts they met were kube's Conflict.
async fn concurrent_updates_with_retries_count_exactly(store: Store) {
    const CLIENTS: usize = 20;
    const ATTEMPTS_MAX: usize = 200;
    let server = ApiServer::start_on(store, &[]).await;
    let path = "/api/v1/namespaces/default/configmaps/counter";
    let (code, _) = server
        .request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counter"}, "data": {"n": "0"}})),
        )
        .await;
    assert_eq!(code, 201);
    let addr = server.addr;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..ATTEMPTS_MAX {
                let current = http_request(addr, "GET", path, None).await.unwrap();
                let mut object: Value = serde_json::from_slice(&current.body).unwrap();
                let n: i64 = object["data"]["n"].as_str().unwrap().parse().unwrap();
                object["data"]["n"] = json!((n + 1).to_string());
                let body = object.to_string().into_bytes();
                let put = http_request(addr, "PUT", path, Some(("application/json", &body)))
                    .await
                    .unwrap();
                match put.status {
                    200 => return conflicts,
                    409 => {
                        let status: Value = serde_json::from_slice(&put.body).unwrap();
                        assert_eq!(status["reason"], "Conflict");
                        conflicts += 1;
                    }
                    other => panic!("PUT answered {other}: {}", put.body_text()),
                }
            }
            panic!("no update landed in {ATTEMPTS_MAX} attempts");
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let (_, object) = server.request("GET", path, None).await;
    assert_eq!(
        object["data"]["n"],
        CLIENTS.to_string(),
        "conflicts met: {conflicts}"
    );
    eprintln!("{CLIENTS} clients: {conflicts} conflicts before every increment landed");
}

/// The objects sit under kube-apiserver's key layout with RV = mod_revision, as etcdctl
/// sees them through another member than the one the API server talks to first; a watch
/// from before a change sees it; a namespace delete empties its keys.
async fn objects_land_in_kubes_key_layout(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    let endpoint = server.etcd_endpoint.as_str();
    server.fixture("ns.yaml", NAMESPACE_DEMO);
    server.fixture("pod.yaml", POD_WEB);
    server.fixture(
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n",
    );
    server.fixture(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  ports:\n  - port: 80\n",
    );
    server.ok(&["create", "-f", "ns.yaml"]);
    server.ok(&["-n", "demo", "create", "-f", "pod.yaml"]);
    server.ok(&["create", "-f", "node.yaml"]);
    server.ok(&["-n", "demo", "create", "-f", "svc.yaml"]);
    assert_eq!(
        server
            .fails(&["-n", "demo", "create", "-f", "pod.yaml"])
            .trim(),
        "Error from server (AlreadyExists): error when creating \"pod.yaml\": pods \"web\" already exists"
    );
    let before = server.ok(&[
        "-n",
        "demo",
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    server.ok(&["-n", "demo", "label", "pod", "web", "tier=fe"]);
    // A watch from before the label sees it as one MODIFIED event (the gRPC watch path).
    let watched = http_get(
        server.addr,
        &format!("/api/v1/namespaces/demo/pods?watch=1&resourceVersion={before}&timeoutSeconds=1"),
    )
    .await
    .unwrap()
    .body_text();
    let events: Vec<Value> = watched
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{watched}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["metadata"]["labels"]["tier"], "fe");
    assert_eq!(
        server
            .ok(&["-n", "demo", "get", "pods", "-l", "tier=fe", "-o", "name"])
            .trim(),
        "pod/web"
    );
    let stale = server.fails(&[
        "-n",
        "demo",
        "label",
        "pod",
        "web",
        "tier=be",
        "--overwrite",
        "--resource-version=1",
    ]);
    assert!(stale.contains("the object has been modified"), "{stale}");
    let keys = support::ok_stdout(&support::etcdctl(
        endpoint,
        &["get", "/registry/", "--prefix", "--keys-only"],
        None,
    ));
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    for key in [
        "/registry/namespaces/demo",
        "/registry/namespaces/default",
        "/registry/pods/demo/web",
        "/registry/minions/node1",
        "/registry/services/specs/demo/svc",
    ] {
        assert!(keys.contains(&key), "no {key} in {keys:?}");
    }
    // RV = mod_revision of the key.
    let rv = server.ok(&[
        "-n",
        "demo",
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let kv = support::ok_stdout(&support::etcdctl(
        endpoint,
        &["get", "/registry/pods/demo/web", "-w", "json"],
        None,
    ));
    let kv: Value = serde_json::from_str(&kv).unwrap();
    assert_eq!(
        kv["kvs"][0]["mod_revision"].as_i64().unwrap().to_string(),
        rv
    );
    server.ok(&["delete", "ns", "demo"]);
    let left = support::ok_stdout(&support::etcdctl(
        endpoint,
        &["get", "/registry/pods/", "--prefix", "--keys-only"],
        None,
    ));
    assert!(left.trim().is_empty(), "{left}");
}

/// Client-side apply (create, unchanged, configured with the last-applied annotation),
/// server-side apply (a repeat writes nothing), `describe` listing the pod's events through
/// their field selector, and a clean exit on SIGTERM.
async fn apply_describe_events_and_sigterm(store: Store) {
    let mut server = ApiServer::start_on(store, &[]).await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: a\n    image: nginx:1\n";
    server.fixture("two.yaml", pod);
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two created"
    );
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two unchanged"
    );
    server.fixture("two.yaml", &pod.replace("nginx:1", "nginx:2"));
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two configured"
    );
    assert_eq!(
        server.ok(&[
            "get",
            "pod",
            "two",
            "-o",
            "jsonpath={.spec.containers[*].image}"
        ]),
        "nginx:2"
    );
    let annotation = server.ok(&[
        "get",
        "pod",
        "two",
        "-o",
        "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    ]);
    assert!(annotation.contains("nginx:2"), "{annotation}");
    server.fixture(
        "ssa.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\n",
    );
    assert_eq!(
        server
            .ok(&["apply", "--server-side", "-f", "ssa.yaml"])
            .trim(),
        "configmap/ssa serverside-applied"
    );
    let rv = |server: &ApiServer| {
        server.ok(&[
            "get",
            "cm",
            "ssa",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let first = rv(&server);
    assert_eq!(
        server
            .ok(&["apply", "--server-side", "-f", "ssa.yaml"])
            .trim(),
        "configmap/ssa serverside-applied"
    );
    assert_eq!(rv(&server), first, "a no-op apply must not write");
    // An event about the pod, and one about another object: describe shows the first only.
    let uid = server.ok(&["get", "pod", "two", "-o", "jsonpath={.metadata.uid}"]);
    for (name, object_name, object_uid, reason) in [
        ("two.1", "two", uid.as_str(), "Scheduled"),
        ("other.1", "other", "0000", "Elsewhere"),
    ] {
        let event = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": object_name, "namespace": "default", "uid": object_uid},
            "reason": reason, "message": "assigned to node1", "type": "Normal",
            "source": {"component": "scheduler"}, "count": 1,
        });
        server.fixture(&format!("{name}.json"), &event.to_string());
        server.ok(&["create", "-f", &format!("{name}.json")]);
    }
    let described = normalized(&server.ok(&["describe", "pod", "two"]));
    let events: Vec<&str> = described
        .lines()
        .skip_while(|line| *line != "Events:")
        .collect();
    assert_eq!(events.len(), 4, "{described}");
    assert!(events[3].starts_with("Normal Scheduled"), "{described}");
    assert!(
        events[3].ends_with("scheduler assigned to node1"),
        "{described}"
    );
    assert_eq!(server.terminate().await, Some(0), "{}", server.log_tail());
}

/// Client-side apply of a two-container pod: an image bump keeps both containers (strategic
/// merge by name under `$setElementOrder`), a repeat is `unchanged`, dropping a container
/// removes it; JSON patch adds a label and a failing `test` op is refused.
async fn apply_keeps_containers_merged_by_name(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    let two = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: a\n    image: nginx:1\n  - name: b\n    image: redis:1\n";
    server.fixture("two.yaml", two);
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two created"
    );
    server.fixture("two.yaml", &two.replace("nginx:1", "nginx:2"));
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two configured"
    );
    assert_eq!(
        server.ok(&[
            "get",
            "pod",
            "two",
            "-o",
            "jsonpath={.spec.containers[*].name} {.spec.containers[*].image}"
        ]),
        "a b nginx:2 redis:1"
    );
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two unchanged"
    );
    server.fixture(
        "two.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: a\n    image: nginx:2\n",
    );
    assert_eq!(
        server.ok(&["apply", "-f", "two.yaml"]).trim(),
        "pod/two configured"
    );
    assert_eq!(
        server.ok(&[
            "get",
            "pod",
            "two",
            "-o",
            "jsonpath={.spec.containers[*].name}"
        ]),
        "a"
    );
    assert_eq!(
        server
            .ok(&[
                "patch",
                "pod",
                "two",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/metadata/labels","value":{"j":"1"}}]"#
            ])
            .trim(),
        "pod/two patched"
    );
    assert_eq!(
        server.ok(&["get", "pod", "two", "-o", "jsonpath={.metadata.labels.j}"]),
        "1"
    );
    let refused = server.fails(&[
        "patch",
        "pod",
        "two",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/metadata/name","value":"x"}]"#,
    ]);
    assert_eq!(
        refused.trim(),
        "The request is invalid: the server rejected our request due to an error in our request"
    );
}

/// A node YAML with `cpu` and `memory` allocatable and a True Ready condition.
fn node_yaml(name: &str, cpu: &str, memory: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n\
         status:\n  allocatable:\n    cpu: \"{cpu}\"\n    memory: {memory}\n    pods: \"110\"\n  \
         capacity:\n    cpu: \"{cpu}\"\n    memory: {memory}\n    pods: \"110\"\n  \
         conditions:\n  - type: Ready\n    status: \"True\"\n    reason: KubeletReady\n    message: ready\n"
    )
}

/// A pod YAML requesting `cpu` and `memory`.
fn pod_yaml(name: &str, cpu: &str, memory: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: sched\nspec:\n  containers:\n  \
         - name: c\n    image: nginx:1\n    resources:\n      requests:\n        cpu: {cpu}\n        memory: {memory}\n"
    )
}

/// Pods by name, as `kubectl get pods -o json` lists them.
fn pods_by_name(server: &ApiServer) -> std::collections::BTreeMap<String, Value> {
    let list: Value =
        serde_json::from_str(&server.ok(&["get", "pods", "-o", "json"])).expect("pod list JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|pod| {
            (
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pod.clone(),
            )
        })
        .collect()
}

/// `mnemo scheduler` against `mnemo apiserver`: three nodes created by kubectl take 30 pods
/// with requests, every one bound, none over a node's capacity, spread within one pod of
/// even; a pod too big for any node stays Pending with `PodScheduled=False`, kube-scheduler's
/// message and a `FailedScheduling` event; a bigger node added later takes it.
async fn scheduler_binds_pods_evenly_within_capacity_and_waits_for_room(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    let nodes: String = ["n1", "n2", "n3"]
        .iter()
        .map(|name| node_yaml(name, "2", "4Gi"))
        .collect::<Vec<_>>()
        .join("---\n");
    let nodes = server.fixture("nodes.yaml", &nodes);
    server.ok(&["create", "-f", &nodes.display().to_string()]);

    let log = std::fs::File::create(server.dir.path().join("scheduler.log")).expect("log");
    let scheduler = Command::new(env!("CARGO_BIN_EXE_mnemo"))
        .args(["scheduler", &format!("--server=http://{}", server.addr)])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn mnemo scheduler");
    // Killed (by PID, as a Child) when the test ends, pass or fail.
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _scheduler = Kill(scheduler);
    let scheduler_log =
        || std::fs::read_to_string(server.dir.path().join("scheduler.log")).unwrap_or_default();

    const PODS: usize = 30;
    let pods: String = (0..PODS)
        .map(|index| pod_yaml(&format!("p{index:02}"), "100m", "128Mi"))
        .collect::<Vec<_>>()
        .join("---\n");
    let pods = server.fixture("pods.yaml", &pods);
    server.ok(&["create", "-f", &pods.display().to_string()]);
    let bound = support::poll_until("every pod is bound", Duration::from_secs(60), || {
        let pods = pods_by_name(&server);
        let all_bound = pods.len() == PODS
            && pods.values().all(|pod| {
                pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            });
        async move { all_bound.then_some(pods) }
    })
    .await;
    let mut per_node: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for pod in bound.values() {
        *per_node
            .entry(pod["spec"]["nodeName"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}\n{}", scheduler_log());
    let (fewest, most) = (
        per_node.values().min().copied().unwrap(),
        per_node.values().max().copied().unwrap(),
    );
    assert!(most - fewest <= 1, "uneven spread {per_node:?}");
    // 10 pods of 100m and 128Mi on a node of 2 CPUs and 4Gi: within capacity.
    assert!(most * 100 <= 2000 && most * 128 <= 4096, "{per_node:?}");

    let big = server.fixture("big.yaml", &pod_yaml("big", "8", "1Gi"));
    server.ok(&["create", "-f", &big.display().to_string()]);
    let message = support::poll_until(
        "big is marked unschedulable",
        Duration::from_secs(30),
        || {
            let pod = pods_by_name(&server).remove("big");
            async move {
                let pod = pod?;
                let conditions = pod["status"]["conditions"].as_array()?.clone();
                conditions
                    .into_iter()
                    .find(|condition| {
                        condition["type"] == "PodScheduled"
                            && condition["status"] == "False"
                            && condition["reason"] == "Unschedulable"
                    })
                    .and_then(|condition| condition["message"].as_str().map(str::to_owned))
            }
        },
    )
    .await;
    assert_eq!(message, "0/3 nodes are available: 3 Insufficient cpu.");
    assert!(pods_by_name(&server)["big"]["spec"]["nodeName"].is_null());
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big,reason=FailedScheduling",
        "-o",
        "json",
    ]);
    assert!(
        events.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "{events}"
    );

    let roomy = server.fixture("roomy.yaml", &node_yaml("n4", "16", "32Gi"));
    server.ok(&["create", "-f", &roomy.display().to_string()]);
    let node = support::poll_until("big lands on the new node", Duration::from_secs(30), || {
        let node = pods_by_name(&server)["big"]["spec"]["nodeName"]
            .as_str()
            .map(str::to_owned);
        async move { node }
    })
    .await;
    assert_eq!(node, "n4", "{}", scheduler_log());
}

/// One length-delimited protobuf field (wire type 2), for hand-made kube envelopes.
fn pb_field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let length = u8::try_from(bytes.len()).expect("short test fields");
    assert!(number < 16 && length < 128, "one-byte tag and length");
    [&[number << 3 | 2, length][..], bytes].concat()
}

/// kube's protobuf envelope around `raw`, an encoded object of `kind` in API version v1.
fn pb_envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [pb_field(1, b"v1"), pb_field(2, kind.as_bytes())].concat();
    let unknown = [pb_field(1, &type_meta), pb_field(2, raw)].concat();
    [&b"k8s\0"[..], &unknown].concat()
}

/// kubectl 1.32's generator commands post protobuf bodies (apiserver.md §3); the objects they
/// create read back as the command asked, and protobuf the server cannot decode completely is
/// refused with a 400 that says where, never stored with parts missing.
async fn generators_send_protobuf_bodies(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    assert_eq!(
        server.ok(&["create", "namespace", "gen"]).trim(),
        "namespace/gen created"
    );
    let namespace = server.get_json(&["get", "ns", "gen"]);
    assert_eq!(namespace["status"]["phase"], "Active", "{namespace}");
    assert!(namespace["metadata"]["uid"].is_string(), "{namespace}");

    let created = server.ok(&[
        "-n",
        "gen",
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
        "--from-literal=empty=",
    ]);
    assert_eq!(created.trim(), "configmap/settings created");
    let config = server.get_json(&["-n", "gen", "get", "cm", "settings"]);
    assert_eq!(
        config["data"],
        json!({"mode": "fast", "empty": ""}),
        "{config}"
    );

    let created = server.ok(&[
        "-n",
        "gen",
        "create",
        "secret",
        "generic",
        "token",
        "--from-literal=key=s3cret",
    ]);
    assert_eq!(created.trim(), "secret/token created");
    let secret = server.get_json(&["-n", "gen", "get", "secret", "token"]);
    assert_eq!(secret["type"], "Opaque", "{secret}");
    // "s3cret" in base64, kube's JSON form of a secret's bytes.
    assert_eq!(secret["data"], json!({"key": "czNjcmV0"}), "{secret}");

    let created = server.ok(&[
        "-n",
        "gen",
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=0",
        "--port=8080",
    ]);
    assert_eq!(created.trim(), "deployment.apps/web created");
    let deployment = server.get_json(&["-n", "gen", "get", "deploy", "web"]);
    // A replica count of zero was asked for: it must not read as absent (defaulted to one).
    assert_eq!(deployment["spec"]["replicas"], 0, "{deployment}");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app": "web"})
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "nginx", "{deployment}");
    assert_eq!(container["image"], "nginx:1.27", "{deployment}");
    // Zeros kube's encoder writes for unset plain fields are not values the user gave.
    assert_eq!(
        container["ports"],
        json!([{"containerPort": 8080}]),
        "{deployment}"
    );
    assert!(
        deployment["spec"]["template"]["spec"]
            .get("hostNetwork")
            .is_none()
    );
    let replicas = server.ok(&["-n", "gen", "scale", "deploy", "web", "--replicas=2"]);
    assert_eq!(replicas.trim(), "deployment.apps/web scaled");

    let created = server.ok(&[
        "-n",
        "gen",
        "create",
        "service",
        "nodeport",
        "edge",
        "--tcp=80:web",
    ]);
    assert_eq!(created.trim(), "service/edge created");
    let service = server.get_json(&["-n", "gen", "get", "svc", "edge"]);
    assert_eq!(service["spec"]["type"], "NodePort", "{service}");
    // An int-or-string target port given by name stays a string.
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"], "web",
        "{service}"
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 80, "{service}");
    let created = server.ok(&[
        "-n",
        "gen",
        "create",
        "service",
        "clusterip",
        "api",
        "--tcp=443:8443",
    ]);
    assert_eq!(created.trim(), "service/api created");
    let service = server.get_json(&["-n", "gen", "get", "svc", "api"]);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8443, "{service}");
    let table = normalized(&server.ok(&["-n", "gen", "get", "svc"]));
    assert!(table.contains("api ClusterIP"), "{table}");

    let created = server.ok(&["-n", "gen", "create", "serviceaccount", "bot"]);
    assert_eq!(created.trim(), "serviceaccount/bot created");
    let account = server.get_json(&["-n", "gen", "get", "sa", "bot"]);
    assert_eq!(account["metadata"]["namespace"], "gen", "{account}");

    // An existing name: kube's AlreadyExists, as for a JSON body.
    let again = server.fails(&["create", "namespace", "gen"]);
    assert_eq!(
        again.trim(),
        "Error from server (AlreadyExists): namespaces \"gen\" already exists"
    );

    // A kind whose protobuf is not decoded, and a field the schema lacks (number 15 of
    // ObjectMeta is unused): 400 naming the problem, nothing stored.
    let refused = |path: &'static str, body: Vec<u8>, expected: &'static str| {
        let server = &server;
        async move {
            let (status, reply) = server
                .request_with("POST", path, ("application/vnd.kubernetes.protobuf", &body))
                .await;
            assert_eq!(status, 400, "{reply}");
            let message = reply["message"].as_str().unwrap_or_default();
            assert!(message.contains(expected), "{reply}");
        }
    };
    let account = pb_envelope("PersistentVolume", &pb_field(1, &pb_field(1, b"p")));
    refused(
        "/api/v1/namespaces/gen/pods",
        account,
        "v1 PersistentVolume",
    )
    .await;
    let meta = [pb_field(1, b"odd"), pb_field(15, b"?")].concat();
    let namespace = pb_envelope("Namespace", &pb_field(1, &meta));
    refused(
        "/api/v1/namespaces",
        namespace,
        "field number 15 at metadata",
    )
    .await;
    let missing = server.fails(&["get", "ns", "odd"]);
    assert!(missing.contains("NotFound"), "{missing}");
}

/// Fields a kind does not have (a typo in a manifest): kubectl's default `--validate=strict`
/// gets kube's strict decoding error listing each, `--validate=warn` a warning each and
/// `--validate=false` nothing; in both of those the field is dropped, as kube drops it.
async fn unknown_fields_follow_field_validation(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    server.fixture(
        "typo.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: typo\n  labelz: {a: b}\nspec:\n  \
         containers:\n  - name: c\n    image: nginx\n    imagee: nginx:1.27\n    \
         resources: {requests: {cpu: 1}}\n",
    );
    // kubectl runs in the fixtures' directory and names the file as given.
    let typo = "typo.yaml";
    assert_eq!(
        server.fails(&["create", "-f", typo]).trim(),
        "Error from server (BadRequest): error when creating \"typo.yaml\": Pod in version \"v1\" \
         cannot be handled as a Pod: strict decoding error: unknown field \"metadata.labelz\", \
         unknown field \"spec.containers[0].imagee\""
    );
    assert!(server.fails(&["get", "pod", "typo"]).contains("NotFound"));

    let warned = server.kubectl(&["create", "-f", typo, "--validate=warn"]);
    assert!(warned.status.success(), "{warned:?}");
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains("Warning: unknown field \"metadata.labelz\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("Warning: unknown field \"spec.containers[0].imagee\""),
        "{stderr}"
    );
    let pod = server.get_json(&["get", "pod", "typo"]);
    assert!(pod["metadata"].get("labelz").is_none(), "{pod}");
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx", "{pod}");
    assert!(
        pod["spec"]["containers"][0].get("imagee").is_none(),
        "{pod}"
    );
    // A quantity written as a bare number is kept as kube keeps it, a string.
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"], "1",
        "{pod}"
    );

    server.fixture(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: quiet\ndata: {a: b}\ndta: {x: z}\n",
    );
    let quiet = server.kubectl(&["create", "-f", "config.yaml", "--validate=false"]);
    assert!(quiet.status.success(), "{quiet:?}");
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("Warning"),
        "{quiet:?}"
    );
    let stored = server.get_json(&["get", "cm", "quiet"]);
    assert_eq!(stored["data"], json!({"a": "b"}), "{stored}");
    assert!(stored.get("dta").is_none(), "{stored}");

    // A patch is held to the same rules as the object it produces; `kubectl patch` sends no
    // level, so kube's default (Warn) applies.
    let patched = server.kubectl(&[
        "patch",
        "cm",
        "quiet",
        "-p",
        r#"{"dta":{"x":"y"},"data":{"b":"c"}}"#,
    ]);
    assert!(patched.status.success(), "{patched:?}");
    let stderr = String::from_utf8_lossy(&patched.stderr);
    assert!(
        stderr.contains("Warning: unknown field \"dta\""),
        "{stderr}"
    );
    let stored = server.get_json(&["get", "cm", "quiet"]);
    assert_eq!(stored["data"], json!({"a": "b", "b": "c"}), "{stored}");
    assert!(stored.get("dta").is_none(), "{stored}");

    let (status, body) = server
        .request_with(
            "POST",
            "/api/v1/namespaces/default/configmaps?fieldValidation=Sometimes",
            ("application/json", br#"{"metadata":{"name":"x"}}"#),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"Sometimes\""),
        "{body}"
    );
}

/// How long the API server may take to serve writes again after a member of its 3-member
/// cluster dies: a new election (500 ms in tests) and calls resent past the dead endpoint.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// kubectl commands in a row that must all succeed once the API server serves again.
const ROUNDS_AFTER_FAILOVER: usize = 5;
/// Scheduling and kubectl start-up on top of the etcd client's deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

fn configmap_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
}

/// The API server's command line, read from /proc.
fn cmdline(child: &Child) -> String {
    let path = format!("/proc/{}/cmdline", child.id());
    let raw = std::fs::read(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// `--etcd-endpoints` lists three members; killing the first one listed (the one the server
/// used to stay on) leaves kubectl get, create, list and watch working: calls are balanced
/// over all three and resent past the dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_endpoints_survive_losing_the_first_member() {
    let mut server = ApiServer::start_on(Store::MnemoCluster, &[]).await;
    let first = server.cluster_mut().member(0).endpoint();
    let command = cmdline(server.child.as_ref().expect("server running"));
    assert!(
        command.contains(&format!("--etcd-endpoints={first},")),
        "member 0 ({first}) is not listed first: {command}"
    );
    server.fixture("ns.yaml", NAMESPACE_DEMO);
    server.ok(&["create", "-f", "ns.yaml"]);
    server.fixture("before.yaml", &configmap_yaml("before"));
    server.ok(&["-n", "demo", "create", "-f", "before.yaml"]);
    // A watch open across the kill, whichever member serves it.
    let (mut early, early_path) = server.watch_configmaps("early");
    let rows = |path: &Path| normalized(&std::fs::read_to_string(path).unwrap_or_default());
    support::poll_until("the early watch lists before", WATCH_WAIT, || async {
        rows(&early_path).contains("ADDED before").then_some(())
    })
    .await;

    let killed = server.cluster_mut().kill9(0);
    assert!(!killed.success(), "member 0 was not killed: {killed}");
    let started = Instant::now();
    // The first write through may wait for a new election; each attempt uses a new name, so
    // one that failed on the server's side but was applied cannot make the next collide.
    let mut last_error = String::new();
    let attempts_max = FAILOVER_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for attempt in 0..=attempts_max {
        assert!(
            attempt < attempts_max && started.elapsed() < FAILOVER_TIMEOUT,
            "no create succeeded within {FAILOVER_TIMEOUT:?} after the kill; last: {last_error}\n{}\n{}",
            server.log_tail(),
            server.cluster_mut().log_tails()
        );
        let name = format!("probe-{attempt}");
        let path = server.fixture(&format!("{name}.yaml"), &configmap_yaml(&name));
        let output = server.kubectl(&["-n", "demo", "create", "-f", &path.display().to_string()]);
        if output.status.success() {
            break;
        }
        last_error = String::from_utf8_lossy(&output.stderr).into_owned();
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let recovered = started.elapsed();
    for round in 0..ROUNDS_AFTER_FAILOVER {
        let name = format!("after-{round}");
        let path = server.fixture(&format!("{name}.yaml"), &configmap_yaml(&name));
        server.ok(&["-n", "demo", "create", "-f", &path.display().to_string()]);
        let got = server.ok(&["-n", "demo", "get", "configmap", &name, "-o", "name"]);
        assert_eq!(got.trim(), format!("configmap/{name}"));
        let listed = server.ok(&["-n", "demo", "get", "configmaps", "-o", "name"]);
        for expected in ["configmap/before", &format!("configmap/{name}")] {
            assert!(listed.lines().any(|line| line == expected), "{listed}");
        }
    }

    // A watch opened after the kill sees a change made after it.
    let (mut late, late_path) = server.watch_configmaps("late");
    support::poll_until("the late watch lists before", WATCH_WAIT, || async {
        rows(&late_path).contains("ADDED before").then_some(())
    })
    .await;
    server.fixture("watched.yaml", &configmap_yaml("watched"));
    server.ok(&["-n", "demo", "create", "-f", "watched.yaml"]);
    for (what, path) in [("late", &late_path), ("early", &early_path)] {
        let deadline = Instant::now() + WATCH_WAIT;
        while !rows(path).contains("ADDED watched") {
            assert!(
                Instant::now() < deadline,
                "the {what} watch did not print the create within {WATCH_WAIT:?}:\n{}\nstderr: {}\n{}",
                rows(path),
                std::fs::read_to_string(server.dir.path().join(format!("{what}-watch.err")))
                    .unwrap_or_default(),
                server.log_tail()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    for watcher in [&mut early, &mut late] {
        let _ = watcher.kill();
        let _ = watcher.wait();
    }
    eprintln!("writes served again {recovered:?} after the kill");
}

/// A member that accepts connections but never answers (SIGSTOP) costs a request the etcd
/// client's deadline, answered as kube-apiserver answers a request that ran out of time: 504
/// Timeout. Once the member resumes, requests succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_etcd_member_answers_504_at_the_deadline() {
    let member = Member::start().await;
    let flag = format!("--etcd-endpoints={}", member.endpoint());
    let server = ApiServer::start_with(&[&flag], Backing::Single { member }, &[]).await;
    server.fixture("before.yaml", &configmap_yaml("before"));
    server.ok(&["create", "-f", "before.yaml"]);
    server.single_member().signal("STOP");
    let started = Instant::now();
    let output = server.kubectl(&["get", "configmap", "before"]);
    let elapsed = started.elapsed();
    server.single_member().signal("CONT");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "Error from server (Timeout): Timeout: request did not complete within requested \
             timeout - context deadline exceeded: no answer within {CLIENT_REQUEST_TIMEOUT:?}"
        )
    );
    assert!(
        elapsed >= CLIENT_REQUEST_TIMEOUT && elapsed < CLIENT_REQUEST_TIMEOUT + DEADLINE_SLACK,
        "the request took {elapsed:?}"
    );
    let got = server.ok(&["get", "configmap", "before", "-o", "name"]);
    assert_eq!(got.trim(), "configmap/before");
}

/// With no `--etcd-endpoints` entry reachable, the API server exits at once with an error
/// naming each endpoint and why, as kube-apiserver does, instead of serving errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_endpoints_fail_start_up() {
    let closed: Vec<String> = (0..2)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_mnemo"))
        .args([
            "apiserver".to_string(),
            format!("--listen=127.0.0.1:{}", free_port()),
            format!("--etcd-endpoints={}", closed.join(",")),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run mnemo apiserver");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "mnemo apiserver: cannot use --etcd-endpoints={}: transport: no endpoint could be \
             reached: {}: transport error: tcp connect error: Connection refused",
            closed.join(","),
            closed[0]
        )) && stderr.contains(&format!("; {}: transport error: ", closed[1])),
        "{stderr}"
    );
    assert!(
        elapsed < mnemo::limits::CLIENT_CONNECT_TIMEOUT + DEADLINE_SLACK,
        "start-up failed only after {elapsed:?}"
    );
}

/// Events are written on an etcd lease and vanish after `--event-ttl`, as kube-apiserver's;
/// other objects, and an event's update, keep theirs (an update does not drop the lease).
async fn events_expire_after_the_event_ttl(store: Store) {
    const TTL_SECONDS: u64 = 3;
    /// Lease expiry is noticed by the store's leader within about a second.
    const EXPIRY_SLACK: Duration = Duration::from_secs(10);
    let ttl = format!("--event-ttl={TTL_SECONDS}s");
    let server = ApiServer::start_on(store, &[&ttl]).await;
    let event = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Tested", "message": "m", "type": "Normal", "count": 1,
        })
    };
    let created_at = Instant::now();
    for name in ["first", "second"] {
        let (code, body) = server
            .request(
                "POST",
                "/api/v1/namespaces/default/events",
                Some(&event(name)),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = server
        .request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stays"}})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    // Both events share one lease (granted for the first, reused for the second).
    let lease_of = |key: &str| -> i64 {
        let output = support::ok_stdout(&support::etcdctl(
            &server.etcd_endpoint,
            &["get", key, "-w", "json"],
            None,
        ));
        let reply: Value =
            serde_json::from_str(&output).unwrap_or_else(|e| panic!("{e}: {output}"));
        reply["kvs"][0]["lease"].as_i64().unwrap_or(0)
    };
    let first = lease_of("/registry/events/default/first");
    assert_ne!(first, 0, "an event is written on a lease");
    assert_eq!(lease_of("/registry/events/default/second"), first);
    assert_eq!(lease_of("/registry/configmaps/default/stays"), 0);
    // An update is written on a lease too (as kube: a changed event lives a TTL from then).
    let patched = server.ok(&[
        "patch",
        "event",
        "second",
        "--type=merge",
        "-p",
        r#"{"count":2}"#,
    ]);
    assert!(patched.contains("patched"), "{patched}");
    assert_ne!(lease_of("/registry/events/default/second"), 0);

    let expiry = (created_at + Duration::from_secs(TTL_SECONDS) + EXPIRY_SLACK)
        .saturating_duration_since(Instant::now());
    support::poll_until("the events expire", expiry, || async {
        server
            .ok(&["get", "events", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        created_at.elapsed() >= Duration::from_secs(TTL_SECONDS),
        "events went before their TTL"
    );
    assert_eq!(
        server.ok(&["get", "cm", "stays", "-o", "name"]).trim(),
        "configmap/stays"
    );
}

/// A lease Events are being created on that the store no longer has (revoked by hand, or a
/// restored store) is replaced: the next event is created on a new one, not refused.
async fn a_revoked_event_lease_is_replaced(store: Store) {
    let server = ApiServer::start_on(store, &[]).await;
    let event = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Tested", "message": "m", "type": "Normal",
        })
    };
    let etcdctl =
        |args: &[&str]| support::ok_stdout(&support::etcdctl(&server.etcd_endpoint, args, None));
    let lease_of = |name: &str| -> i64 {
        let key = format!("/registry/events/default/{name}");
        let reply: Value = serde_json::from_str(&etcdctl(&["get", &key, "-w", "json"])).unwrap();
        reply["kvs"][0]["lease"].as_i64().unwrap_or(0)
    };
    let (code, body) = server
        .request(
            "POST",
            "/api/v1/namespaces/default/events",
            Some(&event("before")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let lease = lease_of("before");
    assert_ne!(lease, 0, "an event is written on a lease");
    // Within the default TTL's reuse window (a minute), the server would reuse this lease.
    etcdctl(&["lease", "revoke", &format!("{lease:x}")]);
    let (code, body) = server
        .request(
            "POST",
            "/api/v1/namespaces/default/events",
            Some(&event("after")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let renewed = lease_of("after");
    assert!(renewed != 0 && renewed != lease, "{renewed} after {lease}");
    assert!(
        server
            .fails(&["get", "event", "before"])
            .contains("NotFound")
    );
}
