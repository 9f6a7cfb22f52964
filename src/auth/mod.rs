//! Authentication and role-based access: the replicated auth store (users, roles, key-range
//! permissions, the enabled flag and the auth revision), the permission decision, and this
//! member's simple tokens ([`token`]).
//!
//! The store changes only when apply hands it a committed [`AuthChange`]; every change that
//! does something moves the auth revision on by one. The new rows go into apply's batch, in
//! the `auth` column family, and [`AuthStore::load`] reads them back at open and after a
//! snapshot install. So every member holds the same users, roles and revision at the same
//! applied index.
//!
//! Passwords never come here in clear: the server hashes them (bcrypt, slow on purpose)
//! before it proposes, and only the hash is replicated and stored. Checking a password
//! ([`verify_password`]) is the server's job too, off the apply path.
//!
//! The decision ([`AuthStore::check`]) is made twice for every write, with the same inputs:
//! by the server before proposing, and by apply against the auth revision the server checked
//! at ([`AuthStamp`]). A request checked at an older revision than the store's is refused with
//! "revision of auth store is old" (clientv3 then retries), so a permission revoked between
//! check and apply takes effect.
//!
//! This module must not propose, await, read the clock (tokens take a [`crate::lease::Clock`])
//! or write RocksDB itself. It mirrors etcd's `auth/store.go` and `auth/range_perm_cache.go`.

pub mod jwt;
pub mod token;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::storage::backend::Cf;
use crate::storage::mvcc::{MvccError, MvccStore};
use crate::types::{
    DeleteRangeRequest, KeyRange, PutRequest, RANGE_END_ALL, RangeRequest, RequestOp, TxnRequest,
};

/// The user that may do anything once auth is on, and that must exist to turn it on.
pub const ROOT_USER: &str = "root";
/// The role that grants everything, including auth management.
pub const ROOT_ROLE: &str = "root";

/// `auth` column family row: 1 when auth is on.
const ROW_ENABLED: &[u8] = b"enabled";
/// `auth` column family row: the auth revision, big-endian.
const ROW_REVISION: &[u8] = b"revision";
/// `auth` column family prefix of user rows (`user/<name>`).
const USER_PREFIX: &[u8] = b"user/";
/// `auth` column family prefix of role rows (`role/<name>`).
const ROLE_PREFIX: &[u8] = b"role/";

/// An auth failure, with etcd's exact message (the wire contract).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a taken name.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A user name that is empty, or a request without a user while auth is on.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a taken name.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// A role name that is empty.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user name or password, or a user without a password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The caller lacks the permission the request needs.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not hold.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not hold.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// Deleting `root`, or taking `root`'s root role or the root role away, while auth is on.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A token that is unknown, expired, or whose user was deleted or changed password.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// The request was checked at an older auth revision than the store's (clientv3 retries).
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Authenticate attempts beyond the per-user rate, or more live tokens than kept.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// Authenticate on a member configured with a JWT public key only.
    /// etcd-compat: etcd has no gRPC error for it and sends its auth package's text.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
}

impl AuthError {
    /// Every variant, in code order (the codes are part of the apply result format).
    pub const ALL: [AuthError; 19] = [
        AuthError::RootUserNotExist,
        AuthError::RootRoleNotExist,
        AuthError::UserAlreadyExist,
        AuthError::UserEmpty,
        AuthError::UserNotFound,
        AuthError::RoleAlreadyExist,
        AuthError::RoleNotFound,
        AuthError::RoleEmpty,
        AuthError::AuthFailed,
        AuthError::PermissionDenied,
        AuthError::RoleNotGranted,
        AuthError::PermissionNotGranted,
        AuthError::AuthNotEnabled,
        AuthError::InvalidAuthMgmt,
        AuthError::InvalidAuthToken,
        AuthError::AuthOldRevision,
        AuthError::TooManyRequests,
        AuthError::PermissionNotGiven,
        AuthError::VerifyOnly,
    ];

    /// A stable number for the apply result format; never reused.
    pub fn code(&self) -> u32 {
        let position = AuthError::ALL
            .iter()
            .position(|error| error == self)
            .unwrap_or(0);
        u32::try_from(position).unwrap_or(0)
    }

    /// The error a [`AuthError::code`] stands for.
    pub fn from_code(code: u32) -> Option<AuthError> {
        AuthError::ALL.get(usize::try_from(code).ok()?).cloned()
    }
}

/// What a permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermType {
    /// Range and watch.
    Read,
    /// Put and delete.
    Write,
    /// Both.
    ReadWrite,
}

