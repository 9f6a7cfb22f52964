//! Runs a mnemo member inside this process and uses it without gRPC.

use mnemo::client::KvClient;
use mnemo::embed::{Config, Node};
use mnemo::types::{Compare, CompareResult, PutRequest, RangeRequest, TxnRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: data_dir.path().join("example.mnemo"),
        listen_client_urls: vec!["http://127.0.0.1:0".parse()?],
        ..Config::default()
    };
    let node = Node::start(config).await?;
    let client = node.client();

    let revision = client.set("app/greeting", "hello").await?;
    // Change the value only if nobody else did since our write.
    let swap = TxnRequest::when([Compare::mod_revision(
        "app/greeting",
        CompareResult::Equal,
        revision,
    )])
    .and_then([PutRequest::new("app/greeting", "hello again").into()])
    .or_else([RangeRequest::key("app/greeting").into()]);
    assert!(client.txn(swap).await?.response.succeeded);

    let listing = client.range(RangeRequest::prefix("app/")).await?;
    for kv in &listing.response.kvs {
        println!(
            "{} = {}",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value)
        );
    }
    node.shutdown().await;
    Ok(())
}
