//! The snapshot file: a versioned, self-describing dump of a member's state machine, what
//! Maintenance.Snapshot streams and `mnemo snapshot status` / `restore` read.
//!
//! Owns: the byte layout below, writing it from one consistent view of the store
//! ([`dump`]), checking a file's length and SHA-256 ([`verify`]), reading its records back
//! ([`Records`]) and the status etcdutl prints ([`SnapshotStatus`]).
//! Must not: know Raft, gRPC, the data dir layout or which records a restore keeps (that is
//! `embed::restore`'s call); spawn tasks or read the clock.
//!
//! Why a logical dump rather than an archive of a RocksDB checkpoint: a checkpoint needs
//! scratch space on the member and a flush, its files are RocksDB's format of the day (with
//! every compaction's leftovers), and counting keys for `status` would mean opening it as a
//! database. A dump of the column families read through ONE RocksDB snapshot is just as
//! consistent, streams in constant memory straight from the iterators, is independent of
//! RocksDB's file format, and is small (only live rows). Restore writes the rows back into a
//! fresh database with ordinary batches.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! header   magic "MNEMOSNP" | format version u32 (1) | revision i64 | compact revision i64
//!          | record count u64 | content bytes u64 (header + records + end marker)
//! records  column family code u8 (1 kv, 2 meta, 3 lease, 4 auth, 5 members)
//!          | key length u32 | value length u32 | key | value
//!          ascending by (code, key), exactly `record count` of them
//! end      one 0 byte
//! padding  zero bytes up to a multiple of 512 (the "data")
//! trailer  SHA-256 of the data, 32 bytes (what Maintenance.Snapshot sends last)
//! ```
//!
//! etcd-compat: etcdctl 3.4 `snapshot save` accepts a download only when its length is 32
//! more than a multiple of 512 (etcd's bbolt pages); the padding gives ours that shape. The
//! content is ours, not a bbolt database, so etcd's tools cannot read it (nor ours theirs).

use std::fmt::Write as _;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::storage::backend::{BackendError, Cf};
use crate::storage::mvcc::MvccStore;
use crate::types::Revision;

/// First bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"MNEMOSNP";

/// The layout version this build writes and reads. A new layout takes a new number; readers
/// refuse numbers they do not know rather than guess.
pub const FORMAT_VERSION: u32 = 1;

/// The data is padded to a multiple of this (etcdctl 3.4's length check, see the module docs).
pub const BLOCK_BYTES: u64 = 512;

/// Length of the SHA-256 trailer.
pub const HASH_BYTES: u64 = 32;

/// Encoded header length.
pub const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 8;

/// Largest key or value a record may declare. Stored keys and values are bounded by the
/// request limit; a length beyond this one can only come from a damaged file read with
/// `--skip-hash-check`, and must not become a huge allocation.
pub const RECORD_FIELD_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// Type byte that ends the records (no column family has code 0).
const END_MARKER: u8 = 0;

/// Bytes of a record before its key: code, key length, value length.
const RECORD_PREFIX_BYTES: u64 = 1 + 4 + 4;

const _: () = assert!(RECORD_FIELD_BYTES_MAX as usize > crate::limits::GRPC_RECV_BYTES_MAX);

/// A failure to write or read a snapshot file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the bytes failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The operating system's (or the stream's) error.
        source: io::Error,
    },
    /// The store could not be read.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The file does not start with [`MAGIC`].
    #[error("not a mnemo snapshot (it starts with {found:02x?}, expected {MAGIC:02x?})")]
    NotSnapshot {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// The file has a layout version this build does not read.
    #[error("snapshot format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The file is shorter or longer than its header says.
    #[error(
        "snapshot is truncated or damaged: its header describes {data_bytes} data bytes plus a \
         {HASH_BYTES}-byte hash, but the file has {file_bytes} bytes"
    )]
    Length {
        /// Data bytes the header describes.
        data_bytes: u64,
        /// Bytes in the file.
        file_bytes: u64,
    },
    /// The file ends with the data: no hash to check.
    #[error("snapshot missing hash but --skip-hash-check=false")]
    MissingHash,
    /// The trailer does not match the data: the file was damaged.
    #[error("snapshot is corrupted: expected sha256 {expected}, got {actual}")]
    HashMismatch {
        /// The trailer, in hex.
        expected: String,
        /// The hash of the data, in hex.
        actual: String,
    },
    /// The records do not follow the layout.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