impl PermType {
    fn allows_read(self) -> bool {
        matches!(self, PermType::Read | PermType::ReadWrite)
    }

    fn allows_write(self) -> bool {
        matches!(self, PermType::Write | PermType::ReadWrite)
    }
}

/// A permission over a key, a range or everything from a key on, with etcd's `range_end`
/// rules (empty: the key alone; `"\0"`: every key from `key` on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub perm_type: PermType,
    /// First key.
    pub key: Bytes,
    /// End of the range (exclusive), with etcd's special values.
    pub range_end: Bytes,
}

/// A bcrypt hash. Its `Debug` hides it, so no log line can carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PasswordHash(..)")
    }
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Password hash; `None` for a `--no-password` user (certificate auth only).
    pub password: Option<PasswordHash>,
    /// Granted role names.
    pub roles: BTreeSet<String>,
    /// The auth revision at which the user was added or last changed password; a token
    /// issued for an older one is no longer valid.
    pub credential_revision: u64,
}

/// A stored role: its permissions, ordered by key then range end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Permissions.
    pub permissions: Vec<Permission>,
}

/// A committed change of the auth store. Passwords arrive hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthChange {
    /// Turn auth on.
    Enable,
    /// Turn auth off.
    Disable,
    /// Add a user.
    UserAdd {
        /// Name.
        name: String,
        /// Hash, `None` for a user without password.
        password: Option<PasswordHash>,
    },
    /// Delete a user.
    UserDelete {
        /// Name.
        name: String,
    },
    /// Replace a user's password hash.
    UserChangePassword {
        /// Name.
        name: String,
        /// New hash.
        password: PasswordHash,
    },
    /// Grant a role to a user.
    UserGrantRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// Revoke a role from a user.
    UserRevokeRole {
        /// User name.
        user: String,
        /// Role name.
        role: String,
    },
    /// Add a role.
    RoleAdd {
        /// Name.
        name: String,
    },
    /// Delete a role (and take it from every user).
    RoleDelete {
        /// Name.
        name: String,
    },
    /// Grant (or change the type of) a permission.
    RoleGrantPermission {
        /// Role name.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// Revoke the permission over exactly `key`..`range_end`.
    RoleRevokePermission {
        /// Role name.
        role: String,
        /// First key.
        key: Bytes,
        /// Range end.
        range_end: Bytes,
    },
}

impl AuthChange {
    /// True for every change (all of them are auth management, which needs the root role).
    pub fn needs_admin(&self) -> bool {
        true
    }
}

/// Who a proposal was checked for, and at which auth revision; carried in the Raft entry so
/// apply can check again. Proposals the member makes for itself (lease expiry, compaction
/// schedules, alarms) carry none and are not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthStamp {
    /// The user; empty when the caller sent no token.
    pub user: String,
    /// The auth revision the check was made at.
    pub revision: u64,
}

/// What a request needs to be allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The root role (auth management, compaction, alarms, member changes, maintenance).
    pub admin: bool,
    /// Ranges the caller must be allowed to read.
    pub read: Vec<KeyRange>,
    /// Ranges the caller must be allowed to write.
    pub write: Vec<KeyRange>,
}

impl Needs {
    /// The root role.
    pub fn admin() -> Needs {
        Needs {
            admin: true,
            ..Needs::default()
        }
    }

    /// Nothing at all: anyone may, even without a token (lease grants, as in etcd).
    pub fn anyone() -> Needs {
        Needs::default()
    }

    /// True when the request needs no permission.
    pub fn is_anyone(&self) -> bool {
        !self.admin && self.read.is_empty() && self.write.is_empty()
    }

    /// A range read (and a watch): READ over its range.
    pub fn range(request: &RangeRequest) -> Needs {
        Needs {
            read: vec![request.range.clone()],
            ..Needs::default()
        }
    }

    /// A put: WRITE on the key, READ too when it asks for the previous value, and WRITE on
    /// every key already attached to its lease (`lease_keys`), as etcd's applier checks.
    pub fn put(request: &PutRequest, lease_keys: Vec<Bytes>) -> Needs {
        let key = KeyRange::single(request.key.clone());
        let mut needs = Needs {
            write: vec![key.clone()],
            ..Needs::default()
        };
        if request.prev_kv {
            needs.read.push(key);
        }
        needs
            .write
            .extend(lease_keys.into_iter().map(KeyRange::single));
        needs
    }

