//! The two `KvClient` implementations (in-process and gRPC) give the same answers to the same
//! script, so an embedder can switch between them.

use mnemo::client::{ClientError, EtcdError, GrpcClient, KvClient, LocalClient, Reply};
use mnemo::embed::{Config, Node};
use mnemo::types::{
    Compare, CompareResult, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, SortOrder,
    SortTarget, TxnRequest,
};

use crate::support::Member;

/// Everything a script observed, with the member-specific header fields left out.
#[derive(Debug, PartialEq)]
struct Observed(Vec<String>);

fn record<T: std::fmt::Debug>(observed: &mut Observed, reply: Result<Reply<T>, ClientError>) {
    observed.0.push(match reply {
        Ok(reply) => format!("rev={} {:?}", reply.header.revision, reply.response),
        Err(error) => format!("error {error}"),
    });
}

async fn script(client: &impl KvClient) -> Observed {
    let mut observed = Observed(Vec::new());
    for index in 0..5 {
        record(
            &mut observed,
            client
                .put(PutRequest::new(format!("k{index}"), format!("v{index}")).with_prev_kv())
                .await,
        );
    }
    record(
        &mut observed,
        client
            .put(PutRequest::new("k1", "again").with_prev_kv())
            .await,
    );
    record(
        &mut observed,
        client
            .range(
                RangeRequest::prefix("k")
                    .sort(SortTarget::Mod, SortOrder::Descend)
                    .limit(3),
            )
            .await,
    );
    let swap = TxnRequest::when([Compare::value("k1", CompareResult::Equal, "again")])
        .and_then([
            RequestOp::from(PutRequest::new("k1", "swapped")),
            RangeRequest::key("k1").into(),
        ])
        .or_else([RangeRequest::key("k1").into()]);
    record(&mut observed, client.txn(swap).await);
    record(
        &mut observed,
        client
            .delete_range(DeleteRangeRequest::prefix("k").with_prev_kv())
            .await,
    );
    record(
        &mut observed,
        client.range(RangeRequest::prefix("k").at_revision(3)).await,
    );
    observed.0.push(format!(
        "{:?}",
        client.compact(4, false).await.map(|header| header.revision)
    ));
    record(
        &mut observed,
        client.range(RangeRequest::prefix("k").at_revision(3)).await,
    );
    record(
        &mut observed,
        client.put(PutRequest::new("", "no key")).await,
    );
    record(
        &mut observed,
        client
            .put(PutRequest::new("leased", "v").with_lease(42))
            .await,
    );
    observed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_grpc_clients_agree() {
    let member = Member::start().await;
    let remote = GrpcClient::connect(&member.endpoint())
        .await
        .expect("connect");
    let over_grpc = script(&remote).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().join("embedded"),
        listen_client_urls: vec!["http://127.0.0.1:0".parse().expect("url")],
        ..Config::default()
    };
    let node = Node::start(config).await.expect("embedded member");
    let local: LocalClient = node.client();
    let in_process = script(&local).await;
    node.shutdown().await;

    assert_eq!(in_process, over_grpc);
    // The script did reach the errors it means to check.
    assert!(
        over_grpc
            .0
            .iter()
            .any(|line| line == "error etcdserver: mvcc: required revision has been compacted")
    );
    assert!(
        over_grpc
            .0
            .iter()
            .any(|line| line == "error etcdserver: key is not provided")
    );
    assert!(
        over_grpc
            .0
            .iter()
            .any(|line| line == "error etcdserver: requested lease not found")
    );
    // A client kept after its member stopped is told so, and keeps nothing open.
    assert_eq!(
        local.get("k1").await,
        Err(ClientError::Etcd(EtcdError::Stopped))
    );
}
