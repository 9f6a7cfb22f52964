//! Member and cluster identifiers: derived from the initial configuration the first time a
//! member starts, then kept in the data directory so a restart keeps them whatever the flags
//! say.
//!
//! Like etcd, a member id is a hash of its sorted peer URLs and the cluster token, and the
//! cluster id a hash of the sorted member ids, so every founding member computes the same
//! values without talking to the others.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::NodeError;
use super::config::{Config, url_text};
use crate::raft::MemberNode;

/// File holding the identity inside the member directory.
const IDENTITY_FILE: &str = "identity.json";

/// Who this member is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Identity {
    /// Member name.
    pub name: String,
    /// Member id.
    pub member_id: u64,
    /// Cluster id.
    pub cluster_id: u64,
}

fn hash_u64(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Zero means "none" in etcd's messages; a hash of zero is vanishingly unlikely but is
    // still mapped away from it.
    u64::from_be_bytes(first).max(1)
}

/// The id of a member with these peer URLs in a cluster with this token.
pub(super) fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut sorted = peer_urls.to_vec();
    sorted.sort();
    let joined = sorted.join("");
    hash_u64(&[joined.as_bytes(), token.as_bytes()])
}

/// The id of a cluster founded by these members.
pub(super) fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut sorted = member_ids.to_vec();
    sorted.sort_unstable();
    let bytes: Vec<u8> = sorted.iter().flat_map(|id| id.to_be_bytes()).collect();
    hash_u64(&[&bytes])
}

impl Identity {
    /// Reads the stored identity, or derives and stores it on the first start.
    pub(super) fn load_or_create(
        member_dir: &Path,
        config: &Config,
    ) -> Result<Identity, NodeError> {
        let path = member_dir.join(IDENTITY_FILE);
        let data_dir_error = |reason: String| NodeError::DataDir {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let identity: Identity = serde_json::from_slice(&bytes)
                    .map_err(|err| data_dir_error(err.to_string()))?;
                if identity.name != config.name {
                    tracing::warn!(stored = %identity.name, flag = %config.name, "data dir belongs to another name; keeping the stored identity");
                }
                return Ok(identity);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(data_dir_error(err.to_string())),
        }
        let members = config.initial_cluster_members()?;
        let ids: Vec<u64> = members
            .iter()
            .map(|(_, urls)| member_id(urls, &config.initial_cluster_token))
            .collect();
        let mine: Vec<String> = config
            .initial_advertise_peer_urls
            .iter()
            .map(url_text)
            .collect();
        let identity = Identity {
            name: config.name.clone(),
            member_id: member_id(&mine, &config.initial_cluster_token),
            cluster_id: cluster_id(&ids),
        };
        let encoded =
            serde_json::to_vec_pretty(&identity).map_err(|err| data_dir_error(err.to_string()))?;
        crate::raft::wal::write_file_atomically(member_dir, IDENTITY_FILE, &encoded)
            .map_err(|err| data_dir_error(err.to_string()))?;
        Ok(identity)
    }

    /// The founding membership, keyed by member id.
    pub(super) fn initial_members(&self, config: &Config) -> BTreeMap<u64, MemberNode> {
        let members = config.initial_cluster_members().unwrap_or_default();
        members
            .into_iter()
            .map(|(name, peer_urls)| {
                let id = member_id(&peer_urls, &config.initial_cluster_token);
                // Only this member knows its client URLs now; the others publish theirs when
                // they start (issue #3).
                let client_urls = if id == self.member_id {
                    config.advertise_client_urls.iter().map(url_text).collect()
                } else {
                    Vec::new()
                };
                (
                    id,
                    MemberNode {
                        name,
                        peer_urls,
                        client_urls,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_order_free() {
        let a = member_id(
            &[
                "http://127.0.0.1:2380".into(),
                "http://127.0.0.2:2380".into(),
            ],
            "t",
        );
        let b = member_id(
            &[
                "http://127.0.0.2:2380".into(),
                "http://127.0.0.1:2380".into(),
            ],
            "t",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(
                &[
                    "http://127.0.0.1:2380".into(),
                    "http://127.0.0.2:2380".into()
                ],
                "other"
            )
        );
        assert_eq!(cluster_id(&[3, 1, 2]), cluster_id(&[1, 2, 3]));
    }

    #[test]
    fn identity_survives_restart_with_other_flags() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), &Config::default()).unwrap();
        let other_token = Config {
            initial_cluster_token: "changed".into(),
            ..Config::default()
        };
        let second = Identity::load_or_create(dir.path(), &other_token).unwrap();
        assert_eq!(first, second);
    }
}
