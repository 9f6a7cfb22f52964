//! Encoding and decoding of the hot messages: the etcd protobufs the gRPC layer handles per
//! request (`PutRequest`, `RangeResponse` with 10 and 100 key-values, `WatchResponse` with
//! 10 events), with prost as tonic runs it, and the Raft entry payload of a put (the apply
//! codec, `apply::codec`), which every member encodes or decodes once per write.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use mnemo::apply::codec::{Proposal, decode_proposal, encode_proposal};
use mnemo::pb::etcdserverpb::{PutRequest, RangeResponse, ResponseHeader, WatchResponse};
use mnemo::pb::mvccpb::{self, KeyValue};
use prost::Message;

use super::{VALUE_BYTES, budget};

/// Key-values per range response.
const RANGE_KVS: [usize; 2] = [10, 100];
/// Events per watch response.
const WATCH_EVENTS: usize = 10;
/// Proposal id of the apply-codec benchmark (any value; the codec stores it).
const PROPOSAL_ID: u64 = 42;

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 0x1234_5678_9abc_def0,
        member_id: 0x0fed_cba9_8765_4321,
        revision: 1_000_000,
        raft_term: 7,
    })
}

fn key_value(index: usize) -> KeyValue {
    let revision = 1_000 + index as i64;
    KeyValue {
        key: Bytes::from(format!("/registry/pods/default/pod-{index:06}")),
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        value: Bytes::from(vec![b'v'; VALUE_BYTES]),
        lease: 0,
    }
}

/// Benchmarks encoding `message` into a reused buffer (as tonic's encoder does) and
/// decoding it from shared bytes (as tonic hands a frame to prost), after checking that
/// the round trip gives the message back.
fn round_trip<M>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, message: &M)
where
    M: Message + Default + PartialEq + std::fmt::Debug,
{
    let encoded = Bytes::from(message.encode_to_vec());
    assert_eq!(&M::decode(encoded.clone()).expect("decode"), message);
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    let mut buffer = BytesMut::with_capacity(encoded.len());
    group.bench_function(format!("{name}/encode"), |bench| {
        bench.iter(|| {
            buffer.clear();
            message.encode(&mut buffer).expect("buffer grows");
            buffer.len()
        });
    });
    group.bench_function(format!("{name}/decode"), |bench| {
        bench.iter(|| M::decode(encoded.clone()).expect("decode"));
    });
}

pub fn benches(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("codec");
    budget(&mut group, 30, Duration::from_secs(1));

    let put = PutRequest {
        key: Bytes::from_static(b"/registry/pods/default/pod-000001"),
        value: Bytes::from(vec![b'v'; VALUE_BYTES]),
        ..PutRequest::default()
    };
    round_trip(
        &mut group,
        &format!("pb_put_request/value_bytes={VALUE_BYTES}"),
        &put,
    );

    for kvs in RANGE_KVS {
        let response = RangeResponse {
            header: header(),
            kvs: (0..kvs).map(key_value).collect(),
            more: false,
            count: kvs as i64,
        };
        round_trip(
            &mut group,
            &format!("pb_range_response/kvs={kvs}/value_bytes={VALUE_BYTES}"),
            &response,
        );
    }

    let watch = WatchResponse {
        header: header(),
        watch_id: 1,
        events: (0..WATCH_EVENTS)
            .map(|index| mvccpb::Event {
                r#type: mvccpb::event::EventType::Put as i32,
                kv: Some(key_value(index)),
                prev_kv: None,
            })
            .collect(),
        ..WatchResponse::default()
    };
    round_trip(
        &mut group,
        &format!("pb_watch_response/events={WATCH_EVENTS}/value_bytes={VALUE_BYTES}"),
        &watch,
    );

    let proposal = Proposal::Put(mnemo::types::PutRequest::new(
        put.key.clone(),
        put.value.clone(),
    ));
    let entry = encode_proposal(PROPOSAL_ID, &proposal);
    assert_eq!(
        decode_proposal(&entry).expect("decode"),
        (PROPOSAL_ID, proposal.clone())
    );
    let name = format!("apply_put_proposal/value_bytes={VALUE_BYTES}");
    group.throughput(Throughput::Bytes(entry.len() as u64));
    group.bench_function(format!("{name}/encode"), |bench| {
        bench.iter(|| encode_proposal(PROPOSAL_ID, &proposal));
    });
    group.bench_function(format!("{name}/decode"), |bench| {
        bench.iter(|| decode_proposal(&entry).expect("decode"));
    });
    group.finish();
}
