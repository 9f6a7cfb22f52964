use std::sync::Arc;
use std::time::Duration;

use super::token::{TokenOwner, Tokens};
use super::*;
use crate::lease::ManualClock;

fn hash(text: &str) -> PasswordHash {
    // Tests use bcrypt's lowest cost; the stored format is the same.
    hash_password(text, 4).unwrap()
}

fn applied(store: &AuthStore, change: AuthChange) {
    store
        .apply(&change)
        .unwrap_or_else(|err| panic!("{change:?}: {err}"));
}

fn permission(perm_type: PermType, key: &str, range_end: &[u8]) -> Permission {
    Permission {
        perm_type,
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end),
    }
}

/// root with the root role, user `u` with role `r`, auth on.
fn enabled_store(grants: &[Permission]) -> AuthStore {
    let store = AuthStore::new();
    applied(
        &store,
        AuthChange::UserAdd {
            name: "root".into(),
            password: Some(hash("pw")),
        },
    );
    applied(
        &store,
        AuthChange::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
    );
    applied(
        &store,
        AuthChange::UserAdd {
            name: "u".into(),
            password: None,
        },
    );
    applied(&store, AuthChange::RoleAdd { name: "r".into() });
    for grant in grants {
        applied(
            &store,
            AuthChange::RoleGrantPermission {
                role: "r".into(),
                permission: grant.clone(),
            },
        );
    }
    applied(
        &store,
        AuthChange::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
    );
    applied(&store, AuthChange::Enable);
    store
}

#[test]
fn enable_needs_root_user_with_root_role() {
    let store = AuthStore::new();
    assert_eq!(
        store.apply(&AuthChange::Enable),
        Err(AuthError::RootUserNotExist)
    );
    applied(
        &store,
        AuthChange::UserAdd {
            name: "root".into(),
            password: Some(hash("pw")),
        },
    );
    assert_eq!(
        store.apply(&AuthChange::Enable),
        Err(AuthError::RootRoleNotExist)
    );
    assert!(!store.is_enabled());
    // The root role can be granted although no role named root was added.
    applied(
        &store,
        AuthChange::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
    );
    let before = store.revision();
    applied(&store, AuthChange::Enable);
    assert!(store.is_enabled());
    assert_eq!(store.revision(), before + 1);
    // Enabling again changes nothing, not even the revision.
    applied(&store, AuthChange::Enable);
    assert_eq!(store.revision(), before + 1);
}

#[test]
fn root_cannot_be_removed_or_lose_root_while_auth_is_on() {
    let store = enabled_store(&[]);
    assert_eq!(
        store.apply(&AuthChange::UserDelete {
            name: "root".into()
        }),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        store.apply(&AuthChange::UserRevokeRole {
            user: "root".into(),
            role: "root".into()
        }),
        Err(AuthError::InvalidAuthMgmt)
    );
    applied(&store, AuthChange::Disable);
    applied(
        &store,
        AuthChange::UserDelete {
            name: "root".into(),
        },
    );
}

#[test]
fn management_errors_are_etcds() {
    let store = enabled_store(&[permission(PermType::Read, "a", b"")]);
    let cases = [
        (
            AuthChange::UserAdd {
                name: "u".into(),
                password: None,
            },
            AuthError::UserAlreadyExist,
        ),
        (
            AuthChange::UserAdd {
                name: String::new(),
                password: None,
            },
            AuthError::UserEmpty,
        ),
        (
            AuthChange::UserDelete { name: "x".into() },
            AuthError::UserNotFound,
        ),
        (
            AuthChange::RoleAdd { name: "r".into() },
            AuthError::RoleAlreadyExist,
        ),
        (
            AuthChange::RoleAdd {
                name: String::new(),
            },
            AuthError::RoleEmpty,
        ),
        (
            AuthChange::RoleDelete { name: "x".into() },
            AuthError::RoleNotFound,
        ),
        (
            AuthChange::UserGrantRole {
                user: "u".into(),
                role: "x".into(),
            },
            AuthError::RoleNotFound,
        ),
        (
            AuthChange::UserGrantRole {
                user: "x".into(),
                role: "r".into(),
            },
            AuthError::UserNotFound,
        ),
        (
            AuthChange::UserRevokeRole {
                user: "u".into(),
                role: "root".into(),
            },
            AuthError::RoleNotGranted,
        ),
        (
            AuthChange::RoleRevokePermission {
                role: "r".into(),
                key: "b".into(),
                range_end: Bytes::new(),
            },
            AuthError::PermissionNotGranted,
        ),
        (
            AuthChange::RoleDelete {
                name: "root".into(),
            },
            AuthError::InvalidAuthMgmt,
        ),
    ];
    let revision = store.revision();
    for (change, error) in cases {
        assert_eq!(store.apply(&change), Err(error), "{change:?}");
    }
    assert_eq!(store.revision(), revision, "refused changes move nothing");
}

