//! Expiry of objects kube keeps only for a while: Events live `--event-ttl` (1 h by default)
//! and then vanish from etcd by themselves, because kube-apiserver writes them attached to an
//! etcd lease. Granting one lease per event would cost a lease grant per write and leave
//! thousands of leases behind, so, as kube does, a lease is reused by every event created
//! within a short window after its grant and is granted for the TTL plus that window: no
//! event lives shorter than the TTL, none much longer.
//!
//! Must not touch: the objects themselves; it only hands out lease ids for the create path.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::ApiError;
use crate::client::KvClient;
use crate::types::LeaseId;

/// The longest a lease is reused for new events (kube-apiserver's
/// `--lease-reuse-duration-seconds` default).
pub const LEASE_REUSE_MAX: Duration = Duration::from_secs(60);

/// The longest `--event-ttl`: etcd's largest lease TTL (its `MaxLeaseTTL`, 9e9 s); a lease
/// asked for longer is refused by the store.
pub const EVENT_TTL_MAX: Duration = Duration::from_secs(9_000_000_000);

/// The share of the TTL a lease may be reused for, so that a short TTL is not stretched by
/// the whole reuse window (kube's lease manager uses the same 5%).
const LEASE_REUSE_SHARE_PERCENT: u32 = 5;

/// Hands out the lease an object of a TTL kind is created with.
pub struct TtlLeases {
    /// How long an Event lives; None keeps events forever.
    event_ttl: Option<Duration>,
    /// The lease being reused and when it was granted (never held across an await).
    current: Mutex<Option<(LeaseId, Instant)>>,
}

impl TtlLeases {
    /// Leases for Events living `event_ttl` (None: events never expire).
    #[must_use]
    pub fn new(event_ttl: Option<Duration>) -> TtlLeases {
        TtlLeases {
            event_ttl,
            current: Mutex::new(None),
        }
    }

    /// How long a granted lease is reused for.
    fn reuse_window(ttl: Duration) -> Duration {
        (ttl / 100)
            .saturating_mul(LEASE_REUSE_SHARE_PERCENT)
            .min(LEASE_REUSE_MAX)
    }

    /// The lease an object of `kind` is written with: `None` for kinds that do not expire
    /// (their keys carry no lease), the lease to attach for those that do. An update takes a
    /// lease too, so a changed Event lives a whole TTL from its change, as in kube.
    ///
    /// # Errors
    /// [`ApiError`] when the store refuses the lease grant.
    pub async fn lease_for<C: KvClient>(
        &self,
        client: &C,
        kind: &str,
    ) -> Result<Option<LeaseId>, ApiError> {
        let Some(ttl) = self.event_ttl.filter(|_| kind == "Event") else {
            return Ok(None);
        };
        let window = TtlLeases::reuse_window(ttl);
        let reusable = |current: &Option<(LeaseId, Instant)>| {
            current.and_then(|(id, granted)| (granted.elapsed() < window).then_some(id))
        };
        if let Some(id) = reusable(&self.current.lock()) {
            return Ok(Some(id));
        }
        // Granted without holding the lock: a store that stops answering then delays each
        // create by one client deadline, instead of queueing them behind one another. Two
        // creates may both grant; the spare lease holds nothing and simply expires.
        let seconds = ttl
            .saturating_add(window)
            .as_secs()
            .clamp(1, EVENT_TTL_MAX.as_secs());
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let granted = client.lease_grant(seconds, 0).await?.response.id;
        let mut current = self.current.lock();
        if let Some(id) = reusable(&current) {
            return Ok(Some(id));
        }
        *current = Some((granted, Instant::now()));
        Ok(Some(granted))
    }

    /// Stops reusing lease `id`, which the store no longer has (revoked, or the store was
    /// restored): the next object gets a new one.
    pub fn forget(&self, id: LeaseId) {
        let mut current = self.current.lock();
        if current.is_some_and(|(held, _)| held == id) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reuse_window_is_a_small_share_of_the_ttl_and_at_most_a_minute() {
        assert_eq!(
            TtlLeases::reuse_window(Duration::from_secs(3600)),
            LEASE_REUSE_MAX
        );
        assert_eq!(
            TtlLeases::reuse_window(Duration::from_secs(100)),
            Duration::from_secs(5)
        );
    }
}
