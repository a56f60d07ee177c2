//! The recorder's locks: `std::sync::Mutex`es, futexes with no state
//! shared between locks (parking_lot's parking lot allocates, and a signal
//! handler may record).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A thread never waits here on a lock its own code holds
/// (recording on a thread is not re-entered, see `record.rs`), so a signal
/// handler that records only waits for other threads, which make progress.
/// A lock poisoned by a panic is used as it is: its data is valid at every
/// point where the recorder could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
