//! The two counting algorithms, as pure functions of the stored state and the time (in
//! microseconds), so that the memory store, the Redis script and the tests agree.
//!
//! - GCRA (the generic cell rate algorithm, as in redis-cell and Envoy's local limiter's
//!   smoothness): one number per key, the theoretical arrival time (TAT). A request is
//!   allowed when the new TAT is at most `burst` emission intervals ahead of now.
//! - A fixed window (APIM's `quota-by-key`): a count per key and window; the window starts
//!   on a multiple of its length since the Unix epoch, so every replica agrees on it.

/// What a limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests left after this one (0 when refused).
    pub remaining: u64,
    /// Microseconds until the limit is whole again (GCRA) or the window ends (quota).
    pub reset_us: u64,
    /// Microseconds until a request would be allowed (0 when allowed).
    pub retry_us: u64,
}

/// GCRA with emission interval `interval_us` (the rate's period / count) and `burst`.
/// Returns the verdict and the TAT to store when the request is allowed.
#[must_use]
pub fn gcra(tat_us: u64, now_us: u64, interval_us: u64, burst: u64) -> (Verdict, u64) {
    let tau = interval_us.saturating_mul(burst);
    let base = tat_us.max(now_us);
    let new_tat = base.saturating_add(interval_us);
    let ahead = new_tat - now_us;
    if ahead > tau {
        let v = Verdict {
            allowed: false,
            remaining: 0,
            reset_us: base - now_us,
            retry_us: ahead - tau,
        };
        (v, tat_us)
    } else {
        let v = Verdict {
            allowed: true,
            remaining: (tau - ahead) / interval_us.max(1),
            reset_us: ahead,
            retry_us: 0,
        };
        (v, new_tat)
    }
}

/// A fixed window of `window_us` allowing `limit` requests; `(start, count)` is the stored
/// window. Returns the verdict and the window to store when the request is allowed.
#[must_use]
pub fn window(
    stored: (u64, u64),
    now_us: u64,
    window_us: u64,
    limit: u64,
) -> (Verdict, (u64, u64)) {
    let window_us = window_us.max(1);
    let start = now_us - now_us % window_us;
    let count = if stored.0 == start { stored.1 } else { 0 };
    let reset_us = start + window_us - now_us;
    if count >= limit {
        let v = Verdict {
            allowed: false,
            remaining: 0,
            reset_us,
            retry_us: reset_us,
        };
        (v, (start, count))
    } else {
        let v = Verdict {
            allowed: true,
            remaining: limit - count - 1,
            reset_us,
            retry_us: 0,
        };
        (v, (start, count + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        // 10/s, burst 3: three at once, then one every 100 ms.
        let interval = SEC / 10;
        let mut tat = 0;
        let now = 50 * SEC;
        for left in [2, 1, 0] {
            let (v, t) = gcra(tat, now, interval, 3);
            assert!(v.allowed);
            assert_eq!(v.remaining, left);
            tat = t;
        }
        let (v, t) = gcra(tat, now, interval, 3);
        assert!(!v.allowed);
        assert_eq!(t, tat, "a refusal stores nothing");
        assert_eq!(v.retry_us, interval);
        assert_eq!(v.reset_us, 3 * interval);
        // One interval later, one more.
        let (v, t) = gcra(tat, now + interval, interval, 3);
        assert!(v.allowed && v.remaining == 0);
        let (v, _) = gcra(t, now + interval, interval, 3);
        assert!(!v.allowed);
        // Idle for long: the whole burst again, no more.
        let (v, _) = gcra(t, now + 100 * SEC, interval, 3);
        assert_eq!((v.allowed, v.remaining), (true, 2));
    }

    #[test]
    fn a_window_counts_up_to_its_limit_and_starts_over_on_the_next() {
        let w = 60 * SEC;
        let now = 10 * w + 5 * SEC;
        let mut state = (0, 0);
        for left in [2, 1, 0] {
            let (v, s) = window(state, now, w, 3);
            assert!(v.allowed);
            assert_eq!(v.remaining, left);
            assert_eq!(v.reset_us, 55 * SEC);
            state = s;
        }
        let (v, s) = window(state, now + SEC, w, 3);
        assert!(!v.allowed);
        assert_eq!(v.retry_us, 54 * SEC);
        assert_eq!(s, state);
        let (v, s) = window(state, 11 * w, w, 3);
        assert_eq!((v.allowed, v.remaining, s), (true, 2, (11 * w, 1)));
    }
}
