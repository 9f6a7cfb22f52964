//! The auth part of the request lifecycle: who is calling, whether they may, and the Auth
//! service's calls (Authenticate, user and role management, enable/disable/status).
//!
//! The caller travels with the request as a task-local [`Caller`] that `server::grpc` sets
//! around every service call (from the `token` metadata, or the gateway's `Authorization`
//! header), so the Lock and Election services, which call back into the server through the
//! in-process client, check the same caller. Code running outside any such scope (lease
//! expiry, the compactor, publishing, corruption checks) is the member itself and is not
//! checked; its proposals carry no [`AuthStamp`].
//!
//! Passwords are hashed here, off the async runtime, before anything is proposed; only the
//! hash reaches Raft. Neither passwords nor hashes are ever logged.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Error, Header, Server, off_runtime, unexpected};
use crate::apply::codec::{Applied, Proposal};
use crate::auth::jwt::{IssueError, JwtTokens};
use crate::auth::token::TokenOwner;
use crate::auth::{self, AuthChange, AuthError, AuthStamp, Needs, Permission};

tokio::task_local! {
    /// The client a request is served for; unset for the member's own work.
    static CALLER: Caller;
}

/// The credentials a client presented with a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The auth token (simple or JWT), if the client sent one.
    pub token: Option<String>,
    /// The common name of the client's verified TLS certificate, on a gRPC call over a
    /// port that verifies client certificates. Names the user when no token is sent.
    pub common_name: Option<String>,
}

impl Caller {
    /// The caller the current task serves, if it serves a client.
    pub fn current() -> Option<Caller> {
        CALLER.try_with(Clone::clone).ok()
    }

    /// Runs `work` on behalf of this caller.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CALLER.scope(self, work).await
    }
}

/// A user's record as UserGet shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// Granted roles, sorted.
    pub roles: Vec<String>,
}

/// The auth status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthStatus {
    /// Whether auth is on.
    pub enabled: bool,
    /// The auth revision.
    pub revision: u64,
}

/// The server's auth settings and this member's tokens.
pub(super) struct AuthGate {
    /// This member's simple tokens, and the per-user Authenticate budgets (used with JWTs
    /// too).
    pub(super) tokens: auth::token::Tokens,
    /// With `--auth-token jwt,...`: issues and verifies tokens instead of `tokens`.
    pub(super) jwt: Option<Arc<JwtTokens>>,
    /// bcrypt cost of new password hashes.
    pub(super) bcrypt_cost: u32,
    /// Bounds the bcrypt checks running at once (see
    /// [`crate::limits::AUTHENTICATE_CONCURRENT_MAX`]); more wait for a permit.
    pub(super) checks: Semaphore,
}

impl Server {
    /// Resolves the current caller and checks it may do what `needs` lists; returns the
    /// stamp to propose with (`None` for the member's own work, which is not checked).
    ///
    /// # Errors
    /// Invalid tokens and missing permissions, with etcd's errors.
    /// `needs` is only built while auth is on, so requests pay nothing for it otherwise.
    pub(super) fn authorize(
        &self,
        needs: impl FnOnce() -> Needs,
    ) -> Result<Option<AuthStamp>, Error> {
        match Caller::current() {
            None => Ok(None),
            Some(caller) => self.authorize_lazily(&caller, needs).map(Some),
        }
    }

    /// Checks that `caller` may do what `needs` lists, and returns its stamp.
    ///
    /// # Errors
    /// Invalid tokens and missing permissions, with etcd's errors.
    pub fn authorize_caller(&self, caller: &Caller, needs: &Needs) -> Result<AuthStamp, Error> {
        self.authorize_lazily(caller, || needs.clone())
    }

    fn authorize_lazily(
        &self,
        caller: &Caller,
        needs: impl FnOnce() -> Needs,
    ) -> Result<AuthStamp, Error> {
        let store = self.applier.auth();
        // A token names the user; without one, a verified certificate's common name does
        // (etcd's order). A JWT also fixes the auth revision the caller is checked at.
        let (user, issued_at) = match &caller.token {
            None => (caller.common_name.clone(), None),
            Some(token) => {
                let resolved = match &self.gate.jwt {
                    Some(jwt) => jwt
                        .resolve(token)
                        .map(|(user, revision)| (user, Some(revision))),
                    None => self
                        .gate
                        .tokens
                        .resolve(token, |name| {
                            store.user(name).ok().map(|user| user.credential_revision)
                        })
                        .map(|owner| (owner.user, None)),
                };
                match resolved {
                    Ok((user, issued_at)) => (Some(user), issued_at),
                    // etcd-compat: a token is only looked at while auth is on.
                    Err(error) if store.is_enabled() => return Err(error.into()),
                    Err(_) => (None, None),
                }
            }
        };
        let mut stamp = store.stamp(user.as_deref());
        if let Some(revision) = issued_at {
            stamp.revision = revision;
        }
        if store.is_enabled() {
            store.check(&stamp, &needs())?;
        }
        Ok(stamp)
    }

    /// Checks the current caller holds the root role, reporting failures as etcd 3.4's
    /// maintenance service does (Hash, HashKV, Defragment): the auth package's own error,
    /// sent as gRPC Unknown.
    pub(super) fn authorize_maintenance(&self) -> Result<(), Error> {
        self.authorize(Needs::admin)
            .map(|_| ())
            .map_err(|error| match error {
                Error::Auth(auth) => Error::Internal(format!(
                    "auth: {}",
                    auth.to_string().trim_start_matches("etcdserver: ")
                )),
                other => other,
            })
    }