    /// A delete: WRITE over its range, READ too when it asks for the previous values.
    pub fn delete(request: &DeleteRangeRequest) -> Needs {
        let mut needs = Needs {
            write: vec![request.range.clone()],
            ..Needs::default()
        };
        if request.prev_kv {
            needs.read.push(request.range.clone());
        }
        needs
    }

    /// A transaction: READ on every compare and range, WRITE on every put and delete, in both
    /// branches and nested transactions, whichever branch runs (etcd's `checkTxnAuth`; it
    /// checks neither `prev_kv` nor leases inside a transaction).
    pub fn txn(request: &TxnRequest) -> Needs {
        let mut needs = Needs::default();
        add_txn(&mut needs, request);
        needs
    }

    /// WRITE on each of `keys` (a lease revoke: every key attached to the lease; with no key
    /// attached, anyone may revoke it, as in etcd).
    pub fn write_keys(keys: Vec<Bytes>) -> Needs {
        Needs {
            write: keys.into_iter().map(KeyRange::single).collect(),
            ..Needs::default()
        }
    }
}

fn add_txn(needs: &mut Needs, request: &TxnRequest) {
    needs
        .read
        .extend(request.compare.iter().map(|compare| compare.range.clone()));
    for op in request.success.iter().chain(request.failure.iter()) {
        match op {
            RequestOp::Range(range) => needs.read.push(range.range.clone()),
            RequestOp::Put(put) => needs.write.push(KeyRange::single(put.key.clone())),
            RequestOp::DeleteRange(delete) => needs.write.push(delete.range.clone()),
            RequestOp::Txn(nested) => add_txn(needs, nested),
        }
    }
}

/// The replicated auth state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

/// One row of the `auth` column family to write (`Some`) or delete (`None`).
pub type AuthRow = (Vec<u8>, Option<Vec<u8>>);

/// The auth store of one member.
#[derive(Debug, Default)]
pub struct AuthStore {
    /// The replicated state. Written only by apply (one writer); read by every request.
    /// Never held across an await or while taking another lock.
    state: RwLock<AuthState>,
}

impl AuthStore {
    /// An empty store: auth off, revision 0.
    pub fn new() -> AuthStore {
        AuthStore::default()
    }

