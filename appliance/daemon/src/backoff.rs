//! Retry schedule for boot-time fetches: capped exponential backoff with jitter.
//!
//! Pure: no clock and no global RNG. The caller owns the time budget and passes a
//! seed, so tests replay exact schedules.

use std::time::Duration;

/// Delays grow `base, 2*base, 4*base, ...` up to `cap`; each delay is drawn from the
/// upper half of its step ("equal jitter"), so appliances booted together do not
/// hammer the metadata server in lockstep, yet never retry faster than half a step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: XorShift64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng: XorShift64::new(seed),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let span = (step - half).as_micros().max(1) as u64;
        half + Duration::from_micros(self.rng.next() % span)
    }
}

/// A seed that differs between appliances and boots, for production use.
pub fn seed_from_env() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Marsaglia's xorshift64: plenty for jitter, not for secrets.
#[derive(Debug, Clone)]
struct XorShift64(u64);

impl XorShift64 {
    fn new(seed: u64) -> Self {
        // Zero is the one fixed point of xorshift.
        XorShift64(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(8);

    #[test]
    fn grows_then_caps_within_jitter_bounds() {
        let mut b = Backoff::new(BASE, CAP, 42);
        for n in 0..40u32 {
            let step = BASE.saturating_mul(1 << n.min(20)).min(CAP);
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "attempt {n}: {d:?} vs step {step:?}"
            );
        }
        assert_eq!(b.attempt, 40);
    }

    #[test]
    fn same_seed_same_schedule_different_seed_differs() {
        let run = |seed| {
            let mut b = Backoff::new(BASE, CAP, seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Zero is a valid seed, not a stuck generator.
        let z = run(0);
        assert!(z.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn total_time_for_a_budget_is_bounded() {
        // With these numbers 120 s of budget is ~16-30 attempts: enough to ride out a
        // slow metadata proxy without flooding it.
        let mut b = Backoff::new(BASE, CAP, 1);
        let mut total = Duration::ZERO;
        let mut n = 0;
        while total < Duration::from_secs(120) {
            total += b.next_delay();
            n += 1;
        }
        assert!((16..=40).contains(&n), "{n} attempts");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600), 3);
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(3600));
        }
    }
}
