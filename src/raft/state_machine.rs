//! openraft's state machine interface, forwarded to the [`StateMachineHost`], plus snapshots
//! kept as checkpoint directories.
//!
//! Owns the snapshot directory layout and the translation of applied state to openraft's
//! types. It must not interpret payloads: the host does.

use std::fs;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::storage::{
    EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta,
};
use openraft::{EntryPayload, OptionalSend, StoredMembership};

use super::{
    AppliedState, CommittedData, CommittedEntry, LogPos, Payload, Response, StateMachineHost,
    TypeConfig, to_log_id, to_pos,
};
use crate::limits::APPLY_BATCH_ENTRIES_MAX;

type Membership = StoredMembership<
    openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>,
    u64,
    super::MemberNode,
>;
type Meta = SnapshotMeta<
    openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>,
    u64,
    super::MemberNode,
>;
type EngineSnapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotDir>;

/// File inside a snapshot directory holding openraft's snapshot metadata.
pub(super) const META_FILE: &str = "snapshot.meta.json";
/// Sub-directory of a snapshot directory holding the state copy.
pub(super) const DATA_DIR: &str = "data";
/// Prefix of finished snapshot directory names; the suffix is the last included index.
const SNAPSHOT_PREFIX: &str = "snapshot-";

/// A snapshot: a directory with the state copy and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir(pub PathBuf);

/// openraft's `RaftStateMachine`.
pub(super) struct StateMachine {
    host: Arc<dyn StateMachineHost>,
    snap_dir: PathBuf,
}

impl StateMachine {
    pub(super) fn new(
        host: Arc<dyn StateMachineHost>,
        snap_dir: PathBuf,
    ) -> io::Result<StateMachine> {
        fs::create_dir_all(&snap_dir)?;
        // Half-built snapshots from a crash are useless: remove them.
        for dir_entry in fs::read_dir(&snap_dir)? {
            let path = dir_entry?.path();
            if path.extension().is_some_and(|extension| extension == "tmp") {
                fs::remove_dir_all(&path)?;
            }
        }
        Ok(StateMachine { host, snap_dir })
    }
}

