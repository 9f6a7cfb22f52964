//! The harness's seeded pseudo-random numbers.
//!
//! Owns [`SeededRng`], a small splitmix64 generator: the same seed gives the same sequence on
//! every machine, which is what makes a run's operation and fault schedule reproducible
//! (`--seed`). Must not: be used where unpredictability matters; it is for schedules only.

use std::time::Duration;

/// splitmix64: one 64-bit state word, advanced by a constant and scrambled on output.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// An independent generator for one consumer (a worker, the nemesis), so that consumers
    /// running concurrently do not perturb each other's sequences.
    #[must_use]
    pub fn fork(seed: u64, stream: u64) -> Self {
        let mut mixer = SeededRng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        SeededRng::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound`; `bound` must be positive.
    ///
    /// # Panics
    /// When `bound` is zero.
    pub fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0, "below(0) has no value to return");
        // The modulo bias is at most bound / 2^64: irrelevant for schedules.
        let bound = bound as u64;
        usize::try_from(self.next_u64() % bound).expect("a value below a usize bound fits")
    }

    /// `items` in a random order (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let other = self.below(last + 1);
            items.swap(last, other);
        }
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// Uniform in `[low, high]`, at millisecond granularity.
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let low_ms = u64::try_from(low.as_millis()).unwrap_or(u64::MAX);
        let high_ms = u64::try_from(high.as_millis()).unwrap_or(u64::MAX);
        if high_ms <= low_ms {
            return low;
        }
        Duration::from_millis(low_ms + self.next_u64() % (high_ms - low_ms + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_forks_differ() {
        let first: Vec<u64> = (0..5)
            .map({
                let mut rng = SeededRng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        let again: Vec<u64> = (0..5)
            .map({
                let mut rng = SeededRng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(first, again);
        assert_ne!(
            SeededRng::fork(7, 1).next_u64(),
            SeededRng::fork(7, 2).next_u64()
        );
    }

    #[test]
    fn bounded_values_stay_in_bounds() {
        let mut rng = SeededRng::new(1);
        for _ in 0..1000 {
            assert!(rng.below(3) < 3);
            let picked = rng.duration_between(Duration::from_millis(10), Duration::from_millis(20));
            assert!((Duration::from_millis(10)..=Duration::from_millis(20)).contains(&picked));
        }
    }
}