    /// Replaces the state with what `store`'s `auth` column family holds.
    ///
    /// # Errors
    /// Backend failures, and rows that do not decode.
    pub fn load(&self, store: &MvccStore) -> Result<(), MvccError> {
        let backend = store.backend();
        let mut state = AuthState::default();
        for item in backend.scan(Cf::Auth, &[], None) {
            let (key, value) = item?;
            let corrupt = |what: &str| MvccError::Corrupt(format!("auth row {key:?}: {what}"));
            if &*key == ROW_ENABLED {
                state.enabled = value.first() == Some(&1);
            } else if &*key == ROW_REVISION {
                let bytes: [u8; 8] = (*value).try_into().map_err(|_| corrupt("not 8 bytes"))?;
                state.revision = u64::from_be_bytes(bytes);
            } else if let Some(name) = key.strip_prefix(USER_PREFIX) {
                let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("name"))?;
                let user = postcard::from_bytes(&value).map_err(|err| corrupt(&err.to_string()))?;
                state.users.insert(name, user);
            } else if let Some(name) = key.strip_prefix(ROLE_PREFIX) {
                let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("name"))?;
                let role = postcard::from_bytes(&value).map_err(|err| corrupt(&err.to_string()))?;
                state.roles.insert(name, role);
            }
            // Rows under other names are not this format's; they are left alone.
        }
        *self.state.write() = state;
        Ok(())
    }

    /// True while auth is on.
    pub fn is_enabled(&self) -> bool {
        self.state.read().enabled
    }

    /// The auth revision: how many changes the store has applied.
    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    /// A user's stored record.
    ///
    /// # Errors
    /// [`AuthError::UserNotFound`].
    pub fn user(&self, name: &str) -> Result<User, AuthError> {
        self.state
            .read()
            .users
            .get(name)
            .cloned()
            .ok_or(AuthError::UserNotFound)
    }

    /// Every user name, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.state.read().users.keys().cloned().collect()
    }

    /// A role's permissions.
    ///
    /// # Errors
    /// [`AuthError::RoleNotFound`].
    pub fn role(&self, name: &str) -> Result<Role, AuthError> {
        self.state
            .read()
            .roles
            .get(name)
            .cloned()
            .ok_or(AuthError::RoleNotFound)
    }

    /// Every role name, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.state.read().roles.keys().cloned().collect()
    }

    /// Applies a committed change; returns the rows to write in the same batch.
    /// Deterministic: the outcome depends on the state and the change only.
    ///
    /// # Errors
    /// etcd's refusal of the change; the state is then unchanged.
    pub fn apply(&self, change: &AuthChange) -> Result<Vec<AuthRow>, AuthError> {
        let mut state = self.state.write();
        let mut rows = Vec::new();
        let next_revision = state.revision + 1;
        match change {
            AuthChange::Enable => {
                if state.enabled {
                    return Ok(rows);
                }
                let root = state
                    .users
                    .get(ROOT_USER)
                    .ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(AuthError::RootRoleNotExist);
                }
                state.enabled = true;
                rows.push((ROW_ENABLED.to_vec(), Some(vec![1])));
            }
            AuthChange::Disable => {
                if !state.enabled {
                    return Ok(rows);
                }
                state.enabled = false;
                rows.push((ROW_ENABLED.to_vec(), Some(vec![0])));
            }
            AuthChange::UserAdd { name, password } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if state.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = User {
                    password: password.clone(),
                    roles: BTreeSet::new(),
                    credential_revision: next_revision,
                };
                rows.push(user_row(name, Some(&user)));
                state.users.insert(name.clone(), user);
            }
            AuthChange::UserDelete { name } => {
                if state.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if state.users.remove(name).is_none() {
                    return Err(AuthError::UserNotFound);
                }
                rows.push(user_row(name, None));
            }
            AuthChange::UserChangePassword { name, password } => {
                let user = state.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password = Some(password.clone());
                user.credential_revision = next_revision;
                let user = user.clone();
                rows.push(user_row(name, Some(&user)));
            }
            AuthChange::UserGrantRole { user, role } => {
                // etcd-compat: the root role can be granted before any role named root exists.
                if role != ROOT_ROLE && !state.roles.contains_key(role) {
                    if !state.users.contains_key(user) {
                        return Err(AuthError::UserNotFound);
                    }
                    return Err(AuthError::RoleNotFound);
                }
                let record = state.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !record.roles.insert(role.clone()) {
                    return Ok(rows);
                }
                let record = record.clone();
                rows.push(user_row(user, Some(&record)));
            }
            AuthChange::UserRevokeRole { user, role } => {
                if state.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let record = state.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !record.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
                let record = record.clone();
                rows.push(user_row(user, Some(&record)));
            }
            AuthChange::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if state.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                let role = Role::default();
                rows.push(role_row(name, Some(&role)));
                state.roles.insert(name.clone(), role);
            }
            AuthChange::RoleDelete { name } => {
                if state.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if state.roles.remove(name).is_none() {
                    return Err(AuthError::RoleNotFound);
                }
                rows.push(role_row(name, None));
                // Users lose the deleted role, as in etcd.
                for (user_name, user) in &mut state.users {
                    if user.roles.remove(name) {
                        rows.push(user_row(user_name, Some(user)));
                    }
                }
            }
            AuthChange::RoleGrantPermission { role, permission } => {
                let record = state.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let same_range = |held: &Permission| {
                    held.key == permission.key && held.range_end == permission.range_end
                };
                if let Some(held) = record.permissions.iter_mut().find(|held| same_range(held)) {
                    held.perm_type = permission.perm_type;
                } else {
                    record.permissions.push(permission.clone());
                    record
                        .permissions
                        .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                }
                let record = record.clone();
                rows.push(role_row(role, Some(&record)));
            }
            AuthChange::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let record = state.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = record.permissions.len();
                record
                    .permissions
                    .retain(|held| !(held.key == key && held.range_end == range_end));
                if record.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                let record = record.clone();
                rows.push(role_row(role, Some(&record)));
            }
        }
        state.revision = next_revision;
        rows.push((
            ROW_REVISION.to_vec(),
            Some(next_revision.to_be_bytes().to_vec()),
        ));
        Ok(rows)
    }

    /// The stamp a caller's request is checked with now: the user (empty without one) and
    /// the current auth revision.
    pub fn stamp(&self, user: Option<&str>) -> AuthStamp {
        AuthStamp {
            user: user.unwrap_or_default().to_owned(),
            revision: self.revision(),
        }
    }

    /// Whether `stamp`'s user may do what `needs` lists. Always allowed while auth is off,
    /// and for requests that need nothing.
    ///
    /// # Errors
    /// [`AuthError::UserEmpty`] without a user, [`AuthError::AuthOldRevision`] when the store
    /// changed since the stamp was taken, [`AuthError::PermissionDenied`] otherwise (etcd's
    /// `isOpPermitted` order).
    pub fn check(&self, stamp: &AuthStamp, needs: &Needs) -> Result<(), AuthError> {
        let state = self.state.read();
        if !state.enabled || needs.is_anyone() {
            return Ok(());
        }
        if stamp.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if stamp.revision < state.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let Some(user) = state.users.get(&stamp.user) else {
            // etcd-compat: an admin check names the missing user, a key check does not.
            return Err(if needs.admin {
                AuthError::UserNotFound
            } else {
                AuthError::PermissionDenied
            });
        };
        if user.roles.contains(ROOT_ROLE) {
            return Ok(());
        }
        if needs.admin {
            return Err(AuthError::PermissionDenied);
        }
        let granted = |want: fn(PermType) -> bool| -> Vec<Interval> {
            let mut intervals: Vec<Interval> = user
                .roles
                .iter()
                .filter_map(|name| state.roles.get(name))
                .flat_map(|role| role.permissions.iter())
                .filter(|permission| want(permission.perm_type))
                .map(|permission| Interval::of(&permission.key, &permission.range_end))
                .collect();
            merge(&mut intervals);
            intervals
        };
        if !needs.read.is_empty() {
            let readable = granted(PermType::allows_read);
            if !needs.read.iter().all(|range| covered(&readable, range)) {
                return Err(AuthError::PermissionDenied);
            }
        }
        if !needs.write.is_empty() {
            let writable = granted(PermType::allows_write);
            if !needs.write.iter().all(|range| covered(&writable, range)) {
                return Err(AuthError::PermissionDenied);
            }
        }
        Ok(())
    }
}

