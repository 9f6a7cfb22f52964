//! Repairs the HTTP/2 `:authority` that some etcd clients send before the HTTP/2 library
//! parses it.
//!
//! etcdctl 3.4 (`endpoint status`) and clientv3 3.5.x put a whole URL, or a string like
//! `#initially=[http://host:2379]`, in `:authority`. Go's gRPC server ignores it; the `h2`
//! crate resets the stream with PROTOCOL_ERROR, so those clients could not talk to us.
//! [`AuthorityFix`] wraps a client connection: when the connection speaks HTTP/2, the first
//! header block is decoded; if its `:authority` is valid, the connection is passed through from
//! there on (clients set it once per connection). Otherwise that block and every later one are
//! decoded, an invalid `:authority` is replaced by the `host:port` it names (or dropped when it
//! names none), and the block is encoded again for `h2`. The
//! re-encoding uses one encoder per connection, so `h2`'s decoder sees a consistent stream.
//! HTTP/1.1 connections and every frame other than HEADERS/CONTINUATION pass through as they
//! are; bytes the server writes are never touched.
//!
//! This module owns HTTP/2 framing on the read side of a client connection and nothing else.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::limits::{H2_FRAME_BYTES_MAX, H2_HEADER_BLOCK_BYTES_MAX, H2_HEADER_TABLE_BYTES};

/// The client connection preface of HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of an HTTP/2 frame header.
const FRAME_HEADER_BYTES: usize = 9;
/// Frame type of HEADERS.
const FRAME_HEADERS: u8 = 0x1;
/// Frame type of CONTINUATION.
const FRAME_CONTINUATION: u8 = 0x9;
/// HEADERS flag: the stream ends with this block.
const FLAG_END_STREAM: u8 = 0x1;
/// HEADERS/CONTINUATION flag: the block ends in this frame.
const FLAG_END_HEADERS: u8 = 0x4;
/// HEADERS flag: the payload starts with a pad length.
const FLAG_PADDED: u8 = 0x8;
/// HEADERS flag: the payload carries 5 bytes of priority.
const FLAG_PRIORITY: u8 = 0x20;
/// Bytes of the priority fields in a HEADERS payload.
const PRIORITY_BYTES: usize = 5;
/// Bytes read from the socket at a time: one default-size frame.
const READ_CHUNK_BYTES: usize = H2_FRAME_BYTES_MAX;

/// What the connection turned out to speak.
enum Mode {
    /// Not enough bytes yet to tell.
    Detect,
    /// HTTP/2: header blocks are rewritten.
    Http2,
    /// Anything else (HTTP/1.1), or HTTP/2 after an undecodable block: bytes pass through.
    Passthrough,
}

/// A header block whose CONTINUATION frames are still arriving.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_BYTES]>,
    fragment: BytesMut,
}