impl SnapshotError {
    fn io(action: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
        move |source| SnapshotError::Io { action, source }
    }
}

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The store's current revision when the snapshot was taken.
    pub revision: Revision,
    /// The store's compact revision then.
    pub compact_revision: Revision,
    /// Rows of every column family in the file.
    pub record_count: u64,
    /// Header, records and end marker, before padding.
    pub content_bytes: u64,
}

impl Header {
    /// Bytes of the data: the content padded to a multiple of [`BLOCK_BYTES`].
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.content_bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
    }

    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        bytes[12..20].copy_from_slice(&self.revision.to_be_bytes());
        bytes[20..28].copy_from_slice(&self.compact_revision.to_be_bytes());
        bytes[28..36].copy_from_slice(&self.record_count.to_be_bytes());
        bytes[36..44].copy_from_slice(&self.content_bytes.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<Header, SnapshotError> {
        let field = |from: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out.copy_from_slice(&bytes[from..from + 8]);
            out
        };
        if bytes[..8] != MAGIC {
            return Err(SnapshotError::NotSnapshot {
                found: bytes[..8].to_vec(),
            });
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let version = u32::from_be_bytes(version);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::Version { found: version });
        }
        let header = Header {
            revision: i64::from_be_bytes(field(12)),
            compact_revision: i64::from_be_bytes(field(20)),
            record_count: u64::from_be_bytes(field(28)),
            content_bytes: u64::from_be_bytes(field(36)),
        };
        let revisions_ok = header.compact_revision >= 0
            && header.revision >= 1
            && header.compact_revision <= header.revision;
        if !revisions_ok {
            return Err(SnapshotError::Malformed(format!(
                "revision {} with compact revision {}",
                header.revision, header.compact_revision
            )));
        }
        let smallest = HEADER_BYTES as u64 + 1 + header.record_count * RECORD_PREFIX_BYTES;
        if header.content_bytes < smallest {
            return Err(SnapshotError::Malformed(format!(
                "{} records cannot fit in {} bytes",
                header.record_count, header.content_bytes
            )));
        }
        Ok(header)
    }
}

/// The stable code of a column family in the file (never reused).
fn cf_code(cf: Cf) -> u8 {
    match cf {
        Cf::Kv => 1,
        Cf::Meta => 2,
        Cf::Lease => 3,
        Cf::Auth => 4,
        Cf::Members => 5,
    }
}

fn cf_of_code(code: u8) -> Option<Cf> {
    Cf::ALL.into_iter().find(|&cf| cf_code(cf) == code)
}

/// Column families in file order (ascending code).
fn cfs_in_file_order() -> [Cf; 5] {
    let mut cfs = Cf::ALL;
    cfs.sort_by_key(|&cf| cf_code(cf));
    cfs
}

