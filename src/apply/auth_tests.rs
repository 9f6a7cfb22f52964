//! Auth at apply: an entry checked by the proposer at an older auth revision than the store's
//! is refused without effect, so a revocation committed between check and apply counts; the
//! auth store survives a restart.

use tempfile::TempDir;

use super::*;
use crate::auth::{AuthChange, AuthError, PermType, Permission, hash_password};
use crate::storage::member_db::MemberDb;
use crate::types::PutRequest;

fn open(dir: &Path) -> Applier {
    Applier::new(MemberDb::open(dir).unwrap()).unwrap()
}

/// Applies one entry after the applied index and returns its decoded outcome.
fn apply_one(
    applier: &Applier,
    proposal: &Proposal,
    stamp: Option<&AuthStamp>,
) -> Result<ApplyOutcome, ApplyError> {
    let index = applier.applied_index() + 1;
    let entry = CommittedEntry {
        position: LogPos { index, term: 1 },
        data: CommittedData::Normal(codec::encode_stamped(index, proposal, stamp)),
    };
    let results = applier.apply(&[entry]).unwrap();
    codec::decode_outcome(&results[0])
}

fn change(applier: &Applier, change: AuthChange) {
    apply_one(applier, &Proposal::Auth(change), None).unwrap();
}

fn put_k() -> Proposal {
    Proposal::Put(PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        ..PutRequest::default()
    })
}

/// root (root role) and `u` with role `r` holding READWRITE on `k`, auth on.
fn enabled(applier: &Applier) {
    let hash = hash_password("pw", 4).unwrap();
    for step in [
        AuthChange::UserAdd {
            name: "root".into(),
            password: Some(hash.clone()),
        },
        AuthChange::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        AuthChange::UserAdd {
            name: "u".into(),
            password: Some(hash),
        },
        AuthChange::RoleAdd { name: "r".into() },
        AuthChange::RoleGrantPermission {
            role: "r".into(),
            permission: Permission {
                perm_type: PermType::ReadWrite,
                key: Bytes::from_static(b"k"),
                range_end: Bytes::new(),
            },
        },
        AuthChange::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
        AuthChange::Enable,
    ] {
        change(applier, step);
    }
}

#[test]
fn a_write_checked_before_a_revoke_and_applied_after_it_is_refused() {
    let dir = TempDir::new().unwrap();
    let applier = open(dir.path());
    enabled(&applier);
    let checked = applier.auth().stamp(Some("u"));
    applier
        .auth()
        .check(&checked, &applier.needs(&put_k()))
        .unwrap();
    let written = apply_one(&applier, &put_k(), Some(&checked)).unwrap();
    assert_eq!(written.revision, 2);

    // The proposer checked the next write at `checked`; the revoke commits first.
    change(
        &applier,
        AuthChange::RoleRevokePermission {
            role: "r".into(),
            key: Bytes::from_static(b"k"),
            range_end: Bytes::new(),
        },
    );
    assert_eq!(
        apply_one(&applier, &put_k(), Some(&checked)),
        Err(ApplyError::Auth(AuthError::AuthOldRevision))
    );
    // Checked again (as clientv3's retry does), it is denied.
    let again = applier.auth().stamp(Some("u"));
    assert_eq!(
        apply_one(&applier, &put_k(), Some(&again)),
        Err(ApplyError::Auth(AuthError::PermissionDenied))
    );
    assert_eq!(applier.store().current_revision(), 2, "nothing was written");
    // The member's own proposals carry no stamp and are not checked.
    assert!(apply_one(&applier, &put_k(), None).is_ok());
}

#[test]
fn the_auth_store_survives_a_restart() {
    let dir = TempDir::new().unwrap();
    let (revision, users) = {
        let applier = open(dir.path());
        enabled(&applier);
        (applier.auth().revision(), applier.auth().user_names())
    };
    let reopened = open(dir.path());
    assert!(reopened.auth().is_enabled());
    assert_eq!(reopened.auth().revision(), revision);
    assert_eq!(reopened.auth().user_names(), users);
    assert_eq!(
        reopened.auth().role("r").unwrap().permissions.len(),
        1,
        "role r keeps its permission"
    );
}