/// A client connection whose HTTP/2 header blocks get a valid `:authority`.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    /// Bytes read from the socket, not yet examined.
    raw: BytesMut,
    /// Bytes ready for the HTTP server.
    ready: BytesMut,
    pending: Option<PendingBlock>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    eof: bool,
    /// True once a block was re-encoded: from then on h2's header table follows our encoder,
    /// not the client's, and raw client blocks can no longer be passed through.
    reencoded: bool,
    /// Set when the connection cannot go on; reads return it.
    failed: Option<String>,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            mode: Mode::Detect,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            pending: None,
            decoder: {
                // The client may grow its table only up to what the server advertised (HTTP/2's
                // default, which h2 keeps); more is a compression error, and unbounded memory.
                let mut decoder = loona_hpack::Decoder::new();
                decoder.set_max_allowed_table_size(H2_HEADER_TABLE_BYTES);
                decoder
            },
            reencoded: false,
            failed: None,
            encoder: loona_hpack::Encoder::new(),
            eof: false,
        }
    }

    /// Moves whatever can be examined from `raw` to `ready`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Detect => {
                    let seen = self.raw.len().min(H2_PREFACE.len());
                    if self.raw[..seen] != H2_PREFACE[..seen] {
                        self.mode = Mode::Passthrough;
                    } else if seen == H2_PREFACE.len() {
                        self.ready.put(self.raw.split_to(H2_PREFACE.len()));
                        self.mode = Mode::Http2;
                    } else if self.eof {
                        self.mode = Mode::Passthrough;
                    } else {
                        return;
                    }
                }
                Mode::Passthrough => {
                    let rest = self.raw.split();
                    self.ready.put(rest);
                    return;
                }
                Mode::Http2 => {
                    if self.raw.len() < FRAME_HEADER_BYTES {
                        return;
                    }
                    let length = usize::from(self.raw[0]) << 16
                        | usize::from(self.raw[1]) << 8
                        | usize::from(self.raw[2]);
                    if length > H2_FRAME_BYTES_MAX {
                        // Larger than the server allows: h2 must see it as sent (and refuse
                        // it), without this layer buffering up to 16 MiB first.
                        return self.give_up(BytesMut::new());
                    }
                    if self.raw.len() < FRAME_HEADER_BYTES + length {
                        return;
                    }
                    let frame = self.raw.split_to(FRAME_HEADER_BYTES + length);
                    self.frame(frame);
                }
            }
        }
    }

    /// Handles one whole frame.
    fn frame(&mut self, frame: BytesMut) {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_BYTES..];
        match kind {
            FRAME_HEADERS if self.pending.is_none() => {
                let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                    return self.give_up(frame);
                };
                let block = PendingBlock {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    fragment: BytesMut::from(fragment),
                };
                self.pending = Some(block);
                if flags & FLAG_END_HEADERS != 0 {
                    self.finish_block();
                }
            }
            FRAME_CONTINUATION
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|block| block.stream_id == stream_id) =>
            {
                let block = self.pending.as_mut().expect("checked above");
                if block.fragment.len() + payload.len() > H2_HEADER_BLOCK_BYTES_MAX {
                    return self.give_up(frame);
                }
                block.fragment.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    self.finish_block();
                }
            }
            _ if self.pending.is_some() => {
                // A frame inside an unfinished header block is a protocol error; let the HTTP/2
                // library see the original bytes and say so.
                self.give_up(frame);
            }
            _ => self.ready.put(frame),
        }
    }

    /// Stops rewriting: the pending block (its original framing is gone, so it goes out as one
    /// HEADERS frame) and everything after it pass through unchanged.
    fn give_up(&mut self, frame: BytesMut) {
        if self.reencoded {
            // h2's header table now mirrors our encoder; raw client blocks would be decoded
            // against the wrong table. Close the connection instead.
            tracing::debug!("client HTTP/2 stream cannot be re-encoded any further; closing it");
            self.pending = None;
            self.raw.clear();
            self.failed = Some("HTTP/2 header block that cannot be re-encoded".into());
            return;
        }
        tracing::debug!(
            "client sent an HTTP/2 header block mnemo cannot re-encode; passing it through"
        );
        if let Some(block) = self.pending.take() {
            let flags = FLAG_END_HEADERS | if block.end_stream { FLAG_END_STREAM } else { 0 };
            write_frame(
                &mut self.ready,
                FRAME_HEADERS,
                flags,
                block.stream_id,
                &block.fragment,
            );
        }
        self.ready.put(frame);
        self.mode = Mode::Passthrough;
    }

    /// Sends `block` as the client encoded it (one HEADERS frame, its priority kept), and
    /// everything after it unchanged.
    fn pass_through_from(&mut self, block: PendingBlock) {
        let mut payload = BytesMut::new();
        let mut flags = FLAG_END_HEADERS | if block.end_stream { FLAG_END_STREAM } else { 0 };
        if let Some(priority) = block.priority {
            payload.put_slice(&priority);
            flags |= FLAG_PRIORITY;
        }
        payload.put_slice(&block.fragment);
        if payload.len() > H2_FRAME_BYTES_MAX {
            // Too big for one frame once gathered: the general path splits it.
            self.pending = Some(block);
            return self.give_up(BytesMut::new());
        }
        write_frame(
            &mut self.ready,
            FRAME_HEADERS,
            flags,
            block.stream_id,
            &payload,
        );
        self.mode = Mode::Passthrough;
    }

    /// Decodes the complete pending block, repairs it, and frames it again.
    fn finish_block(&mut self) {
        let block = self.pending.take().expect("a block is pending");
        let headers = match self.decoder.decode(&block.fragment) {
            Ok(headers) => headers,
            Err(err) => {
                tracing::debug!(%err, "undecodable HTTP/2 header block");
                self.pending = Some(block);
                return self.give_up(BytesMut::new());
            }
        };
        let repaired = repair_authority(headers.clone());
        if !self.reencoded && repaired == headers {
            // The first block needs no repair: clients set `:authority` once per connection,
            // so the rest of it is passed through undecoded. Decoding every block costs a
            // new Huffman table per string in the HPACK library (14% of a member's CPU
            // under a read load), and most clients never need it.
            return self.pass_through_from(block);
        }
        let headers = repaired;
        self.reencoded = true;
        let encoded = self.encoder.encode(
            headers
                .iter()
                .map(|(name, value)| (name.as_slice(), value.as_slice())),
        );
        let end_stream = if block.end_stream { FLAG_END_STREAM } else { 0 };
        let mut first_payload = BytesMut::new();
        let mut first_flags = end_stream;
        if let Some(priority) = block.priority {
            first_payload.put_slice(&priority);
            first_flags |= FLAG_PRIORITY;
        }
        let first_room = H2_FRAME_BYTES_MAX - first_payload.len();
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        first_payload.put_slice(first);
        if rest.is_empty() {
            first_flags |= FLAG_END_HEADERS;
        }
        write_frame(
            &mut self.ready,
            FRAME_HEADERS,
            first_flags,
            block.stream_id,
            &first_payload,
        );
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(H2_FRAME_BYTES_MAX));
            let flags = if after.is_empty() {
                FLAG_END_HEADERS
            } else {
                0
            };
            write_frame(
                &mut self.ready,
                FRAME_CONTINUATION,
                flags,
                block.stream_id,
                chunk,
            );
            rest = after;
        }
    }
}

