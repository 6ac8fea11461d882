//! Counters in this process's memory (no `[limits_store]` url): exact for one replica,
//! per replica when there are several. One lock for the check and the update of all the
//! limits a request falls under, so a request refused by one limit counts against none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::time::Instant;

use super::Ask;
use super::algorithm::{self, Verdict};

/// Entries kept before idle ones are swept.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Debug, Clone, Copy)]
enum State {
    Tat(u64),
    Window(u64, u64),
}

/// The memory store.
#[derive(Debug)]
pub struct MemoryStore {
    /// Unix time (µs) at `base`; time is measured on tokio's clock from there, so tests
    /// can pause and advance it.
    epoch_us: u64,
    base: Instant,
    counters: Mutex<HashMap<(usize, Box<str>), State>>,
    checks: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    #[must_use]
    pub fn new() -> Self {
        let epoch_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Self {
            epoch_us,
            base: Instant::now(),
            counters: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch_us
            .saturating_add(u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The verdict of every limit in `asks`; counted only when all allow.
    pub fn check(&self, asks: &[Ask<'_>]) -> Vec<Verdict> {
        let now = self.now_us();
        let mut map = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut verdicts = Vec::with_capacity(asks.len());
        let mut next = Vec::with_capacity(asks.len());
        for a in asks {
            let stored = map.get(&(a.rule, Box::from(a.key))).copied();
            let (v, s) = if a.quota {
                let (s0, c0) = match stored {
                    Some(State::Window(s, c)) => (s, c),
                    _ => (0, 0),
                };
                let (v, (s, c)) = algorithm::window((s0, c0), now, a.step_us, a.cap);
                (v, State::Window(s, c))
            } else {
                let tat = match stored {
                    Some(State::Tat(t)) => t,
                    _ => 0,
                };
                let (v, t) = algorithm::gcra(tat, now, a.step_us, a.cap);
                (v, State::Tat(t))
            };
            verdicts.push(v);
            next.push(s);
        }
        if verdicts.iter().all(|v| v.allowed) {
            for (a, s) in asks.iter().zip(next) {
                map.insert((a.rule, Box::from(a.key)), s);
            }
        }
        if self.checks.fetch_add(1, Relaxed).is_multiple_of(1024) && map.len() > SWEEP_ABOVE {
            // Idle keys hold nothing a new request would not get anyway.
            map.retain(|_, s| match *s {
                State::Tat(t) => t > now,
                State::Window(start, _) => start.saturating_add(86_400_000_000) > now,
            });
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ask(rule: usize, key: &str, quota: bool, step_us: u64, cap: u64) -> Ask<'_> {
        Ask {
            rule,
            key,
            quota,
            step_us,
            cap,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gcra_refills_with_time() {
        let m = MemoryStore::new();
        // 2/s, burst 2.
        let a = [ask(0, "alice", false, 500_000, 2)];
        assert!(m.check(&a)[0].allowed);
        assert!(m.check(&a)[0].allowed);
        let v = m.check(&a)[0];
        assert!(!v.allowed);
        assert!(v.retry_us > 0 && v.retry_us <= 500_000);
        // Another key is counted apart.
        assert!(m.check(&[ask(0, "bob", false, 500_000, 2)])[0].allowed);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(m.check(&a)[0].allowed);
        assert!(!m.check(&a)[0].allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_resets_when_its_window_ends() {
        let m = MemoryStore::new();
        let a = [ask(0, "app", true, 1_000_000, 3)];
        let mut allowed = 0;
        for _ in 0..10 {
            if m.check(&a)[0].allowed {
                allowed += 1;
            }
        }
        // The window may end between two checks only if one second went by: it did not.
        assert_eq!(allowed, 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(m.check(&a)[0].allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_refused_by_one_limit_counts_against_none() {
        let m = MemoryStore::new();
        let wide = ask(0, "k", false, 1_000, 100);
        let narrow = ask(1, "k", false, 1_000_000, 1);
        assert!(m.check(&[wide, narrow]).iter().all(|v| v.allowed));
        let v = m.check(&[wide, narrow]);
        assert!(v[0].allowed && !v[1].allowed);
        // The wide limit was not charged for the refused request: 98 left, not 97.
        assert_eq!(m.check(&[wide])[0].remaining, 98);
    }
}
