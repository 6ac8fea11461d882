//! Which of the main listener's worker threads this is ([`crate::server::serve_on_workers`]):
//! each is the one worker thread of its own runtime, and what is kept per worker (the upstream
//! connection pools, [`crate::upstream::Forwarder`]) is chosen by this index, so a request
//! and the connections it uses stay on one thread. Any other thread is worker 0.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker index (0 outside the workers).
#[must_use]
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks this thread as worker `i`.
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// How many workers `configured` asks for: itself, or with 0 one per CPU the process may use
/// (the affinity mask and a cgroup CPU quota count, as in a container with a CPU limit).
#[must_use]
pub fn count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_index() {
        set_index(3);
        assert_eq!(index(), 3);
        let other = std::thread::spawn(index).join().expect("thread");
        assert_eq!(other, 0, "a thread that is not a worker is worker 0");
        assert_eq!(count(5), 5);
        assert!(count(0) >= 1);
    }
}