/// Splits a HEADERS payload into its priority fields and header block fragment.
fn split_headers_payload(
    flags: u8,
    payload: &[u8],
) -> Option<(Option<[u8; PRIORITY_BYTES]>, &[u8])> {
    let mut body = payload;
    let mut padding = 0usize;
    if flags & FLAG_PADDED != 0 {
        padding = usize::from(*body.first()?);
        body = &body[1..];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let fields: [u8; PRIORITY_BYTES] = body.get(..PRIORITY_BYTES)?.try_into().ok()?;
        priority = Some(fields);
        body = &body[PRIORITY_BYTES..];
    }
    let end = body.len().checked_sub(padding)?;
    Some((priority, &body[..end]))
}

fn write_frame(out: &mut BytesMut, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("frame payload bounded by the frame size");
    out.put_slice(&length.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
    out.put_slice(payload);
}

/// Replaces an `:authority` that is not a valid URI authority by the `host:port` of the URL it
/// holds, or removes it when it holds none.
fn repair_authority(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            if name != b":authority" || is_valid_authority(&value) {
                return Some((name, value));
            }
            let repaired = authority_in(&value)?;
            tracing::trace!(original = %String::from_utf8_lossy(&value), %repaired, "repaired :authority");
            Some((name, repaired.into_bytes()))
        })
        .collect()
}

fn is_valid_authority(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|text| text.parse::<http::uri::Authority>().is_ok())
}

/// The `host:port` of the first URL inside `value` (`http://h:p`, `#initially=[http://h:p]`).
fn authority_in(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let end = rest.find(['/', ']', ',', ';', ' ']).unwrap_or(rest.len());
    let candidate = &rest[..end];
    is_valid_authority(candidate.as_bytes()).then(|| candidate.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(reason) = &this.failed
                && this.ready.is_empty()
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    reason.clone(),
                )));
            }
            if !this.ready.is_empty() {
                let count = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..count]);
                this.ready.advance(count);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left could not be framed; hand it over for the server to judge.
                let rest = this.raw.split();
                this.pending = None;
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.ready.put(rest);
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Ready(Ok(())) => {
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        this.eof = true;
                    } else {
                        this.raw.extend_from_slice(filled);
                    }
                    this.process();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The wrapped connection's information: the addresses, and with TLS the client's