#[test]
fn permission_decisions_follow_etcds_range_rules() {
    let store = enabled_store(&[
        permission(PermType::ReadWrite, "a", b""),
        permission(PermType::Read, "p", b"q"),
        permission(PermType::Write, "z", b"\0"),
        // Two touching ranges cover their union.
        permission(PermType::Read, "m", b"n"),
        permission(PermType::Read, "n", b"o"),
    ]);
    let stamp = store.stamp(Some("u"));
    let read = |key: &str, end: &[u8]| Needs {
        read: vec![KeyRange::new(key.to_owned(), Bytes::copy_from_slice(end))],
        ..Needs::default()
    };
    let write = |key: &str, end: &[u8]| Needs {
        write: vec![KeyRange::new(key.to_owned(), Bytes::copy_from_slice(end))],
        ..Needs::default()
    };
    let allowed = |needs: Needs| store.check(&stamp, &needs).is_ok();
    assert!(allowed(read("a", b"")));
    assert!(allowed(write("a", b"")));
    assert!(!allowed(read("a", b"b")), "a range wider than the key");
    assert!(allowed(read("p1", b"")));
    assert!(allowed(read("p", b"q")));
    assert!(allowed(read("p1", b"p2")));
    assert!(!allowed(read("p", b"r")), "overlapping the end");
    assert!(!allowed(write("p1", b"")), "read-only grant");
    assert!(allowed(write("zz", b"")));
    assert!(allowed(write("z", b"\0")));
    assert!(!allowed(write("y", b"\0")), "starts before the grant");
    assert!(!allowed(read("zz", b"")), "write-only grant");
    assert!(allowed(read("m", b"o")));
    assert!(!allowed(read("b", b"")));
    assert!(!allowed(Needs::admin()));
    assert!(allowed(Needs::anyone()));
    assert!(store.check(&store.stamp(None), &Needs::anyone()).is_ok());
    assert!(
        store
            .check(&store.stamp(Some("root")), &Needs::admin())
            .is_ok()
    );
    assert_eq!(
        store.check(&store.stamp(None), &read("a", b"")),
        Err(AuthError::UserEmpty)
    );
    // A stamp older than the store is refused whatever it asks.
    applied(&store, AuthChange::RoleAdd { name: "s".into() });
    assert_eq!(
        store.check(&stamp, &read("a", b"")),
        Err(AuthError::AuthOldRevision)
    );
}

#[test]
fn error_codes_round_trip() {
    for error in AuthError::ALL {
        assert_eq!(AuthError::from_code(error.code()), Some(error));
    }
}

#[test]
fn password_hash_never_shows_in_debug() {
    let hashed = hash("secret");
    assert!(verify_password("secret", &hashed));
    assert!(!verify_password("guess", &hashed));
    let text = format!(
        "{:?}",
        AuthChange::UserChangePassword {
            name: "u".into(),
            password: hashed.clone()
        }
    );
    assert!(!text.contains(&hashed.0), "{text}");
}

#[test]
fn tokens_expire_and_follow_the_users_credentials() {
    let clock = Arc::new(ManualClock::default());
    let tokens = Tokens::new(clock.clone(), Duration::from_secs(10));
    let owner = TokenOwner {
        user: "u".into(),
        credential_revision: 3,
    };
    let token = tokens.issue(owner.clone()).unwrap();
    let (letters, index) = token.split_once('.').unwrap();
    assert_eq!(letters.len(), 16);
    assert!(letters.chars().all(|c| c.is_ascii_alphabetic()));
    assert_eq!(index, "1");
    let current = |_: &str| Some(3);
    clock.advance(Duration::from_secs(9));
    assert_eq!(tokens.resolve(&token, current), Ok(owner.clone()));
    // The use extended it.
    clock.advance(Duration::from_secs(9));
    assert_eq!(tokens.resolve(&token, current), Ok(owner.clone()));
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        tokens.resolve(&token, current),
        Err(AuthError::InvalidAuthToken)
    );
    let token = tokens.issue(owner).unwrap();
    assert_eq!(
        tokens.resolve(&token, |_| Some(4)),
        Err(AuthError::InvalidAuthToken),
        "a password change invalidates"
    );
    assert_eq!(
        tokens.resolve(&token, |_| Some(3)),
        Err(AuthError::InvalidAuthToken),
        "and the token is gone for good"
    );
    assert_eq!(
        tokens.resolve("nope.1", |_| None),
        Err(AuthError::InvalidAuthToken)
    );
}

#[test]
fn authenticate_attempts_are_limited_per_user() {
    use crate::limits::{AUTHENTICATE_BURST_PER_USER, AUTHENTICATE_REFILL_PER_USER};
    let clock = Arc::new(ManualClock::default());
    let tokens = Tokens::new(clock.clone(), Duration::from_secs(10));
    for _ in 0..AUTHENTICATE_BURST_PER_USER {
        tokens.take_attempt("u").unwrap();
    }
    assert_eq!(tokens.take_attempt("u"), Err(AuthError::TooManyRequests));
    // Another user has a budget of their own.
    tokens.take_attempt("v").unwrap();
    clock.advance(AUTHENTICATE_REFILL_PER_USER);
    tokens.take_attempt("u").unwrap();
    assert_eq!(tokens.take_attempt("u"), Err(AuthError::TooManyRequests));
}
