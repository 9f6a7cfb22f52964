//! gRPC server metrics as etcd reports them (go-grpc-prometheus's names): per method, calls
//! started (`grpc_server_started_total`), calls handled by final status code
//! (`grpc_server_handled_total`), and stream messages received and sent
//! (`grpc_server_msg_received_total`, `grpc_server_msg_sent_total`).
//!
//! A tower layer in front of every service of the client port. It reads only what crosses
//! the wire: the request path, the gRPC length prefixes in the bodies (one per message), and
//! the `grpc-status` in the response headers (a trailers-only answer, which is how errors
//! before the first message travel) or trailers. It must not look inside messages or change
//! anything it passes on. Only the methods of [`METHODS`] are counted, so a client calling
//! made-up paths cannot grow the label set; HTTP/1.1 requests (`/health`, `/metrics`) pass
//! uncounted.

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;

use crate::metrics;

/// The calling patterns of go-grpc-prometheus's `grpc_type` label.
const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

/// Every method served on the client port: (service, method, `grpc_type`).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "RangeStream", SERVER_STREAM),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Maintenance", "Downgrade", UNARY),
    ("etcdserverpb.Auth", "AuthEnable", UNARY),
    ("etcdserverpb.Auth", "AuthDisable", UNARY),
    ("etcdserverpb.Auth", "AuthStatus", UNARY),
    ("etcdserverpb.Auth", "Authenticate", UNARY),
    ("etcdserverpb.Auth", "UserAdd", UNARY),
    ("etcdserverpb.Auth", "UserGet", UNARY),
    ("etcdserverpb.Auth", "UserList", UNARY),
    ("etcdserverpb.Auth", "UserDelete", UNARY),
    ("etcdserverpb.Auth", "UserChangePassword", UNARY),
    ("etcdserverpb.Auth", "UserGrantRole", UNARY),
    ("etcdserverpb.Auth", "UserRevokeRole", UNARY),
    ("etcdserverpb.Auth", "RoleAdd", UNARY),
    ("etcdserverpb.Auth", "RoleGet", UNARY),
    ("etcdserverpb.Auth", "RoleList", UNARY),
    ("etcdserverpb.Auth", "RoleDelete", UNARY),
    ("etcdserverpb.Auth", "RoleGrantPermission", UNARY),
    ("etcdserverpb.Auth", "RoleRevokePermission", UNARY),
    ("v3electionpb.Election", "Campaign", UNARY),
    ("v3electionpb.Election", "Proclaim", UNARY),
    ("v3electionpb.Election", "Leader", UNARY),
    ("v3electionpb.Election", "Observe", SERVER_STREAM),
    ("v3electionpb.Election", "Resign", UNARY),
    ("v3lockpb.Lock", "Lock", UNARY),
    ("v3lockpb.Lock", "Unlock", UNARY),
];

/// gRPC's code names as go-grpc-prometheus writes them in `grpc_code`, indexed by number.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The code recorded for a call whose response ended without a status: the client went away
/// (or the connection broke) before the server finished, which gRPC reports as Canceled.
const CODE_CANCELED: usize = 1;
/// The code recorded for a `grpc-status` that is not a code.
const CODE_UNKNOWN: usize = 2;

/// The bytes of a gRPC message prefix: a compression flag, then the length (u32 big-endian).
const MESSAGE_PREFIX_BYTES: usize = 5;

/// Every method's counters, resolved once (at the first call or [`register_series`]), so a
/// call only bumps atomics and never looks a label set up under the registry's lock.
static HANDLES: LazyLock<Vec<MethodHandles>> = LazyLock::new(|| {
    let registry = metrics::get();
    METHODS
        .iter()
        .map(|&(service, name, kind)| {
            let labels = [kind, service, name];
            MethodHandles {
                labels,
                started: registry.grpc_started.with_label_values(&labels),
                received: registry.grpc_msg_received.with_label_values(&labels),
                sent: registry.grpc_msg_sent.with_label_values(&labels),
                handled: CODE_NAMES.map(|code| {
                    registry
                        .grpc_handled
                        .with_label_values(&[kind, service, name, code])
                }),
            }
        })
        .collect()
});

/// Creates every method's series at zero, as etcd does at start, so that a rate or an alert
/// over a method that was never called reads 0 instead of finding no series.
pub fn register_series() {
    LazyLock::force(&HANDLES);
}

/// Wraps the client port's service in [`Metered`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MeteredLayer;

impl<S> tower::Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

/// Counts each call of a known method; see the module docs.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
}

