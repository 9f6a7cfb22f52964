//! Simple tokens (etcd's `--auth-token simple`) and the per-user Authenticate rate limit.
//!
//! A token is `<16 random letters>.<n>`, `n` counting the tokens this member issued. Tokens
//! live in this member's memory only, as etcd's simple tokens do: another member does not know
//! them, and a client that presents one there hears "invalid auth token" and authenticates
//! again (clientv3 does this by itself). A token stays valid for the TTL after its last use.
//!
//! A token remembers the user's credential revision when it was issued; once the user is
//! deleted or changes password that revision no longer matches and the token is refused, on
//! every member, without apply having to reach into this module.
//!
//! This module owns no replicated state and never proposes. Time comes from a
//! [`crate::lease::Clock`]; randomness from the operating system.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng as _;

use super::AuthError;
use crate::lease::Clock;
use crate::limits::{AUTH_TOKENS_MAX, AUTHENTICATE_BURST_PER_USER, AUTHENTICATE_REFILL_PER_USER};

/// Which tokens Authenticate issues (etcd's `--auth-token`).
#[derive(Clone, Debug, Default)]
pub enum TokenKind {
    /// `simple`: random tokens kept in this member's memory.
    #[default]
    Simple,
    /// `jwt,...`: signed tokens any member with the key verifies.
    Jwt(Arc<super::jwt::JwtTokens>),
}

impl TokenKind {
    /// Parses `--auth-token`: `simple`, or `jwt,` followed by the JWT options.
    ///
    /// # Errors
    /// An unknown kind, or JWT options that do not load, as text naming the flag.
    pub fn parse(flag: &str) -> Result<TokenKind, String> {
        let (kind, options) = flag.split_once(',').unwrap_or((flag, ""));
        match kind {
            "simple" => Ok(TokenKind::Simple),
            "jwt" => super::jwt::JwtTokens::from_options(options)
                .map(|jwt| TokenKind::Jwt(Arc::new(jwt)))
                .map_err(|error| format!("--auth-token: {error}")),
            other => Err(format!(
                "--auth-token {other:?} is not supported: use 'simple' or 'jwt,sign-method=...,pub-key=...,priv-key=...'"
            )),
        }
    }
}

/// Random letters in a token (etcd's simple-token length).
const TOKEN_LETTERS: usize = 16;
/// What the letters are drawn from.
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Who a token was issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    /// The user.
    pub user: String,
    /// The user's credential revision when the token was issued.
    pub credential_revision: u64,
}

#[derive(Debug)]
struct Issued {
    owner: TokenOwner,
    deadline: Instant,
}

/// Per-user Authenticate budget: a bucket of [`AUTHENTICATE_BURST_PER_USER`] attempts,
/// refilled one per [`AUTHENTICATE_REFILL_PER_USER`].
#[derive(Debug)]
struct Budget {
    attempts: u32,
    refilled_at: Instant,
}

/// This member's simple tokens.
pub struct Tokens {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Issued tokens by text. At most [`AUTH_TOKENS_MAX`]. Never held across an await.
    issued: Mutex<HashMap<String, Issued>>,
    /// Authenticate budgets by user name; only users that exist get one, so its size is
    /// bounded by the user count. Never held across an await.
    budgets: Mutex<HashMap<String, Budget>>,
    /// Tokens issued so far; the suffix of the next one.
    counter: AtomicU64,
}

impl Tokens {
    /// Tokens valid for `ttl` after their last use.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration) -> Tokens {
        Tokens {
            clock,
            ttl,
            issued: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Takes one Authenticate attempt from `user`'s budget.
    ///
    /// # Errors
    /// [`AuthError::TooManyRequests`] when the budget is spent.
    pub fn take_attempt(&self, user: &str) -> Result<(), AuthError> {
        let now = self.clock.now();
        let mut budgets = self.budgets.lock();
        let budget = budgets.entry(user.to_owned()).or_insert(Budget {
            attempts: AUTHENTICATE_BURST_PER_USER,
            refilled_at: now,
        });
        let elapsed = now.saturating_duration_since(budget.refilled_at);
        let refills = elapsed.as_nanos() / AUTHENTICATE_REFILL_PER_USER.as_nanos();
        if refills > 0 {
            let refills = u32::try_from(refills).unwrap_or(u32::MAX);
            budget.attempts = budget
                .attempts
                .saturating_add(refills)
                .min(AUTHENTICATE_BURST_PER_USER);
            budget.refilled_at += AUTHENTICATE_REFILL_PER_USER.saturating_mul(refills);
            if budget.attempts == AUTHENTICATE_BURST_PER_USER {
                budget.refilled_at = now;
            }
        }
        if budget.attempts == 0 {
            return Err(AuthError::TooManyRequests);
        }
        budget.attempts -= 1;
        Ok(())
    }

    /// Forgets the budgets of users that no longer exist.
    pub fn retain_budgets(&self, exists: impl Fn(&str) -> bool) {
        self.budgets.lock().retain(|user, _| exists(user));
    }

    /// Issues a token for `owner`.
    ///
    /// # Errors
    /// [`AuthError::TooManyRequests`] when [`AUTH_TOKENS_MAX`] live tokens exist.
    pub fn issue(&self, owner: TokenOwner) -> Result<String, AuthError> {
        let now = self.clock.now();
        let mut issued = self.issued.lock();
        if issued.len() >= AUTH_TOKENS_MAX {
            issued.retain(|_, token| token.deadline > now);
            if issued.len() >= AUTH_TOKENS_MAX {
                return Err(AuthError::TooManyRequests);
            }
        }
        let mut rng = rand::rngs::OsRng;
        let letters: String = (0..TOKEN_LETTERS)
            .map(|_| char::from(TOKEN_ALPHABET[rng.gen_range(0..TOKEN_ALPHABET.len())]))
            .collect();
        let index = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("{letters}.{index}");
        issued.insert(
            token.clone(),
            Issued {
                owner,
                deadline: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Who `token` belongs to, if it is live; using it extends it by the TTL. `current`
    /// gives a user's credential revision now (`None` for a deleted user); a token whose
    /// owner no longer matches is dropped.
    ///
    /// # Errors
    /// [`AuthError::InvalidAuthToken`] for an unknown, expired or outdated token.
    pub fn resolve(
        &self,
        token: &str,
        current: impl Fn(&str) -> Option<u64>,
    ) -> Result<TokenOwner, AuthError> {
        let now = self.clock.now();
        let mut issued = self.issued.lock();
        let Some(entry) = issued.get_mut(token) else {
            return Err(AuthError::InvalidAuthToken);
        };
        let still_valid = entry.deadline > now
            && current(&entry.owner.user) == Some(entry.owner.credential_revision);
        if !still_valid {
            issued.remove(token);
            return Err(AuthError::InvalidAuthToken);
        }
        entry.deadline = now + self.ttl;
        Ok(entry.owner.clone())
    }
}