    /// Issues a token for `name` if `password` is theirs.
    ///
    /// # Errors
    /// [`AuthError::AuthNotEnabled`], [`AuthError::AuthFailed`] for a wrong name or password
    /// or a user without password, [`AuthError::TooManyRequests`] past the user's rate.
    pub async fn authenticate(&self, name: &str, password: String) -> Result<String, Error> {
        let store = Arc::clone(self.applier.auth());
        // Linearizable, as etcd's Authenticate (a Raft request there): an AuthEnable or a
        // user added through another member, or forwarded from this one to the leader, may
        // not have been applied here yet.
        if !self.is_learner() {
            self.read_barrier().await?;
        }
        if !store.is_enabled() {
            return Err(AuthError::AuthNotEnabled.into());
        }
        let user = store.user(name).map_err(|_| AuthError::AuthFailed)?;
        let hash = user.password.clone().ok_or(AuthError::AuthFailed)?;
        self.gate.tokens.take_attempt(name)?;
        let permit = self
            .gate
            .checks
            .acquire()
            .await
            .map_err(|_| Error::Stopped)?;
        let matches = off_runtime(move || auth::verify_password(&password, &hash)).await?;
        drop(permit);
        if !matches {
            return Err(AuthError::AuthFailed.into());
        }
        let token = match &self.gate.jwt {
            Some(jwt) => jwt
                .issue(name, store.revision())
                .map_err(|error| match error {
                    IssueError::Auth(error) => Error::Auth(error),
                    IssueError::Sign(message) => Error::Internal(message),
                })?,
            None => self.gate.tokens.issue(TokenOwner {
                user: name.to_owned(),
                credential_revision: user.credential_revision,
            })?,
        };
        Ok(token)
    }

    /// Whether auth is on, and the auth revision.
    pub fn auth_status(&self) -> (AuthStatus, Header) {
        let store = self.applier.auth();
        (
            AuthStatus {
                enabled: store.is_enabled(),
                revision: store.revision(),
            },
            self.current_header(),
        )
    }

    /// Applies an auth change through Raft (root role needed while auth is on).
    ///
    /// # Errors
    /// etcd's refusal of the change, permission errors, Raft unavailability.
    pub async fn auth_change(&self, change: AuthChange) -> Result<Header, Error> {
        let (revision, applied) = self.propose(&Proposal::Auth(change)).await?;
        match applied {
            Applied::Auth => Ok(self.header(revision)),
            other => Err(unexpected(&other)),
        }
    }

    /// Adds a user; `password` `None` makes a user that cannot authenticate with a password.
    ///
    /// # Errors
    /// [`AuthError::UserEmpty`], [`AuthError::UserAlreadyExist`], permission errors.
    pub async fn user_add(&self, name: String, password: Option<String>) -> Result<Header, Error> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty.into());
        }
        // Checked before the slow hash, so a caller without rights cannot spend our CPU.
        self.authorize(Needs::admin)?;
        let password = match password {
            Some(password) => Some(self.hash_password(password).await?),
            None => None,
        };
        self.auth_change(AuthChange::UserAdd { name, password })
            .await
    }

    /// Replaces a user's password; its tokens stop working.
    ///
    /// # Errors
    /// [`AuthError::UserNotFound`], permission errors.
    pub async fn user_change_password(
        &self,
        name: String,
        password: String,
    ) -> Result<Header, Error> {
        self.authorize(Needs::admin)?;
        let password = self.hash_password(password).await?;
        self.auth_change(AuthChange::UserChangePassword { name, password })
            .await
    }

    async fn hash_password(&self, password: String) -> Result<auth::PasswordHash, Error> {
        let cost = self.gate.bcrypt_cost;
        off_runtime(move || auth::hash_password(&password, cost))
            .await?
            .map_err(Error::Internal)
    }

    /// A user's roles (root role needed while auth is on).
    ///
    /// # Errors
    /// [`AuthError::UserNotFound`], permission errors, Raft unavailability.
    pub async fn user_get(&self, name: &str) -> Result<(UserInfo, Header), Error> {
        self.auth_read().await?;
        let user = self.applier.auth().user(name)?;
        Ok((
            UserInfo {
                roles: user.roles.into_iter().collect(),
            },
            self.current_header(),
        ))
    }

    /// Every user name.
    ///
    /// # Errors
    /// Permission errors, Raft unavailability.
    pub async fn user_list(&self) -> Result<(Vec<String>, Header), Error> {
        self.auth_read().await?;
        Ok((self.applier.auth().user_names(), self.current_header()))
    }

    /// A role's permissions.
    ///
    /// # Errors
    /// [`AuthError::RoleNotFound`], permission errors, Raft unavailability.
    pub async fn role_get(&self, name: &str) -> Result<(Vec<Permission>, Header), Error> {
        self.auth_read().await?;
        let role = self.applier.auth().role(name)?;
        Ok((role.permissions, self.current_header()))
    }

    /// Every role name.
    ///
    /// # Errors
    /// Permission errors, Raft unavailability.
    pub async fn role_list(&self) -> Result<(Vec<String>, Header), Error> {
        self.auth_read().await?;
        Ok((self.applier.auth().role_names(), self.current_header()))
    }

    /// The checks before reading the auth store: root role, then a linearizable point (etcd
    /// serves these reads through Raft).
    async fn auth_read(&self) -> Result<(), Error> {
        self.authorize(Needs::admin)?;
        self.refuse_on_learner()?;
        self.read_barrier().await
    }
}