/// The counters of one known method.
#[derive(Debug)]
struct MethodHandles {
    /// `grpc_type`, `grpc_service`, `grpc_method`.
    labels: [&'static str; 3],
    started: IntCounter,
    received: IntCounter,
    sent: IntCounter,
    /// By code number, as [`CODE_NAMES`].
    handled: [IntCounter; CODE_NAMES.len()],
}

/// One call of a known method.
#[derive(Clone, Copy, Debug)]
struct Method(&'static MethodHandles);

impl Method {
    /// The method a gRPC request calls, if it is one of [`METHODS`].
    fn of<B>(request: &http::Request<B>) -> Option<Method> {
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        if !is_grpc {
            return None;
        }
        let (service, name) = request.uri().path().strip_prefix('/')?.split_once('/')?;
        HANDLES
            .iter()
            .find(|handles| handles.labels[1] == service && handles.labels[2] == name)
            .map(Method)
    }

    #[cfg(test)]
    fn labels(self) -> [&'static str; 3] {
        self.0.labels
    }

    /// Counts the call as handled with the code of `grpc-status` `status`.
    fn handled(self, status: &http::HeaderValue) {
        self.0.handled[code_number(status)].inc();
    }

    /// Counts the call as handled with Canceled.
    fn canceled(self) {
        self.0.handled[CODE_CANCELED].inc();
    }
}

/// The code number of a `grpc-status` value; Unknown for anything that is not one.
fn code_number(status: &http::HeaderValue) -> usize {
    std::str::from_utf8(status.as_bytes())
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|number| *number < CODE_NAMES.len())
        .unwrap_or(CODE_UNKNOWN)
}

impl<S, ResBody> tower::Service<http::Request<tonic::body::Body>> for Metered<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(method) = Method::of(&request) else {
            let answer = self.inner.call(request);
            return Box::pin(async move { Ok(answer.await?.map(tonic::body::Body::new)) });
        };
        method.0.started.inc();
        let received = method.0.received.clone();
        let sent = method.0.sent.clone();
        let request =
            request.map(|body| tonic::body::Body::new(CountedBody::new(body, received, None)));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // A trailers-only answer (an error before any message) carries the status in
            // its headers and has no body to watch.
            let pending = match response.headers().get("grpc-status") {
                Some(status) => {
                    method.handled(status);
                    None
                }
                None => Some(method),
            };
            Ok(response.map(|body| tonic::body::Body::new(CountedBody::new(body, sent, pending))))
        })
    }
}

/// Finds where messages start in a stream of gRPC frames split at arbitrary points.
#[derive(Debug, Default)]
struct MessageCounter {
    /// Bytes of the current prefix seen so far (0 while inside a message body).
    prefix_seen: usize,
    /// The length bytes of the current prefix.
    length: [u8; 4],
    /// Bytes of the current message body not seen yet.
    remaining: u64,
}

impl MessageCounter {
    /// Consumes `data`, returning how many messages started in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skipped = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = &data[skipped..];
                self.remaining -= skipped as u64;
                continue;
            }
            // Inside a prefix: byte 0 is the compression flag, bytes 1..5 the length.
            if self.prefix_seen > 0 {
                self.length[self.prefix_seen - 1] = data[0];
            }
            self.prefix_seen += 1;
            data = &data[1..];
            if self.prefix_seen == MESSAGE_PREFIX_BYTES {
                started += 1;
                self.prefix_seen = 0;
                self.remaining = u64::from(u32::from_be_bytes(self.length));
            }
        }
        started
    }
}

/// A body that counts the messages passing through it and, for a response, records the
/// call's status when the trailers pass (or Canceled if it is dropped before they do).
struct CountedBody<B> {
    inner: B,
    counter: MessageCounter,
    messages: IntCounter,
    /// The call whose status is still to be recorded (responses only).
    pending: Option<Method>,
}

impl<B> CountedBody<B> {
    fn new(inner: B, messages: IntCounter, pending: Option<Method>) -> CountedBody<B> {
        CountedBody {
            inner,
            counter: MessageCounter::default(),
            messages,
            pending,
        }
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        if let Some(method) = self.pending.take() {
            method.canceled();
        }
    }
}

impl<B> Body for CountedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let started = this.counter.feed(data.chunk());
                this.messages.inc_by(started);
            } else if let Some(trailers) = frame.trailers_ref()
                && let Some(status) = trailers.get("grpc-status")
                && let Some(method) = this.pending.take()
            {
                method.handled(status);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(body);
        framed
    }

    #[test]
    fn counts_messages_split_anywhere() {
        let mut stream = message(b"hello");
        stream.extend(message(b""));
        stream.extend(message(&[7; 300]));
        for split in 0..stream.len() {
            let mut counter = MessageCounter::default();
            let (first, second) = stream.split_at(split);
            assert_eq!(
                counter.feed(first) + counter.feed(second),
                3,
                "split at {split}"
            );
        }
        let mut counter = MessageCounter::default();
        let byte_by_byte: u64 = stream.iter().map(|byte| counter.feed(&[*byte])).sum();
        assert_eq!(byte_by_byte, 3);
    }

    #[test]
    fn knows_every_method_once_and_only_grpc_requests() {
        for (index, (service, name, _)) in METHODS.iter().enumerate() {
            assert!(
                !METHODS[index + 1..]
                    .iter()
                    .any(|(other_service, other_name, _)| other_service == service
                        && other_name == name),
                "{service}/{name} listed twice"
            );
        }
        let request = |path: &str, content_type: &str| {
            http::Request::builder()
                .uri(path)
                .header(http::header::CONTENT_TYPE, content_type)
                .body(())
                .unwrap()
        };
        let watch = Method::of(&request("/etcdserverpb.Watch/Watch", "application/grpc")).unwrap();
        assert_eq!(watch.labels(), [BIDI_STREAM, "etcdserverpb.Watch", "Watch"]);
        assert!(Method::of(&request("/etcdserverpb.KV/Nope", "application/grpc")).is_none());
        assert!(Method::of(&request("/etcdserverpb.KV/Range", "application/json")).is_none());
        let code = |text| CODE_NAMES[code_number(&http::HeaderValue::from_static(text))];
        assert_eq!(code("5"), "NotFound");
        assert_eq!(code("99"), "Unknown");
        assert_eq!(CODE_NAMES[CODE_CANCELED], "Canceled");
        assert_eq!(CODE_NAMES[CODE_UNKNOWN], "Unknown");
    }
}
