//! The corruption check: members' HashKV compared at one revision, as etcd's
//! `--experimental-initial-corrupt-check` and `--experimental-corrupt-check-time` do it.
//!
//! Owns the question members ask one another ("your HashKV at revision R"), the verdict over the
//! answers, and the two schedules:
//! - at start (opt-in), a member compares itself with every reachable peer at its own current
//!   revision and refuses to start when one of them disagrees;
//! - periodically (opt-in), the leader compares every member at its current revision and raises
//!   a CORRUPT alarm, through Raft like any client's Alarm ACTIVATE, for each member that differs
//!   from the majority. While it is raised, writes fail with `etcdserver: corrupt cluster`.
//!
//! Only hashes over the same history are compared: same hash revision and same compact
//! revision. A member that cannot answer (unreachable, not yet applied that far, compacted past
//! it) is left out of that round rather than suspected.
//!
//! Must not: change any state other than by proposing the alarm, or read storage other than
//! through [`Server::hash_kv`].

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::Server;
use crate::alarm::{Alarm, AlarmType};
use crate::raft::LeaderCalls;
use crate::storage::mvcc::HashKv;
use crate::types::{MemberId, Revision};

/// How long a member asked for its hash at revision R waits to have applied R. The leader asks
/// at its own current revision, which followers normally reach within milliseconds.
pub const APPLY_WAIT: Duration = Duration::from_millis(500);
/// How often the member polls its revision while it waits to have applied R.
const APPLY_POLL: Duration = Duration::from_millis(10);
/// How long the asking member waits for one member's answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a start-up check refuses to start the member.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorruptionError {
    /// A peer hashed the same history differently.
    #[error(
        "found data inconsistency with peers: member {peer:x} has hash {peer_hash} at revision \
         {revision} (compacted at {compact_revision}), this member {local_hash}"
    )]
    Mismatch {
        /// The peer that disagrees.
        peer: u64,
        /// The revision both hashed.
        revision: Revision,
        /// The compact revision both had.
        compact_revision: Revision,
        /// This member's hash.
        local_hash: u32,
        /// The peer's hash.
        peer_hash: u32,
    },
    /// This member cannot hash its own state.
    #[error("cannot hash this member's state for the corruption check: {0}")]
    Local(String),
}

/// A member's answer to "your HashKV at revision R", as it crosses the peer port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    /// CRC-32 of the history in (compact_revision, revision].
    pub hash: u32,
    /// The revision hashed.
    pub revision: Revision,
    /// The member's compact revision when it hashed.
    pub compact_revision: Revision,
}

impl From<HashKv> for MemberHash {
    fn from(hash: HashKv) -> MemberHash {
        MemberHash {
            hash: hash.hash,
            revision: hash.hash_revision,
            compact_revision: hash.compact_revision,
        }
    }
}

/// The members whose hash disagrees with the rest, given every answer (the asker's own
/// included) and the cluster's size.
///
/// Answers over another history than `reference` (other revision or compact revision) are
/// left out. When more than half of the cluster agrees on one hash, everyone else is corrupt.
/// Without such a majority the asker cannot tell who is right and trusts `reference`, the
/// leader's own hash, as etcd does.
#[must_use]
pub fn disagreeing(
    reference: MemberHash,
    answers: &[(u64, MemberHash)],
    cluster_size: usize,
) -> Vec<u64> {
    let comparable: Vec<(u64, u32)> = answers
        .iter()
        .filter(|(_, answer)| {
            answer.revision == reference.revision
                && answer.compact_revision == reference.compact_revision
        })
        .map(|(member, answer)| (*member, answer.hash))
        .collect();
    let majority = comparable
        .iter()
        .map(|(_, hash)| *hash)
        .find(|hash| comparable.iter().filter(|(_, h)| h == hash).count() * 2 > cluster_size);
    let trusted = majority.unwrap_or(reference.hash);
    comparable
        .into_iter()
        .filter(|(_, hash)| *hash != trusted)
        .map(|(member, _)| member)
        .collect()
}