fn decode_membership(blob: Option<&Bytes>) -> io::Result<Membership> {
    match blob {
        None => Ok(Membership::default()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored membership: {err}"),
            )
        }),
    }
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(io::Error::other)?
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotDir;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<super::EngineLogId>, Membership), io::Error> {
        let host = Arc::clone(&self.host);
        let state = blocking(move || host.applied_state()).await?;
        Ok((
            state.applied.map(to_log_id),
            decode_membership(state.membership.as_ref())?,
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let position = to_pos(&entry.log_id);
            let data = match entry.payload {
                EntryPayload::Blank => CommittedData::Blank,
                EntryPayload::Normal(Payload(bytes)) => CommittedData::Normal(bytes),
                EntryPayload::Membership(membership) => {
                    let stored = Membership::new(Some(entry.log_id), membership);
                    CommittedData::Membership(Bytes::from(
                        serde_json::to_vec(&stored).map_err(io::Error::other)?,
                    ))
                }
            };
            let is_normal = matches!(data, CommittedData::Normal(_));
            batch.push(CommittedEntry { position, data });
            responders.push((is_normal, responder));
            if batch.len() >= APPLY_BATCH_ENTRIES_MAX {
                self.apply_batch(std::mem::take(&mut batch), std::mem::take(&mut responders))
                    .await?;
            }
        }
        if !batch.is_empty() {
            self.apply_batch(batch, responders).await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            host: Arc::clone(&self.host),
            snap_dir: self.snap_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: SnapshotDir,
    ) -> Result<(), io::Error> {
        let host = Arc::clone(&self.host);
        let data = snapshot.0.join(DATA_DIR);
        blocking(move || host.install(&data)).await?;
        // Keep the installed snapshot as the current one, so it can be served onwards.
        let index = meta.last_log_id.as_ref().map_or(0, |log_id| log_id.index);
        let target = self.snap_dir.join(format!("{SNAPSHOT_PREFIX}{index:020}"));
        if snapshot.0 != target {
            let source = snapshot.0.clone();
            let snap_dir = self.snap_dir.clone();
            blocking(move || {
                if target.exists() {
                    fs::remove_dir_all(&target)?;
                }
                fs::rename(&source, &target)?;
                remove_older_snapshots(&snap_dir, &target)
            })
            .await?;
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<EngineSnapshot>, io::Error> {
        let snap_dir = self.snap_dir.clone();
        blocking(move || latest_snapshot(&snap_dir)).await
    }
}

impl StateMachine {
    async fn apply_batch(
        &mut self,
        batch: Vec<CommittedEntry>,
        responders: Vec<(bool, Option<openraft::storage::ApplyResponder<TypeConfig>>)>,
    ) -> io::Result<()> {
        let normal_count = batch
            .iter()
            .filter(|entry| matches!(entry.data, CommittedData::Normal(_)))
            .count();
        // A panic in the host becomes an error, as it does on a blocking thread (a failed
        // join), so openraft hears of it instead of losing its state-machine task.
        let quick =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.host.try_apply_quick(&batch)))
                .unwrap_or_else(|_| Some(Err(io::Error::other("applying a batch panicked"))));
        let results = match quick {
            Some(results) => results?,
            None => {
                let host = Arc::clone(&self.host);
                blocking(move || host.apply(&batch)).await?
            }
        };
        assert_eq!(
            results.len(),
            normal_count,
            "the host must answer every proposal of the batch"
        );
        let mut results = results.into_iter();
        for (is_normal, responder) in responders {
            let result = if is_normal {
                results.next().unwrap_or_default()
            } else {
                Bytes::new()
            };
            if let Some(responder) = responder {
                responder.send(Response(result));
            }
        }
        Ok(())
    }
}

/// Builds snapshots by asking the host for a checkpoint.
pub(super) struct SnapshotBuilder {
    host: Arc<dyn StateMachineHost>,
    snap_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotDir;

    async fn build_snapshot(&mut self) -> Result<EngineSnapshot, io::Error> {
        let host = Arc::clone(&self.host);
        let snap_dir = self.snap_dir.clone();
        blocking(move || build(&*host, &snap_dir)).await
    }
}

fn build(host: &dyn StateMachineHost, snap_dir: &Path) -> io::Result<EngineSnapshot> {
    let building = snap_dir.join(format!("building-{}.tmp", std::process::id()));
    if building.exists() {
        fs::remove_dir_all(&building)?;
    }
    fs::create_dir_all(&building)?;
    let state: AppliedState = host.checkpoint(&building.join(DATA_DIR))?;
    let last_log_id = state.applied.map(to_log_id);
    let meta = Meta {
        last_log_id,
        last_membership: decode_membership(state.membership.as_ref())?,
    };
    // The metadata is fsynced (with its directory) before the snapshot gets its final name,
    // and the rename is fsynced before older snapshots go: a crash at any point leaves at
    // least one complete snapshot.
    let encoded = serde_json::to_vec(&meta).map_err(io::Error::other)?;
    super::wal::write_file_atomically(&building, META_FILE, &encoded)?;
    let LogPos { index, term } = state.applied.unwrap_or(LogPos { index: 0, term: 0 });
    let target = snap_dir.join(format!("{SNAPSHOT_PREFIX}{index:020}"));
    if target.exists() {
        fs::remove_dir_all(&target)?;
    }
    fs::rename(&building, &target)?;
    fs::File::open(snap_dir)?.sync_all()?;
    remove_older_snapshots(snap_dir, &target)?;
    tracing::info!(index, term, path = %target.display(), "snapshot built");
    Ok(Snapshot {
        meta,
        snapshot: SnapshotDir(target),
    })
}

/// The finished snapshot directories in `snap_dir`.
fn snapshot_dirs(snap_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for dir_entry in fs::read_dir(snap_dir)? {
        let path = dir_entry?.path();
        let is_snapshot = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(SNAPSHOT_PREFIX));
        if is_snapshot {
            dirs.push(path);
        }
    }
    Ok(dirs)
}

/// Deletes every finished snapshot except `keep`: checkpoints hard-link table files, so old
/// ones pin disk space.
fn remove_older_snapshots(snap_dir: &Path, keep: &Path) -> io::Result<()> {
    for path in snapshot_dirs(snap_dir)? {
        if path != keep {
            fs::remove_dir_all(&path)?;
        }
    }
    Ok(())
}

fn latest_snapshot(snap_dir: &Path) -> io::Result<Option<EngineSnapshot>> {
    // Names carry the zero-padded index, so sorting them orders snapshots by age. A snapshot
    // whose metadata cannot be read is skipped (openraft builds a new one when needed).
    let mut dirs = snapshot_dirs(snap_dir)?;
    dirs.sort();
    for path in dirs.into_iter().rev() {
        let parsed = fs::read(path.join(META_FILE))
            .map_err(|err| err.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<Meta>(&bytes).map_err(|err| err.to_string())
            });
        match parsed {
            Ok(meta) => {
                return Ok(Some(Snapshot {
                    meta,
                    snapshot: SnapshotDir(path),
                }));
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "skipping a snapshot without readable metadata");
            }
        }
    }
    Ok(None)
}
