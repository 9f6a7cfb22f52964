//! Maintenance.Snapshot's producer: runs [`crate::snapshot::dump`] on a blocking thread and
//! hands the file to the gRPC layer as chunks through a bounded channel.
//!
//! Owns: the chunking (etcd's 32 KiB pieces with `remaining_bytes` counting down, then the
//! SHA-256 alone), the channel and the producer thread's lifetime.
//! Must not: hold any store lock while sending (the dump reads a RocksDB snapshot, which
//! needs none), or let a slow client reach apply: a full channel blocks only the producer,
//! and a client that takes nothing for [`CLIENT_SNAPSHOT_STALL_MAX`] ends the producer.
//!
//! etcd-compat: etcd 3.4 (`v3rpc/maintenance.go`) streams its bbolt file the same way: data
//! chunks whose `remaining_bytes` is what is left of the data after them, then one message
//! holding only the 32-byte SHA-256 of the data, `remaining_bytes` 0, no header.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::Error;
use crate::limits::{
    CLIENT_SNAPSHOT_BUFFER_CHUNKS, CLIENT_SNAPSHOT_CHUNK_BYTES, CLIENT_SNAPSHOT_STALL_MAX,
};
use crate::storage::mvcc::MvccStore;

/// One message of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The bytes: a piece of the data, or the 32-byte SHA-256 in the last message.
    pub blob: Bytes,
    /// Data bytes still to come after this message.
    pub remaining_bytes: u64,
}

type Sender = mpsc::Sender<Result<SnapshotChunk, Error>>;

/// Starts a snapshot of `store`: the returned receiver yields the data in chunks of
/// [`CLIENT_SNAPSHOT_CHUNK_BYTES`], then the trailer; or an error, after which nothing
/// follows. Dropping the receiver stops the producer at its next chunk.
///
/// # Panics
/// When called outside a Tokio runtime.
pub fn stream(store: Arc<MvccStore>) -> mpsc::Receiver<Result<SnapshotChunk, Error>> {
    let (sender, receiver) = mpsc::channel(CLIENT_SNAPSHOT_BUFFER_CHUNKS);
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || produce(&store, &handle, &sender));
    receiver
}

fn produce(store: &MvccStore, handle: &Handle, sender: &Sender) {
    let chunks = ChunkWriter {
        sender,
        handle,
        buffer: Vec::with_capacity(CLIENT_SNAPSHOT_CHUNK_BYTES),
        remaining_bytes: 0,
    };
    let dumped = crate::snapshot::dump(store, |header| {
        let mut chunks = chunks;
        chunks.remaining_bytes = header.data_bytes();
        Ok(chunks)
    });
    let outcome = dumped.and_then(|(header, sha256, mut chunks)| {
        chunks
            .send_buffer()
            .map_err(|source| crate::snapshot::SnapshotError::Io {
                action: "send the snapshot",
                source,
            })?;
        let trailer = SnapshotChunk {
            blob: Bytes::copy_from_slice(&sha256),
            remaining_bytes: 0,
        };
        send(handle, sender, Ok(trailer)).map_err(|source| crate::snapshot::SnapshotError::Io {
            action: "send the snapshot",
            source,
        })?;
        Ok(header)
    });
    match outcome {
        Ok(header) => tracing::info!(
            revision = header.revision,
            bytes = header.data_bytes(),
            records = header.record_count,
            "sent a snapshot"
        ),
        Err(error) => {
            tracing::warn!(%error, "snapshot not sent");
            // The client may be gone already; then nobody is told, which is fine.
            let _ = send(
                handle,
                sender,
                Err(Error::Internal(format!(
                    "etcdserver: snapshot failed: {error}"
                ))),
            );
        }
    }
}

/// Sends one message, waiting for room at most [`CLIENT_SNAPSHOT_STALL_MAX`]. Runs on the
/// producer's blocking thread, where blocking on the runtime is allowed.
fn send(handle: &Handle, sender: &Sender, item: Result<SnapshotChunk, Error>) -> io::Result<()> {
    match handle.block_on(tokio::time::timeout(
        CLIENT_SNAPSHOT_STALL_MAX,
        sender.send(item),
    )) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the client closed the snapshot stream",
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took no snapshot chunk for {}s",
                CLIENT_SNAPSHOT_STALL_MAX.as_secs()
            ),
        )),
    }
}

/// Cuts what the dump writes into chunks and sends each as it fills.
struct ChunkWriter<'a> {
    sender: &'a Sender,
    handle: &'a Handle,
    /// At most [`CLIENT_SNAPSHOT_CHUNK_BYTES`]; sent when full.
    buffer: Vec<u8>,
    /// Data bytes not yet sent (buffered ones included).
    remaining_bytes: u64,
}

impl ChunkWriter<'_> {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let blob = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CLIENT_SNAPSHOT_CHUNK_BYTES),
        ));
        // The dump writes exactly the data size it announced, so this never goes below 0.
        self.remaining_bytes = self.remaining_bytes.saturating_sub(blob.len() as u64);
        let chunk = SnapshotChunk {
            blob,
            remaining_bytes: self.remaining_bytes,
        };
        send(self.handle, self.sender, Ok(chunk))
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = CLIENT_SNAPSHOT_CHUNK_BYTES - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == CLIENT_SNAPSHOT_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    /// Partial chunks are sent only at the end (by the producer), so every chunk but the last
    /// is full size, as etcd's are.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::Backend;
    use sha2::{Digest, Sha256};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_count_down_and_end_with_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(Arc::new(Backend::open(dir.path()).unwrap())).unwrap();
        let mut txn = store.write();
        let no_leases = |_: crate::types::LeaseId| false;
        for index in 0..2_000 {
            let request = crate::types::PutRequest {
                key: Bytes::from(format!("key/{index:05}")),
                value: Bytes::from(vec![b'v'; 100]),
                ..crate::types::PutRequest::default()
            };
            txn.put(&request, &no_leases).unwrap();
        }
        txn.commit().unwrap();
        let mut receiver = stream(Arc::new(store));
        let mut messages = Vec::new();
        while let Some(item) = receiver.recv().await {
            messages.push(item.unwrap());
        }
        let (trailer, data) = messages.split_last().unwrap();
        assert!(data.len() > 2, "{} data chunks", data.len());
        let total: usize = data.iter().map(|chunk| chunk.blob.len()).sum();
        assert_eq!(total % 512, 0);
        let mut sent = 0;
        for (index, chunk) in data.iter().enumerate() {
            if index + 1 < data.len() {
                assert_eq!(chunk.blob.len(), CLIENT_SNAPSHOT_CHUNK_BYTES);
            }
            sent += chunk.blob.len();
            assert_eq!(chunk.remaining_bytes, (total - sent) as u64);
        }
        assert_eq!(trailer.remaining_bytes, 0);
        let all: Vec<u8> = data.iter().flat_map(|chunk| chunk.blob.to_vec()).collect();
        let digest: [u8; 32] = Sha256::digest(&all).into();
        assert_eq!(trailer.blob.as_ref(), digest);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_receiver_ends_the_producer() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(MvccStore::open(Arc::new(Backend::open(dir.path()).unwrap())).unwrap());
        let receiver = stream(Arc::clone(&store));
        drop(receiver);
        // The producer holds the only other reference; it lets go once it notices the closed
        // channel. Bounded: 5 s at most.
        let mut released = false;
        for _ in 0..500 {
            if Arc::strong_count(&store) == 1 {
                released = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(released, "the producer still holds the store");
    }
}
