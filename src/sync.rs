//! Locking that outlives a panic: a thread that panicked while holding a lock leaves data
//! that is still whole here (counters, maps of handles, byte buffers), so the next holder
//! takes the guard instead of propagating the poison into every request.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