fn user_row(name: &str, user: Option<&User>) -> AuthRow {
    let mut key = USER_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    // postcard cannot fail on these plain structs; an empty row would fail loudly at load.
    (
        key,
        user.map(|user| postcard::to_stdvec(user).unwrap_or_default()),
    )
}

fn role_row(name: &str, role: Option<&Role>) -> AuthRow {
    let mut key = ROLE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    (
        key,
        role.map(|role| postcard::to_stdvec(role).unwrap_or_default()),
    )
}

/// A key interval `[start, end)`; `end` `None` is open-ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// etcd's range syntax: an empty end is the key alone (`[key, key\0)`), `"\0"` is every
    /// key from `key` on.
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        let end = if range_end.is_empty() {
            let mut next = key.to_vec();
            next.push(0);
            Some(next)
        } else if range_end == RANGE_END_ALL {
            None
        } else {
            Some(range_end.to_vec())
        };
        Interval {
            start: key.to_vec(),
            end,
        }
    }
}

/// `a <= b` for interval ends, where `None` is past every key.
fn end_at_least(a: Option<&Vec<u8>>, b: Option<&Vec<u8>>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

/// Sorts and joins overlapping or touching intervals, so a range is allowed exactly when one
/// joined interval covers it (etcd's interval tree `Contains`, which accepts touching ones).
fn merge(intervals: &mut Vec<Interval>) {
    intervals.sort_by(|a, b| a.start.cmp(&b.start));
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals.drain(..) {
        if let Some(last) = merged.last_mut() {
            let touches = match &last.end {
                None => true,
                Some(end) => *end >= interval.start,
            };
            if touches {
                if !end_at_least(last.end.as_ref(), interval.end.as_ref()) {
                    last.end = interval.end;
                }
                continue;
            }
        }
        merged.push(interval);
    }
    *intervals = merged;
}

fn covered(merged: &[Interval], range: &KeyRange) -> bool {
    let wanted = Interval::of(&range.key, &range.range_end);
    merged.iter().any(|interval| {
        interval.start <= wanted.start && end_at_least(interval.end.as_ref(), wanted.end.as_ref())
    })
}

/// Hashes a password for storage (bcrypt at `cost`). Slow on purpose: run it off the async
/// runtime, before proposing, never in apply.
///
/// # Errors
/// bcrypt's refusal (a cost out of range); the password is not part of the message.
pub fn hash_password(password: &str, cost: u32) -> Result<PasswordHash, String> {
    bcrypt::hash(password, cost)
        .map(PasswordHash)
        .map_err(|err| format!("cannot hash the password: {err}"))
}

/// True when `password` matches `hash`. As slow as hashing.
pub fn verify_password(password: &str, hash: &PasswordHash) -> bool {
    bcrypt::verify(password, &hash.0).unwrap_or(false)
}
