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
use crate::raft::{MemberEntry, MemberNode};

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
    /// The membership to bootstrap with while the Raft log is empty, fixed when the data dir
    /// was made by `mnemo snapshot restore` (from its flags, as etcd's restore fixes it), so
    /// a restored member's first start does not depend on repeating those flags. `None` for
    /// a data dir made by a start: the flags give the membership then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_members: Option<BTreeMap<u64, MemberNode>>,
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
    /// The identity stored in `member_dir`, if this member started before.
    pub(super) fn load(member_dir: &Path, config: &Config) -> Result<Option<Identity>, NodeError> {
        let path = member_dir.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let identity: Identity =
                    serde_json::from_slice(&bytes).map_err(|err| NodeError::DataDir {
                        path: path.display().to_string(),
                        reason: err.to_string(),
                    })?;
                if identity.name != config.name {
                    tracing::warn!(stored = %identity.name, flag = %config.name, "data dir belongs to another name; keeping the stored identity");
                }
                Ok(Some(identity))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(NodeError::DataDir {
                path: path.display().to_string(),
                reason: err.to_string(),
            }),
        }
    }

    /// The identity of a founding member of a new cluster, derived from the flags alone so
    /// every founding member computes the same ids.
    pub(super) fn for_new_cluster(config: &Config) -> Result<Identity, NodeError> {
        let members = config.initial_cluster_members()?;
        let ids: Vec<u64> = members
            .iter()
            .map(|(_, urls)| member_id(urls, &config.initial_cluster_token))
            .collect();
        Ok(Identity {
            name: config.name.clone(),
            member_id: member_id(&advertised(config), &config.initial_cluster_token),
            cluster_id: cluster_id(&ids),
            bootstrap_members: None,
        })
    }

    /// The identity of a member joining a running cluster, which gave it its id (at
    /// MemberAdd) and its cluster id.
    pub(super) fn for_existing_cluster(
        config: &Config,
        cluster_id: u64,
        members: &[MemberEntry],
    ) -> Result<Identity, NodeError> {
        let mut mine = advertised(config);
        mine.sort();
        let found = members.iter().find(|(_, node, _)| {
            let mut theirs = node.peer_urls.clone();
            theirs.sort();
            theirs == mine
        });
        match found {
            Some((id, _, _)) => Ok(Identity {
                name: config.name.clone(),
                member_id: *id,
                cluster_id,
                bootstrap_members: None,
            }),
            None => Err(NodeError::Join(format!(
                "no member of cluster {cluster_id:x} has the peer URLs {mine:?}; add this member first (etcdctl member add {} --peer-urls={})",
                config.name,
                mine.join(",")
            ))),
        }
    }

    /// Stores the identity so a restart keeps it whatever the flags say.
    pub(super) fn save(&self, member_dir: &Path) -> Result<(), NodeError> {
        let data_dir_error = |reason: String| NodeError::DataDir {
            path: member_dir.join(IDENTITY_FILE).display().to_string(),
            reason,
        };
        let encoded =
            serde_json::to_vec_pretty(self).map_err(|err| data_dir_error(err.to_string()))?;
        crate::raft::wal::write_file_atomically(member_dir, IDENTITY_FILE, &encoded)
            .map_err(|err| data_dir_error(err.to_string()))
    }

    /// The membership a new cluster starts with. Every founding member must build exactly
    /// the same one (its first log entry), so client URLs are left empty: each member
    /// publishes its own once it runs, as etcd does.
    pub(super) fn initial_members(config: &Config) -> BTreeMap<u64, MemberNode> {
        let members = config.initial_cluster_members().unwrap_or_default();
        members
            .into_iter()
            .map(|(name, peer_urls)| {
                let id = member_id(&peer_urls, &config.initial_cluster_token);
                (
                    id,
                    MemberNode {
                        name,
                        peer_urls,
                        client_urls: Vec::new(),
                    },
                )
            })
            .collect()
    }
}

fn advertised(config: &Config) -> Vec<String> {
    config
        .initial_advertise_peer_urls
        .iter()
        .map(url_text)
        .collect()
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
        let first = Identity::for_new_cluster(&Config::default()).unwrap();
        first.save(dir.path()).unwrap();
        let other_token = Config {
            initial_cluster_token: "changed".into(),
            ..Config::default()
        };
        assert_ne!(Identity::for_new_cluster(&other_token).unwrap(), first);
        let second = Identity::load(dir.path(), &other_token).unwrap();
        assert_eq!(second, Some(first));
    }

    #[test]
    fn a_joining_member_takes_the_id_the_cluster_gave_its_urls() {
        let config = Config {
            name: "new".into(),
            initial_advertise_peer_urls: crate::embed::parse_urls(
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2480",
            )
            .unwrap(),
            ..Config::default()
        };
        let node = |url: &str| MemberNode {
            name: String::new(),
            peer_urls: vec![url.to_owned()],
            client_urls: Vec::new(),
        };
        let members = vec![
            (5, node("http://127.0.0.1:2380"), false),
            (9, node("http://127.0.0.1:2480"), true),
        ];
        let identity = Identity::for_existing_cluster(&config, 77, &members).unwrap();
        assert_eq!((identity.member_id, identity.cluster_id), (9, 77));
        let error = Identity::for_existing_cluster(&config, 77, &members[..1]).unwrap_err();
        assert!(error.to_string().contains("member add"), "{error}");
    }
}