/// Writes a snapshot of `store` as it is at the call: the header, every row of every column
/// family, the end marker and the padding, all read through one consistent view (see
/// [`MvccStore::read_consistent`]). The rows are read twice from that view, once to size the
/// header and once to write them, so memory stays bounded whatever the store's size.
///
/// `open` learns the header (and so the data size) before the first byte is written and
/// returns the writer. The SHA-256 of the data is returned, not written: a stream sends it as
/// its own message, a file appends it ([`write_trailer`]).
///
/// # Errors
/// [`SnapshotError::Backend`] when the store cannot be read, [`SnapshotError::Io`] when
/// `open` or the writer fails.
///
/// # Panics
/// When the view yields different rows on the second pass (it cannot: it is a snapshot).
pub fn dump<W: Write>(
    store: &MvccStore,
    open: impl FnOnce(&Header) -> io::Result<W>,
) -> Result<(Header, [u8; 32], W), SnapshotError> {
    store.read_consistent(|view, revision, compact_revision| {
        let mut record_count = 0u64;
        let mut content_bytes = HEADER_BYTES as u64 + 1;
        for cf in cfs_in_file_order() {
            for item in view.scan_uncached(cf, &[], None) {
                let (key, value) = item?;
                record_count += 1;
                content_bytes += RECORD_PREFIX_BYTES + key.len() as u64 + value.len() as u64;
            }
        }
        let header = Header {
            revision,
            compact_revision,
            record_count,
            content_bytes,
        };
        let writer = open(&header).map_err(SnapshotError::io("start the snapshot"))?;
        let mut out = HashingWriter {
            inner: writer,
            sha: Sha256::new(),
            written: 0,
        };
        let write_error = SnapshotError::io("write the snapshot");
        out.write_all(&header.encode()).map_err(write_error)?;
        let mut written_records = 0u64;
        for cf in cfs_in_file_order() {
            for item in view.scan_uncached(cf, &[], None) {
                let (key, value) = item?;
                write_record(&mut out, cf, &key, &value)
                    .map_err(SnapshotError::io("write the snapshot"))?;
                written_records += 1;
            }
        }
        assert_eq!(
            written_records, record_count,
            "a snapshot view changed between two scans"
        );
        out.write_all(&[END_MARKER])
            .map_err(SnapshotError::io("write the snapshot"))?;
        let padding = header.data_bytes() - header.content_bytes;
        let zeros = [0u8; BLOCK_BYTES as usize];
        out.write_all(&zeros[..usize::try_from(padding).unwrap_or(0)])
            .map_err(SnapshotError::io("write the snapshot"))?;
        out.flush()
            .map_err(SnapshotError::io("write the snapshot"))?;
        assert_eq!(
            out.written,
            header.data_bytes(),
            "snapshot data length disagrees with its header"
        );
        Ok((header, out.sha.finalize().into(), out.inner))
    })
}

fn write_record(out: &mut impl Write, cf: Cf, key: &[u8], value: &[u8]) -> io::Result<()> {
    let length = |bytes: &[u8]| {
        u32::try_from(bytes.len())
            .ok()
            .filter(|&length| length <= RECORD_FIELD_BYTES_MAX)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a row of {} bytes is too large for a snapshot", bytes.len()),
                )
            })
    };
    let mut prefix = [0u8; RECORD_PREFIX_BYTES as usize];
    prefix[0] = cf_code(cf);
    prefix[1..5].copy_from_slice(&length(key)?.to_be_bytes());
    prefix[5..9].copy_from_slice(&length(value)?.to_be_bytes());
    out.write_all(&prefix)?;
    out.write_all(key)?;
    out.write_all(value)
}

/// Appends the trailer to a snapshot written by [`dump`] into a file.
///
/// # Errors
/// The writer's error.
pub fn write_trailer(out: &mut impl Write, sha256: &[u8; 32]) -> io::Result<()> {
    out.write_all(sha256)
}

/// Counts and hashes what passes through.
struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(bytes)?;
        self.sha.update(&bytes[..count]);
        self.written += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How [`verify`] treats the SHA-256 trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashCheck {
    /// The trailer must be there and match (restore's default).
    Required,
    /// A trailer that is there must match; a file without one passes (status).
    IfPresent,
    /// The trailer is not looked at, present or not (restore's `--skip-hash-check`, as etcd's).
    Skip,
}

/// What [`verify`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The header.
    pub header: Header,
    /// Whether the file ends with the SHA-256 trailer (which matched, unless the check was
    /// skipped).
    pub has_hash: bool,
    /// CRC-32 (IEEE) of the data: the `hash` `snapshot status` prints.
    pub crc32: u32,
    /// Bytes in the file.
    pub file_bytes: u64,
}

