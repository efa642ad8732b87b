//! Slowing down repeated authentication failures from one address, so that
//! guessing passwords over the network is expensive.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures tolerated before the first delay.
const FREE_FAILURES: u32 = 3;
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// A quiet address is forgotten after this long.
const MEMORY: Duration = Duration::from_secs(300);
/// Addresses remembered at most; the oldest are forgotten first.
const MAX_ADDRESSES: usize = 100_000;

/// Failure counts per client address.
#[derive(Default)]
pub(crate) struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// Records a failure; returns how long to wait before answering it.
    pub(crate) fn failure(&self, addr: IpAddr) -> Duration {
        self.failure_at(addr, Instant::now())
    }

    fn failure_at(&self, addr: IpAddr, now: Instant) -> Duration {
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, (_, last)| now.duration_since(*last) < MEMORY);
        }
        let entry = map.entry(addr).or_insert((0, now));
        if now.duration_since(entry.1) >= MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay_after(entry.0)
    }

    /// Forgets an address's failures after it authenticates.
    pub(crate) fn success(&self, addr: IpAddr) {
        self.lock().remove(&addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        // Counters are plain values; a poisoned map is still usable.
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// 0 for the first few failures, then doubling from 250 ms up to 5 s.
fn delay_after(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES - 1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_per_address_and_reset() {
        let throttle = AuthThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..8).map(|_| throttle.failure_at(a, t0).as_millis()).collect();
        assert_eq!(delays, vec![0, 0, 0, 250, 500, 1000, 2000, 4000]);
        assert_eq!(throttle.failure_at(a, t0), MAX_DELAY);
        assert_eq!(throttle.failure_at(b, t0), Duration::ZERO, "another address is not slowed");
        assert_eq!(throttle.failure_at(a, t0 + MEMORY), Duration::ZERO, "forgotten after a quiet period");
        throttle.success(b);
        assert!(!throttle.lock().contains_key(&b));
    }
}