impl Server {
    /// Installs the answerer of other members' hash questions, and when `interval` is set
    /// starts the periodic check (which acts only while this member leads).
    pub fn start_corruption_checks(
        self: &Arc<Self>,
        interval: Option<Duration>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.raft.set_question_handler(Arc::new(HashQuestions {
            server: Arc::downgrade(self),
        }));
        let interval = interval.filter(|interval| !interval.is_zero())?;
        let server = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once; the first check waits a whole interval.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(server) = server.upgrade() else {
                    return;
                };
                if server.raft.is_leader() {
                    server.check_members().await;
                }
            }
        }))
    }

    /// The start-up check: compares this member's hash at its current revision with every
    /// peer that answers.
    ///
    /// # Errors
    /// [`CorruptionError::Mismatch`] when a peer hashed the same history differently.
    pub async fn check_against_peers(&self) -> Result<(), CorruptionError> {
        let own = self.own_hash().await?;
        let me = self.identity.member_id;
        let answers = self.ask_all(own.revision, me).await;
        for (peer, answer) in answers {
            let comparable =
                answer.revision == own.revision && answer.compact_revision == own.compact_revision;
            if comparable && answer.hash != own.hash {
                return Err(CorruptionError::Mismatch {
                    peer,
                    revision: own.revision,
                    compact_revision: own.compact_revision,
                    local_hash: own.hash,
                    peer_hash: answer.hash,
                });
            }
        }
        tracing::info!(
            revision = own.revision,
            hash = own.hash,
            "initial corruption check passed"
        );
        Ok(())
    }

    /// One round of the leader's check; raises CORRUPT for every member that disagrees.
    async fn check_members(&self) {
        let own = match self.own_hash().await {
            Ok(own) => own,
            Err(err) => {
                tracing::warn!(%err, "corruption check skipped");
                return;
            }
        };
        let me = self.identity.member_id;
        let mut answers = self.ask_all(own.revision, me).await;
        let cluster_size = self.raft.members().len();
        answers.push((me, own));
        let suspects = disagreeing(own, &answers, cluster_size);
        if suspects.is_empty() {
            tracing::debug!(
                revision = own.revision,
                answered = answers.len(),
                "corruption check passed"
            );
            return;
        }
        let raised = self.raised_alarms();
        for member in suspects {
            let hash = answers
                .iter()
                .find(|(id, _)| *id == member)
                .map(|(_, answer)| answer.hash);
            tracing::error!(
                member = %format!("{member:x}"),
                revision = own.revision,
                compact_revision = own.compact_revision,
                leader_hash = own.hash,
                member_hash = ?hash,
                "member's history hashes differently from the cluster's; raising CORRUPT"
            );
            let alarm = Alarm {
                member,
                kind: AlarmType::Corrupt,
            };
            if raised.contains(&alarm) {
                continue;
            }
            if let Err(err) = self.change_alarm(true, alarm).await {
                tracing::warn!(%err, member = %format!("{member:x}"), "cannot raise CORRUPT");
            }
        }
    }

    async fn own_hash(&self) -> Result<MemberHash, CorruptionError> {
        self.hash_kv(0)
            .await
            .map(|(hash, _)| MemberHash::from(hash))
            .map_err(|err| CorruptionError::Local(err.to_string()))
    }

    /// Every other member's hash at `revision`; members that do not answer are left out.
    async fn ask_all(&self, revision: Revision, me: MemberId) -> Vec<(u64, MemberHash)> {
        let question = match postcard::to_stdvec(&revision) {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) => {
                tracing::warn!(%err, "cannot encode the hash question");
                return Vec::new();
            }
        };
        let asks = self
            .raft
            .members()
            .into_iter()
            .map(|(member, _, _)| member)
            .filter(|member| *member != me)
            .map(|member| {
                let question = question.clone();
                async move {
                    let reply = self.raft.ask_member(member, question, ASK_TIMEOUT).await;
                    let answer = reply
                        .map_err(|err| err.to_string())
                        .and_then(|bytes| decode_answer(&bytes));
                    match answer {
                        Ok(answer) => Some((member, answer)),
                        Err(reason) => {
                            tracing::debug!(member = %format!("{member:x}"), %reason, "member did not answer the hash question");
                            None
                        }
                    }
                }
            });
        join_all(asks).await.into_iter().flatten().collect()
    }
}

fn decode_answer(bytes: &[u8]) -> Result<MemberHash, String> {
    postcard::from_bytes::<Result<MemberHash, String>>(bytes)
        .map_err(|err| format!("undecodable hash answer: {err}"))?
}

/// Answers other members' hash questions on this member.
struct HashQuestions {
    server: Weak<Server>,
}

impl HashQuestions {
    async fn answer(&self, question: Bytes) -> Result<MemberHash, String> {
        let revision: Revision = postcard::from_bytes(&question)
            .map_err(|err| format!("undecodable hash question: {err}"))?;
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        loop {
            let server = self.server.upgrade().ok_or("member stopped")?;
            if server.current_header().revision >= revision {
                let (hash, _) = server
                    .hash_kv(revision)
                    .await
                    .map_err(|err| err.to_string())?;
                return Ok(MemberHash::from(hash));
            }
            drop(server);
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("revision {revision} not applied yet"));
            }
            tokio::time::sleep(APPLY_POLL).await;
        }
    }
}

impl LeaderCalls for HashQuestions {
    fn call(
        &self,
        request: Bytes,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send + '_>> {
        Box::pin(async move {
            // The answer's own failure travels inside the bytes, so the asker can tell "no
            // hash at that revision" from a transport failure.
            let answer = self.answer(request).await;
            postcard::to_stdvec(&answer)
                .map(Bytes::from)
                .map_err(|err| format!("cannot encode the hash answer: {err}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hash: u32) -> MemberHash {
        MemberHash {
            hash,
            revision: 10,
            compact_revision: 3,
        }
    }

    #[test]
    fn the_minority_is_corrupt_whoever_leads() {
        let answers = [(1, at(7)), (2, at(7)), (3, at(9))];
        assert_eq!(disagreeing(at(7), &answers, 3), vec![3]);
        // The leader itself is the odd one out.
        assert_eq!(disagreeing(at(9), &answers, 3), vec![3]);
        let answers = [(1, at(9)), (2, at(7)), (3, at(7))];
        assert_eq!(disagreeing(at(9), &answers, 3), vec![1]);
    }

    #[test]
    fn without_a_majority_the_leader_is_trusted() {
        // Two of five answered and they disagree: no hash has more than half the cluster.
        let answers = [(1, at(7)), (2, at(9))];
        assert_eq!(disagreeing(at(7), &answers, 5), vec![2]);
    }

    #[test]
    fn other_histories_are_not_compared() {
        let later = MemberHash {
            revision: 11,
            ..at(9)
        };
        let compacted = MemberHash {
            compact_revision: 5,
            ..at(9)
        };
        let answers = [(1, at(7)), (2, later), (3, compacted)];
        assert!(disagreeing(at(7), &answers, 3).is_empty());
    }

    #[test]
    fn agreement_finds_nobody() {
        let answers = [(1, at(7)), (2, at(7)), (3, at(7))];
        assert!(disagreeing(at(7), &answers, 3).is_empty());
    }
}