/// Checks a whole snapshot read from `input`, `file_bytes` long: the header, that the length
/// is the data's (with or without the 32-byte trailer, nothing else), and that the trailer,
/// when present, is the SHA-256 of the data. Reads the input once, in bounded memory.
///
/// `check` says whether the trailer must be there and whether it is compared.
///
/// # Errors
/// [`SnapshotError::NotSnapshot`], [`SnapshotError::Version`], [`SnapshotError::Malformed`]
/// for a bad header; [`SnapshotError::Length`] for a truncated or extended file;
/// [`SnapshotError::MissingHash`]; [`SnapshotError::HashMismatch`]; [`SnapshotError::Io`].
pub fn verify(
    mut input: impl Read,
    file_bytes: u64,
    check: HashCheck,
) -> Result<Verified, SnapshotError> {
    let read_error = SnapshotError::io("read the snapshot");
    let mut header_bytes = [0u8; HEADER_BYTES];
    if file_bytes < HEADER_BYTES as u64 {
        // Too short for a header: still say what it is if the magic is there.
        let mut start = Vec::new();
        input
            .take(HEADER_BYTES as u64)
            .read_to_end(&mut start)
            .map_err(read_error)?;
        if start.len() >= MAGIC.len() && start[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::NotSnapshot {
                found: start[..MAGIC.len()].to_vec(),
            });
        }
        return Err(SnapshotError::Malformed(format!(
            "{file_bytes} bytes is too short for a snapshot header ({HEADER_BYTES} bytes)"
        )));
    }
    input.read_exact(&mut header_bytes).map_err(read_error)?;
    let header = Header::decode(&header_bytes)?;
    let data_bytes = header.data_bytes();
    let has_hash = if file_bytes == data_bytes + HASH_BYTES {
        true
    } else if file_bytes == data_bytes {
        false
    } else {
        return Err(SnapshotError::Length {
            data_bytes,
            file_bytes,
        });
    };
    if !has_hash && check == HashCheck::Required {
        return Err(SnapshotError::MissingHash);
    }
    let mut sha = Sha256::new();
    let mut crc = crc32fast::Hasher::new();
    sha.update(header_bytes);
    crc.update(&header_bytes);
    let mut left = data_bytes - HEADER_BYTES as u64;
    let mut buffer = vec![0u8; crate::limits::CLIENT_SNAPSHOT_CHUNK_BYTES];
    while left > 0 {
        let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
        input
            .read_exact(&mut buffer[..want])
            .map_err(SnapshotError::io("read the snapshot"))?;
        sha.update(&buffer[..want]);
        crc.update(&buffer[..want]);
        left -= want as u64;
    }
    if has_hash && check != HashCheck::Skip {
        let mut trailer = [0u8; HASH_BYTES as usize];
        input
            .read_exact(&mut trailer)
            .map_err(SnapshotError::io("read the snapshot"))?;
        let actual: [u8; 32] = sha.finalize().into();
        if actual != trailer {
            return Err(SnapshotError::HashMismatch {
                expected: hex(&trailer),
                actual: hex(&actual),
            });
        }
    }
    Ok(Verified {
        header,
        has_hash,
        crc32: crc.finalize(),
        file_bytes,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// One row of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its column family.
    pub cf: Cf,
    /// The row key.
    pub key: Vec<u8>,
    /// The row value.
    pub value: Vec<u8>,
}

/// Reads the records of a snapshot back, in file order, checking the layout as it goes:
/// known column families, ascending order, the count and length the header gives, the end
/// marker and zero padding. Run [`verify`] first: this checks structure, not the hash.
pub struct Records<R> {
    input: R,
    header: Header,
    read_count: u64,
    read_bytes: u64,
    last: Option<(u8, Vec<u8>)>,
    done: bool,
}

impl<R: Read> Records<R> {
    /// Reads the header from `input` (positioned at the start of the file).
    ///
    /// # Errors
    /// As [`verify`] for a bad header.
    pub fn new(mut input: R) -> Result<Records<R>, SnapshotError> {
        let mut header_bytes = [0u8; HEADER_BYTES];
        input
            .read_exact(&mut header_bytes)
            .map_err(SnapshotError::io("read the snapshot header"))?;
        let header = Header::decode(&header_bytes)?;
        Ok(Records {
            input,
            header,
            read_count: 0,
            read_bytes: HEADER_BYTES as u64,
            last: None,
            done: false,
        })
    }

    /// The snapshot's header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn read_exact(&mut self, bytes: &mut [u8]) -> Result<(), SnapshotError> {
        self.input
            .read_exact(bytes)
            .map_err(SnapshotError::io("read the snapshot"))?;
        self.read_bytes += bytes.len() as u64;
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<Record>, SnapshotError> {
        let mut code = [0u8; 1];
        self.read_exact(&mut code)?;
        if code[0] == END_MARKER {
            return self.finish().map(|()| None);
        }
        let Some(cf) = cf_of_code(code[0]) else {
            return Err(SnapshotError::Malformed(format!(
                "unknown column family code {} in record {}",
                code[0], self.read_count
            )));
        };
        if self.read_count == self.header.record_count {
            return Err(SnapshotError::Malformed(format!(
                "more records than the {} the header announces",
                self.header.record_count
            )));
        }
        let mut lengths = [0u8; 8];
        self.read_exact(&mut lengths)?;
        let field_length = |bytes: &[u8]| -> Result<usize, SnapshotError> {
            let mut raw = [0u8; 4];
            raw.copy_from_slice(bytes);
            let length = u32::from_be_bytes(raw);
            if length > RECORD_FIELD_BYTES_MAX {
                return Err(SnapshotError::Malformed(format!(
                    "a record field of {length} bytes exceeds {RECORD_FIELD_BYTES_MAX}"
                )));
            }
            Ok(length as usize)
        };
        let key_length = field_length(&lengths[..4])?;
        let value_length = field_length(&lengths[4..])?;
        let end = self.read_bytes + key_length as u64 + value_length as u64;
        if end >= self.header.content_bytes {
            return Err(SnapshotError::Malformed(format!(
                "record {} runs past the content's {} bytes",
                self.read_count, self.header.content_bytes
            )));
        }
        let mut key = vec![0u8; key_length];
        self.read_exact(&mut key)?;
        let mut value = vec![0u8; value_length];
        self.read_exact(&mut value)?;
        let in_order = match &self.last {
            None => true,
            Some((last_code, last_key)) => (*last_code, last_key.as_slice()) < (code[0], &key[..]),
        };
        if !in_order {
            return Err(SnapshotError::Malformed(format!(
                "record {} is out of order",
                self.read_count
            )));
        }
        self.last = Some((code[0], key.clone()));
        self.read_count += 1;
        Ok(Some(Record { cf, key, value }))
    }

    /// After the end marker: the count and length match the header, the padding is zeros.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        if self.read_count != self.header.record_count {
            return Err(SnapshotError::Malformed(format!(
                "{} records, the header announces {}",
                self.read_count, self.header.record_count
            )));
        }
        if self.read_bytes != self.header.content_bytes {
            return Err(SnapshotError::Malformed(format!(
                "the content ends at byte {}, the header says {}",
                self.read_bytes, self.header.content_bytes
            )));
        }
        let padding = self.header.data_bytes() - self.header.content_bytes;
        let mut zeros = vec![0u8; usize::try_from(padding).unwrap_or(0)];
        self.read_exact(&mut zeros)?;
        if zeros.iter().any(|&byte| byte != 0) {
            return Err(SnapshotError::Malformed("non-zero padding".to_string()));
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Records<R> {
    type Item = Result<Record, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// The status of the snapshot file at `path`, after checking it as [`verify`] does; a file
/// without the trailer is described too (there is no hash to check then).
///
/// # Errors
/// As [`verify`], plus [`SnapshotError::Io`] when the file cannot be opened.
pub fn status_of_file(path: &std::path::Path) -> Result<SnapshotStatus, SnapshotError> {
    let file = std::fs::File::open(path).map_err(SnapshotError::io("open the snapshot"))?;
    let file_bytes = file
        .metadata()
        .map_err(SnapshotError::io("inspect the snapshot"))?
        .len();
    let verified = verify(io::BufReader::new(file), file_bytes, HashCheck::IfPresent)?;
    Ok(SnapshotStatus::from(&verified))
}

/// What `snapshot status` prints, in etcdutl's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStatus {
    /// CRC-32 (IEEE) of the data (etcd: a CRC-32 of its bbolt buckets).
    pub hash: u32,
    /// The revision the snapshot was taken at.
    pub revision: Revision,
    /// Rows in every column family (etcd counts the keys of every bbolt bucket).
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    /// Bytes of the file.
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// How `snapshot status` prints (etcdctl's `-w`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    /// `hash, revision, total keys, total size` on one line.
    Simple,
    /// An ASCII table.
    Table,
    /// One JSON object.
    Json,
}

impl From<&Verified> for SnapshotStatus {
    fn from(verified: &Verified) -> SnapshotStatus {
        SnapshotStatus {
            hash: verified.crc32,
            revision: verified.header.revision,
            total_key: verified.header.record_count,
            total_size: verified.file_bytes,
        }
    }
}

impl SnapshotStatus {
    /// The status as etcdctl 3.4 prints it in `format`, with the final newline.
    #[must_use]
    pub fn render(&self, format: StatusFormat) -> String {
        let size = human_bytes(self.total_size);
        match format {
            StatusFormat::Simple => format!(
                "{:x}, {}, {}, {size}\n",
                self.hash, self.revision, self.total_key
            ),
            StatusFormat::Json => {
                // Serializing four integers cannot fail.
                let json = serde_json::to_string(self).unwrap_or_default();
                format!("{json}\n")
            }
            StatusFormat::Table => render_table(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &[
                    format!("{:x}", self.hash),
                    self.revision.to_string(),
                    self.total_key.to_string(),
                    size,
                ],
            ),
        }
    }
}

/// etcdctl's table: headers centred, cells right-aligned, one space of padding.
fn render_table(headers: &[&str], cells: &[String]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .zip(cells)
        .map(|(header, cell)| header.len().max(cell.len()) + 2)
        .collect();
    let rule = widths.iter().fold(String::from("+"), |mut line, width| {
        line.push_str(&"-".repeat(*width));
        line.push('+');
        line
    });
    let mut header_line = String::from("|");
    for (header, width) in headers.iter().zip(&widths) {
        let left = (width - header.len()) / 2;
        let right = width - header.len() - left;
        let _ = write!(
            header_line,
            "{}{header}{}|",
            " ".repeat(left),
            " ".repeat(right)
        );
    }
    let mut cell_line = String::from("|");
    for (cell, width) in cells.iter().zip(&widths) {
        let _ = write!(cell_line, " {cell:>inner$} |", inner = width - 2);
    }
    format!("{rule}\n{header_line}\n{rule}\n{cell_line}\n{rule}\n")
}

/// A byte count as etcdctl prints sizes (go-humanize `Bytes`: SI units, one decimal below
/// ten): `800 B`, `20 kB`, `2.1 MB`.
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let mut exponent = 0usize;
    let mut scaled = bytes as f64;
    while scaled >= 1000.0 && exponent + 1 < UNITS.len() {
        scaled /= 1000.0;
        exponent += 1;
    }
    let rounded = (scaled * 10.0 + 0.5).floor() / 10.0;
    if rounded < 10.0 {
        format!("{rounded:.1} {}", UNITS[exponent])
    } else {
        format!("{rounded:.0} {}", UNITS[exponent])
    }
}

#[cfg(test)]
mod tests;
