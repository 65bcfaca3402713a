//! Exponential backoff with full jitter, for reconnecting after transient errors.

use std::time::Duration;

use rand::Rng;

const INITIAL: Duration = Duration::from_millis(250);
/// Long enough not to hammer a server that is restarting, short enough to notice it is back.
const MAX: Duration = Duration::from_secs(30);

pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff { attempt: 0 }
    }

    /// The delay before the next attempt: a random point in [cap/2, cap], cap doubling each time.
    /// Half of the cap is kept fixed so a restarting server is not retried at once by chance.
    pub fn next_delay(&mut self) -> Duration {
        let cap = INITIAL
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= INITIAL / 2 && first <= INITIAL);
        for _ in 0..40 {
            assert!(b.next_delay() <= MAX);
        }
        assert!(b.next_delay() >= MAX / 2);
        b.reset();
        assert!(b.next_delay() <= INITIAL);
    }
}
