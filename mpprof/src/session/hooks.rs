//! What the session does at `exit()` (finish the file) and around
//! `fork()` (the child starts a file of its own).

use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;

use super::{process, unsafe_current, CURRENT, LIFECYCLE, STATE, UNKNOWN};
use crate::callsite;
use crate::format::{flow_name, kind, FlowId};
use crate::record;

pub(super) fn register_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        // The sampler's final sample (it waits a bounded time).
        if let Some(r) = unsafe_current().filter(|r| !r.chunks.is_finished()) {
            r.sampler.stop();
        }
        // Never block at exit: if another thread holds the lock (it is
        // starting or finishing), leave the file unfinished rather than hang.
        // Inside the recorder: a signal handler that records meanwhile must
        // not wait for the locks the finish holds on this thread.
        record::inside(|| {
            if let Some(_l) = LIFECYCLE.try_lock() {
                if let Some(r) = unsafe_current() {
                    r.chunks.finish();
                }
            }
        });
    }
    ONCE.call_once(|| {
        // SAFETY: at_exit is a plain extern "C" fn that never unwinds.
        unsafe { libc::atexit(at_exit) };
    });
}

/// Another module's lock held across `fork()` (the tracing layer's
/// registration lock): taken after `LIFECYCLE` and before the callsite
/// registry, its place in the lock order, and released after them.
static MORE_FORK_LOCKS: OnceLock<ForkLock> = OnceLock::new();

/// A lock to hold across `fork()`: how to take it, and how to release it
/// (in the parent and in the child).
pub(crate) struct ForkLock {
    /// Takes the lock and leaves it held.
    pub(crate) lock: fn(),
    /// Releases it (in the child, the forking thread is its only thread).
    pub(crate) unlock: fn(),
}

/// Holds `l` across every later `fork()`, in its place in the lock order
/// (after `LIFECYCLE`, before the callsite registry). One such lock; a
/// second is ignored. Call it before the lock is first taken.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn hold_across_fork(l: ForkLock) {
    let _ = MORE_FORK_LOCKS.set(l);
}

/// What a forked child needs to join the session: the directory and the
/// flow from the fork point. Set by the prepare handler in the parent.
pub(super) static FORK_INFO: Mutex<Option<(PathBuf, FlowId)>> = Mutex::new(None);

/// In a forked child: the parent's recorder, whose file the child releases
/// when it starts recording (see `Chunks::release_in_forked_child`).
pub(super) static FORKED_FROM: AtomicPtr<super::Recorder> = AtomicPtr::new(std::ptr::null_mut());

/// `fork()` without `exec`: the child must not write into the parent's
/// mapping (it is MAP_SHARED, so it would corrupt the parent's chunks), so
/// it forgets the parent's recorder and starts a file of its own at its
/// next event, with a flow from the fork point. The handlers take the locks
/// that the child's start needs, so no other thread can hold them across
/// the fork.
pub(super) fn register_fork_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn prepare() {
        // Lock first: two threads forking at once must not swap flows.
        std::mem::forget(LIFECYCLE.lock());
        let info = unsafe_current()
            .filter(|r| !r.chunks.is_finished() && STATE.load(Ordering::Relaxed) == r.epoch)
            .map(|r| {
                let flow = r.next_flow();
                record::flow(kind::FLOW_OUT, flow, flow_name::FORK);
                (r.dir.clone(), flow)
            });
        *FORK_INFO.lock() = info;
        if let Some(l) = MORE_FORK_LOCKS.get() {
            (l.lock)();
        }
        callsite::lock_for_fork();
    }
    extern "C" fn parent() {
        callsite::unlock_after_fork();
        if let Some(l) = MORE_FORK_LOCKS.get() {
            (l.unlock)();
        }
        // SAFETY: locked by `prepare` on this thread, which still owns it.
        unsafe { LIFECYCLE.force_unlock() };
    }
    extern "C" fn child() {
        callsite::unlock_after_fork();
        if let Some(l) = MORE_FORK_LOCKS.get() {
            (l.unlock)();
        }
        // SAFETY: locked by `prepare` on this thread; in the child this
        // thread is the only one.
        unsafe { LIFECYCLE.force_unlock() };
        // Only atomics, this thread's own cells and close(2) from here: the
        // child's recording starts lazily, in ordinary context.
        process::PROCESS_UID.store(0, Ordering::Relaxed);
        // SAFETY: recorders are leaked, so a non-null pointer stays valid.
        if let Some(r) = unsafe { CURRENT.load(Ordering::Relaxed).as_ref() } {
            // Its sampler thread stayed in the parent: a guard of it
            // dropped here must not wait for it, and its host lock is
            // let go.
            r.sampler.forked_away();
        }
        FORKED_FROM.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
        CURRENT.store(std::ptr::null_mut(), Ordering::Release);
        STATE.store(UNKNOWN, Ordering::Relaxed);
        record::forget_chunk();
    }
    ONCE.call_once(|| {
        // SAFETY: the handlers are extern "C" fns that never unwind.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}