/// certificates (which `tonic::Request::peer_certs` reads).
impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> S::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Frames `headers` as a client would: one HEADERS frame, optionally split into
    /// CONTINUATIONs of `split` bytes, with padding and priority when asked.
    fn client_block(
        encoder: &mut loona_hpack::Encoder<'static>,
        headers: &[(&[u8], &[u8])],
        split: usize,
        padded: bool,
    ) -> Vec<u8> {
        let block = encoder.encode(headers.iter().copied());
        let mut out = BytesMut::new();
        let (first, mut rest) = block.split_at(block.len().min(split));
        let mut payload = BytesMut::new();
        let mut flags = FLAG_PRIORITY;
        if padded {
            flags |= FLAG_PADDED;
            payload.put_u8(3);
        }
        payload.put_slice(&[0, 0, 0, 0, 16]);
        payload.put_slice(first);
        if padded {
            payload.put_slice(&[0, 0, 0]);
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        write_frame(&mut out, FRAME_HEADERS, flags, 1, &payload);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(split));
            let flags = if after.is_empty() {
                FLAG_END_HEADERS
            } else {
                0
            };
            write_frame(&mut out, FRAME_CONTINUATION, flags, 1, chunk);
            rest = after;
        }
        out.to_vec()
    }

    /// One decoded header block: (name, value) pairs.
    type HeaderBlock = Vec<(Vec<u8>, Vec<u8>)>;

    /// Reads the frames the server would see: decoded header blocks, and the types of the
    /// other frames.
    fn server_view(bytes: &[u8]) -> (Vec<HeaderBlock>, Vec<u8>) {
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut others = Vec::new();
        let mut at = H2_PREFACE.len();
        assert_eq!(&bytes[..at], H2_PREFACE);
        let mut fragment = Vec::new();
        while at < bytes.len() {
            let length = usize::from(bytes[at]) << 16
                | usize::from(bytes[at + 1]) << 8
                | usize::from(bytes[at + 2]);
            let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
            let payload = &bytes[at + 9..at + 9 + length];
            match kind {
                FRAME_HEADERS => {
                    let (_, body) = split_headers_payload(flags, payload).unwrap();
                    fragment = body.to_vec();
                }
                FRAME_CONTINUATION => fragment.extend_from_slice(payload),
                _ => others.push(kind),
            }
            if matches!(kind, FRAME_HEADERS | FRAME_CONTINUATION) && flags & FLAG_END_HEADERS != 0 {
                blocks.push(decoder.decode(&fragment).unwrap());
            }
            at += 9 + length;
        }
        (blocks, others)
    }

    async fn through_shim(input: Vec<u8>) -> Vec<u8> {
        let mut shim = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        shim.read_to_end(&mut out).await.unwrap();
        out
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Option<String> {
        block
            .iter()
            .find(|(name, _)| name == b":authority")
            .map(|(_, value)| String::from_utf8(value.clone()).unwrap())
    }

    #[tokio::test]
    async fn url_authorities_become_host_and_port_across_blocks() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = H2_PREFACE.to_vec();
        let request = |authority: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (b":path", b"/etcdserverpb.Maintenance/Status"),
                (b":authority", authority),
            ]
        };
        input.extend(client_block(
            &mut encoder,
            &request(b"http://127.0.0.1:2379"),
            1000,
            false,
        ));
        // A SETTINGS frame in between passes through untouched.
        let mut settings = BytesMut::new();
        write_frame(&mut settings, 0x4, 0, 0, &[]);
        input.extend_from_slice(&settings);
        // The second request reuses the client's dynamic table entries.
        input.extend(client_block(
            &mut encoder,
            &request(b"http://127.0.0.1:2379"),
            4,
            true,
        ));
        input.extend(client_block(
            &mut encoder,
            &request(b"#initially=[http://10.0.0.1:2379]"),
            1000,
            false,
        ));
        input.extend(client_block(
            &mut encoder,
            &request(b"127.0.0.1:2379"),
            1000,
            false,
        ));
        input.extend(client_block(
            &mut encoder,
            &request(b"#initially=[]"),
            1000,
            false,
        ));
        let (blocks, others) = server_view(&through_shim(input).await);
        assert_eq!(others, vec![0x4]);
        let authorities: Vec<_> = blocks.iter().map(|block| authority(block)).collect();
        assert_eq!(
            authorities,
            vec![
                Some("127.0.0.1:2379".to_string()),
                Some("127.0.0.1:2379".to_string()),
                Some("10.0.0.1:2379".to_string()),
                Some("127.0.0.1:2379".to_string()),
                None,
            ]
        );
        assert!(
            blocks
                .iter()
                .all(|block| block[1].1 == b"/etcdserverpb.Maintenance/Status")
        );
    }

    /// A connection whose first block carries a valid `:authority` is passed through as the
    /// client sent it, its later blocks undecoded: a single unpadded HEADERS frame comes out
    /// byte for byte, and a block split into CONTINUATIONs comes out as one HEADERS frame with
    /// the same header block, so h2's table keeps following the client's encoder.
    #[tokio::test]
    async fn a_valid_first_authority_passes_the_connection_through() {
        let mut encoder = loona_hpack::Encoder::new();
        let request = [
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/etcdserverpb.KV/Range"),
            (b":authority", b"127.0.0.1:2379"),
        ];
        let mut single = H2_PREFACE.to_vec();
        single.extend(client_block(&mut encoder, &request, 1000, false));
        single.extend(client_block(&mut encoder, &request, 1000, false));
        assert_eq!(through_shim(single.clone()).await, single);

        let mut encoder = loona_hpack::Encoder::new();
        let mut split = H2_PREFACE.to_vec();
        split.extend(client_block(&mut encoder, &request, 4, true));
        split.extend(client_block(&mut encoder, &request, 1000, false));
        let (blocks, others) = server_view(&through_shim(split).await);
        assert!(others.is_empty());
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            assert_eq!(authority(&block).as_deref(), Some("127.0.0.1:2379"));
            assert_eq!(block[1].1, b"/etcdserverpb.KV/Range");
        }
    }

    #[tokio::test]
    async fn http1_passes_through_byte_for_byte() {
        let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n".to_vec();
        assert_eq!(through_shim(request.clone()).await, request);
    }

    #[tokio::test]
    async fn big_blocks_are_split_into_continuations() {
        let mut encoder = loona_hpack::Encoder::new();
        let big = vec![b'x'; 3 * H2_FRAME_BYTES_MAX];
        let mut input = H2_PREFACE.to_vec();
        input.extend(client_block(
            &mut encoder,
            &[(b":authority", b"http://h:1"), (b"x-big", &big)],
            8000,
            false,
        ));
        let (blocks, _) = server_view(&through_shim(input).await);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]).as_deref(), Some("h:1"));
        assert_eq!(blocks[0][1].1, big);
    }

    #[tokio::test]
    async fn undecodable_block_after_a_rewrite_closes_the_connection() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = H2_PREFACE.to_vec();
        input.extend(client_block(
            &mut encoder,
            &[(b":authority", b"http://h:1")],
            1000,
            false,
        ));
        // An indexed field pointing far past any table: not decodable.
        let mut broken = BytesMut::new();
        write_frame(
            &mut broken,
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            3,
            &[0xff, 0x7f],
        );
        input.extend_from_slice(&broken);
        let mut shim = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        let error = shim
            .read_to_end(&mut out)
            .await
            .expect_err("the stream must fail");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        // The first, repaired block was still delivered before the failure.
        assert!(out.len() > H2_PREFACE.len());
    }

    #[tokio::test]
    async fn oversized_frame_before_any_rewrite_passes_through_unbuffered() {
        let mut input = H2_PREFACE.to_vec();
        let mut big = BytesMut::new();
        write_frame(&mut big, 0x0, 0, 1, &vec![0u8; H2_FRAME_BYTES_MAX + 1]);
        input.extend_from_slice(&big);
        assert_eq!(through_shim(input.clone()).await, input);
    }
}
