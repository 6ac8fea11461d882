//! Memory back after bursts, on glibc.
//!
//! glibc's malloc keeps what a thread frees in that thread's arena and hands pages back to
//! the system only from the top of a heap. A burst (thousands of requests in flight at once,
//! or thousands of connections opened and closed) leaves the gateway's RSS at the burst's
//! peak long after the memory is free: 396 MiB an idle minute after six 10k-connection rounds,
//! against 14 MiB before them (`bench/soak.sh conns`, docs/performance.md). `malloc_trim(0)`
//! gives every arena's free pages back. Every [`EVERY`], when the RSS is more than twice what
//! it was when the gateway started (and at least [`FLOOR_KIB`]), the gateway trims, off the
//! runtime's workers: the walk takes each arena's lock in turn, for about a millisecond per
//! hundred MiB of free memory, so it runs only while there is memory worth taking back.
//! Memory the gateway really holds (its connections, its token cache) stays, and the next
//! looks find little to do. musl builds (the image, with mimalloc) and other systems have
//! nothing to do here.

use std::time::Duration;

/// How often the RSS is looked at.
const EVERY: Duration = Duration::from_secs(10);
/// Below this RSS (KiB) nothing is worth a trim.
const FLOOR_KIB: u64 = 32 * 1024;

/// Whether a trim is due at `rss` KiB, for a gateway that started at `start` KiB.
fn due(rss: u64, start: u64) -> bool {
    rss >= FLOOR_KIB && rss > start.saturating_mul(2)
}

/// Looks at the process's RSS for the gateway's life and trims when [`due`].
pub async fn after_bursts() {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        watch(rss_kib, release).await;
    }
}

async fn watch(rss: fn() -> Option<u64>, release: fn() -> bool) {
    let Some(start) = rss() else { return };
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(now) = rss() else { return };
        if due(now, start) {
            let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
            tracing::debug!(
                rss_kib = now,
                after_kib = rss(),
                released,
                "allocator trimmed"
            );
        }
    }
}

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Gives the allocator's free pages back to the system; whether any came back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "glibc's malloc_trim, through FFI")]
fn release() -> bool {
    // SAFETY: malloc_trim takes no pointer and touches only glibc's own free lists, under
    // their locks; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Elsewhere the allocator returns memory itself, or offers no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

    #[test]
    fn a_trim_is_due_only_past_twice_the_start_and_the_floor() {
        assert!(!due(FLOOR_KIB - 1, 1), "small processes are left alone");
        assert!(!due(60 * 1024, 30 * 1024), "at twice the start: not yet");
        assert!(due(60 * 1024 + 1, 30 * 1024));
        assert!(due(400 * 1024, 14 * 1024));
    }

    #[test]
    fn the_rss_is_read_from_proc() {
        let rss = rss_kib().expect("VmRSS in /proc/self/status");
        assert!(rss > 0);
    }

    static RSS: AtomicU64 = AtomicU64::new(14 * 1024);
    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    #[tokio::test(start_paused = true)]
    async fn the_watch_trims_while_the_rss_is_past_twice_the_start() {
        let task = tokio::spawn(watch(
            || Some(RSS.load(SeqCst)),
            || {
                TRIMS.fetch_add(1, SeqCst);
                RSS.store(20 * 1024, SeqCst);
                true
            },
        ));
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(TRIMS.load(SeqCst), 0, "no trim at the start's RSS");
        RSS.store(400 * 1024, SeqCst); // a burst's memory, kept by the allocator
        tokio::time::sleep(EVERY + Duration::from_secs(1)).await;
        assert_eq!(TRIMS.load(SeqCst), 1, "trimmed at the next look");
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(
            TRIMS.load(SeqCst),
            1,
            "back under twice the start: no more trims"
        );
        task.abort();
    }
}
