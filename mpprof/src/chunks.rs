//! The chunk supply of one process file, and the slow path that uses it:
//! giving a thread a chunk (a hand-off, a claim, or under keep-last a
//! reuse), counting what it could not record, and taking its chunks back
//! when it exits. The flight recorder's algorithm lives here.
//!
//! Nothing here touches a thread-local: a thread is a [`Writer`] (its
//! cursor) and an [`Owned`] (its slow-path state), passed in as a
//! [`Thread`]. The recorder (`record.rs`) keeps both in thread-locals; the
//! unit tests below drive several "threads" on one [`Chunks`] over plain
//! memory and read the result back with the merge's own reader.
//!
//! `docs/ARCHITECTURE.md` (*Recording path*, *Slow path*) describes the
//! algorithm; the comments here say why each step is safe.

use crate::sync::lock;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use arrayvec::ArrayVec;

use crate::buffer::{Chunk, ChunkInit, ClaimError, MetaLog, ProcessBuffer};
use crate::clock;
use crate::format::{self, kind, word, Clipped, LostRef, MetaRef, Policy, ReusedRef, MAX_NAME};
use crate::writer::Writer;

/// One file's chunks: the buffer, its metadata log, and the lists through
/// which chunks pass from one thread to another.
///
/// The heavy parts (the mapping and the file, the lists, the preparer
/// thread) are released once the file is finished and no thread uses it
/// any more ([`Chunks::try_release`]): a program that starts and ends
/// recording a thousand times does not keep a thousand mappings and file
/// descriptors. This struct itself stays (a few hundred bytes): a thread
/// may still look at it through a stale pointer, and finds it released.
pub(crate) struct Chunks {
    /// What is released: valid while `users` counts someone (see
    /// [`Chunks::parts`]); null once released.
    parts: AtomicPtr<Parts>,
    /// Who uses the file: the session until it finishes, each thread whose
    /// writer is attached to it, each caller of [`Chunks::using`] for its
    /// duration; [`RELEASED`] once released.
    users: AtomicU64,
    /// Whether the file's timestamps come from the time-stamp counter.
    tsc: bool,
    next_lane: AtomicU32,
    /// Set by [`Chunks::finish`]; the preparer stops.
    finished: AtomicBool,
    /// Whether a preparer thread keeps chunks ready (`MPPROF_PREPARE`).
    prepare: bool,
    /// A busy thread claimed a chunk: the preparer starts preparing.
    wanted: AtomicBool,
    /// Whether `ready` may hold a slot (see [`Chunks::ready_waiting`]).
    ready_hint: AtomicBool,
    /// The file could not grow, and the warning said so (once per file).
    grow_warned: AtomicBool,
    start_mono: u64,
    last_anchor_mono: AtomicU64,
}

/// [`Chunks::users`] once the parts are released.
const RELEASED: u64 = 1 << 63;

/// The parts of [`Chunks`] that are released with the file.
pub(crate) struct Parts {
    pub(crate) buf: ProcessBuffer,
    meta: Mutex<MetaLog>,
    /// Partly used chunks left by finished threads: new threads continue
    /// them before claiming fresh ones, so thread churn does not eat the
    /// budget.
    handoffs: HintedList<HandedOff>,
    /// Flight recorder (keep-last): event chunks no thread writes any more
    /// (left by exited threads, or continued chunks their last writer moved
    /// on from), ordered by when they were left, newest first: the last one
    /// holds the oldest events and is reused first. Like `left`, of a
    /// capacity reserved up front (the budget, at most [`MAX_LIST`]), so
    /// that the slow path never allocates to add to it.
    pool: HintedList<Pooled>,
    /// Flight recorder (keep-last): event chunks that live threads claimed
    /// (or reused) and have since left, in the order they were left, oldest
    /// first. A thread needing a chunk overwrites its own oldest one; a
    /// thread with none of its own, when the pool is empty too, takes
    /// another lane's (see [`Chunks::take_left_of_others`]). Never a
    /// thread's current chunk: a thread adds its chunk only once it has
    /// stopped writing it, and taking one removes it under the lock.
    left: HintedList<Left>,
    /// Threads that lost events while they had no chunk (see
    /// [`Chunkless`]): [`Chunks::finish`] writes the losses of those still
    /// running. A fixed table, so that the slow path never allocates.
    chunkless: Box<[Chunkless]>,
    /// Event chunk slots reserved and page-mapped ahead by the preparer.
    ready: Mutex<ArrayVec<u32, READY_CHUNKS>>,
    /// Wakes the preparer (a futex: waking it takes no lock).
    ready_cv: Condvar,
    /// The preparer thread, once started (joined when the file is released).
    preparer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Chunks kept ready (reserved and page-mapped) by the preparer thread.
const READY_CHUNKS: usize = 4;

/// Most segments a flight-recorder chunk is shared by: a thread exiting
/// with a chunk shared by this many pools it instead of handing it off, so
/// a `Meta::Reused` entry (one `(lane, events)` pair per segment) stays
/// small and a list entry has room for them without allocating.
const MAX_SEGMENTS: usize = 16;

/// The events of each segment of a flight-recorder chunk, `(lane,
/// events)`, the header's lane first.
type Segments = ArrayVec<(u32, u64), MAX_SEGMENTS>;

/// Threads without a chunk whose losses [`Chunkless`] slots track at once;
/// the losses of more count for the process only.
const CHUNKLESS_SLOTS: usize = 64;

/// Longest entry list of the flight recorder (`left`, pool) that is
/// reserved up front: with a budget of more chunks, a chunk left when the
/// list is full is retired (its events stay readable, it is just not
/// reused).
const MAX_LIST: usize = 1024;

impl Chunks {
    /// The supply of `buf`, whose timestamps come from the TSC if `tsc`;
    /// with `prepare`, a preparer thread keeps chunks ready.
    pub(crate) fn new(buf: ProcessBuffer, tsc: bool, prepare: bool) -> Chunks {
        let now = clock::monotonic_ns();
        let list_cap = (buf.max_chunks() as usize).min(MAX_LIST);
        let parts = Box::new(Parts {
            buf,
            meta: Mutex::new(MetaLog::new()),
            handoffs: HintedList::new(0),
            pool: HintedList::new(list_cap),
            left: HintedList::new(list_cap),
            chunkless: (0..CHUNKLESS_SLOTS).map(|_| Chunkless::default()).collect(),
            ready: Mutex::new(ArrayVec::new()),
            ready_cv: Condvar::new(),
            preparer: Mutex::new(None),
        });
        Chunks {
            parts: AtomicPtr::new(Box::into_raw(parts)),
            // The session, until it finishes.
            users: AtomicU64::new(1),
            tsc,
            next_lane: AtomicU32::new(1),
            finished: AtomicBool::new(false),
            prepare,
            wanted: AtomicBool::new(false),
            ready_hint: AtomicBool::new(false),
            grow_warned: AtomicBool::new(false),
            start_mono: now,
            last_anchor_mono: AtomicU64::new(now),
        }
    }

    /// The parts that are released with the file.
    ///
    /// Callers hold a use of the file (they are its session before it
    /// finishes, an attached writer, inside [`Chunks::using`], or its
    /// preparer, which release joins first), so the parts are there.
    pub(crate) fn parts(&self) -> &Parts {
        // Acquire: pairs with the release store of the pointer in `new`'s
        // publication (the recorder is published with release).
        let p = self.parts.load(Ordering::Acquire);
        // SAFETY: see above: the parts are freed only by `try_release`,
        // once no one uses the file; `p` is not null until then.
        unsafe { &*p }
    }

    /// The buffer.
    pub(crate) fn buf(&self) -> &ProcessBuffer {
        &self.parts().buf
    }

    /// A thread's writer starts using the file; false if the file is
    /// released already (the thread must not touch it).
    pub(crate) fn attach(&self) -> bool {
        // SeqCst: against `try_release`'s compare-and-swap (see there).
        let v = self.users.fetch_add(1, Ordering::SeqCst);
        if v & RELEASED != 0 {
            self.users.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// A use of the file ends ([`Chunks::attach`], or the session's at the
    /// finish). Releasing is left to the next safe point (see
    /// [`Chunks::try_release`]): this may run in a signal handler.
    pub(crate) fn detach(&self) {
        // SeqCst: as in `attach`.
        self.users.fetch_sub(1, Ordering::SeqCst);
    }

    /// Runs `f` while using the file (see [`Chunks::attach`]); `None` if it
    /// is released.
    pub(crate) fn using<R>(&self, f: impl FnOnce(&Chunks) -> R) -> Option<R> {
        if !self.attach() {
            return None;
        }
        let r = f(self);
        self.detach();
        Some(r)
    }

    /// Releases the file's parts (the mapping, the file descriptor, the
    /// lists, the preparer thread) if it is finished and no one uses it;
    /// true if they are released (now or before). Only where freeing memory
    /// and joining a thread are safe: a session's start and finish, a
    /// thread's exit, never the slow path.
    ///
    /// Once the count of users is 0, one compare-and-swap marks the file
    /// released: a thread that attaches afterwards sees the mark and backs
    /// off, one that attached before made the count non-zero and the swap
    /// fails.
    pub(crate) fn try_release(&self) -> bool {
        if !self.is_finished() {
            return false;
        }
        // SeqCst: see above and `attach`.
        match self
            .users
            .compare_exchange(0, RELEASED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {}
            Err(v) => return v & RELEASED != 0,
        }
        // The preparer stops at the finish; wait for it before its parts go.
        let handle = lock(&self.parts().preparer).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        // Acquire/Release: the pointer is ours alone from here.
        let p = self.parts.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: made by `Box::into_raw` in `new`, swapped out once, and
        // no one uses it (see above).
        drop(unsafe { Box::from_raw(p) });
        true
    }

    /// Starts the preparer thread (with `MPPROF_PREPARE` on). It sleeps
    /// until a thread fills a chunk: a process that records little never
    /// has chunks prepared for it. Started with the file, in ordinary
    /// context, so that the slow path (which may run in a signal handler)
    /// never creates a thread.
    pub(crate) fn start_preparer(&'static self) {
        if !self.prepare {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("mpprof-prepare".into())
            .spawn(move || self.prepare_loop());
        // No thread: threads reserve their own chunks.
        *lock(&self.parts().preparer) = spawned.ok();
    }

    /// The file's clock now.
    fn now(&self) -> u64 {
        clock::now_with(self.tsc)
    }

    /// Appends a metadata entry.
    pub(crate) fn write_meta(&self, m: &MetaRef) {
        lock(&self.parts().meta).append(self.buf(), m);
    }

    /// Appends a metadata entry; false if it could not be stored.
    pub(crate) fn write_meta_stored(&self, m: &MetaRef) -> bool {
        lock(&self.parts().meta).append(self.buf(), m)
    }

    /// Whether [`Chunks::finish`] ran.
    pub(crate) fn is_finished(&self) -> bool {
        // Relaxed: a flag; the file stays mapped either way.
        self.finished.load(Ordering::Relaxed)
    }

    /// A new lane for a thread starting to record (thread `tid`, named
    /// `name`), named in the metadata.
    pub(crate) fn new_lane(&self, tid: u32, name: &str) -> u32 {
        // Relaxed: only uniqueness matters.
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed);
        self.write_meta(&MetaRef::Thread {
            lane,
            tid,
            name: Clipped::new(name, MAX_NAME),
        });
        lane
    }

    /// Claims an event chunk for a thread (and maybe writes an anchor).
    /// A chunk the preparer made ready, else (with `reserve`) a slot of
    /// the file's own; `Err(Budget)` when neither.
    fn claim_events(&self, init: &ChunkInit, reserve: bool) -> Result<Chunk, ClaimError> {
        let ready = if self.ready_waiting() {
            let mut r = lock(&self.parts().ready);
            let slot = r.pop();
            // Relaxed: a hint, updated under the lock.
            self.ready_hint.store(!r.is_empty(), Ordering::Relaxed);
            slot
        } else {
            None
        };
        let c = match ready {
            // SAFETY: the slot was reserved by the preparer for anyone, and
            // popping it from the list made it ours alone.
            Some(slot) => unsafe { self.buf().publish(slot, init) },
            None if reserve => self.buf().claim(init)?,
            None => return Err(ClaimError::Budget),
        };
        if init.seq > 0 {
            // The thread filled a chunk before: a busy thread, worth
            // preparing chunks for. (A thread's first chunk does not wake
            // the preparer, so a process that records little never has
            // chunks reserved ahead.)
            self.wake_preparer();
        }
        self.maybe_anchor();
        Ok(c)
    }

    /// Whether the preparer has chunks ready: one relaxed load. A thread
    /// that no longer claims (the budget is used up, or it waits out a
    /// full disk) still takes those, or they would be stranded.
    fn ready_waiting(&self) -> bool {
        // Relaxed: a hint; the list itself is under its lock.
        self.ready_hint.load(Ordering::Relaxed)
    }

    /// Asks the preparer to refill the ready list. The preparer reserves
    /// chunks and maps their pages ahead of time on its own thread, so a
    /// recording thread that takes one writes into pages that are already
    /// there: no page fault, no zero-fill, no disk reservation on the
    /// application's threads (`MPPROF_PREPARE=0` turns it off; chunks are
    /// then reserved by the thread that needs one). Waking it is a futex
    /// wake: no lock, no allocation.
    fn wake_preparer(&self) {
        // Relaxed: a flag the preparer polls (it also wakes every 200 ms,
        // so a wake it misses between its check and its wait only delays
        // it).
        self.wanted.store(true, Ordering::Relaxed);
        self.parts().ready_cv.notify_one();
    }

    /// The preparer waits on the ready list's condvar while `wait` holds of
    /// the list (waking at least every 200 ms); false if the file finished
    /// meanwhile.
    fn wait_ready(&self, wait: impl Fn(&ArrayVec<u32, READY_CHUNKS>) -> bool) -> bool {
        let mut ready = lock(&self.parts().ready);
        while wait(&ready) {
            if self.is_finished() {
                return false;
            }
            ready = self
                .parts()
                .ready_cv
                .wait_timeout(ready, std::time::Duration::from_millis(200))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }

    fn prepare_loop(&self) {
        any_cpu();
        idle_priority();
        // Woken by a busy thread's claim; then keeps READY_CHUNKS ready.
        // Relaxed: see `wake_preparer`.
        if !self.wait_ready(|_| !self.wanted.load(Ordering::Relaxed)) {
            return;
        }
        loop {
            if !self.wait_ready(|ready| ready.len() >= READY_CHUNKS) {
                return;
            }
            if self.is_finished() {
                return;
            }
            let whole = self.buf().chunk_size();
            match self.buf().reserve_slot(format::CHUNK_EVENTS, whole, true) {
                Ok(slot) => {
                    let mut r = lock(&self.parts().ready);
                    r.push(slot);
                    // Relaxed: see `ready_waiting`.
                    self.ready_hint.store(true, Ordering::Relaxed);
                }
                // The budget is used up: nothing more to prepare.
                Err(ClaimError::Budget) => return,
                // The disk is full: the recording threads find out and count
                // their losses; try again later.
                Err(ClaimError::Io(_)) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    /// Offers the rest of a finished thread's chunk to the next thread.
    fn hand_off(&self, h: HandedOff) {
        self.parts().handoffs.update(|list| list.push(h));
    }

    /// Takes a partly used chunk left by a finished thread, if any. Without
    /// any, costs one relaxed load (a thread losing events calls this for
    /// every event).
    fn take_handoff(&self) -> Option<HandedOff> {
        self.parts().handoffs.pop()
    }

    /// Flight recorder: puts a chunk that no thread writes any more into the
    /// pool of reusable chunks.
    fn pool(&self, p: Pooled) {
        self.parts().pool.update(|pool| {
            if pool.len() == pool.capacity() {
                // Full (a budget of more than MAX_LIST chunks): the chunk
                // is retired as it is, never reused; no allocation here.
                return;
            }
            // Newest first; among equal times, the one pooled first is taken first.
            let at = pool.partition_point(|q| q.left_at > p.left_at);
            pool.insert(at, p);
        });
    }

    /// Flight recorder: takes the pooled chunk that was left longest ago
    /// (its newest event is the oldest in the pool). Without any, costs one
    /// relaxed load.
    fn take_pooled(&self) -> Option<Pooled> {
        self.parts().pool.pop()
    }

    /// Flight recorder: when the pooled chunk left longest ago was left, if
    /// the pool holds any.
    fn oldest_pooled_at(&self) -> Option<u64> {
        self.parts()
            .pool
            .take(|pool| pool.last().map(|p| p.left_at))
    }

    /// Flight recorder: a live thread has left its own chunk `slot`
    /// (holding `events` events of `lane`); it joins the recorder-wide list
    /// of left chunks, stamped with the time under the list's lock so the
    /// list stays in the order chunks were left.
    fn leave(&self, lane: u32, slot: u32, events: u64) {
        self.parts().left.update(|list| {
            if list.len() == list.capacity() {
                // Full: retired, as in `pool`.
                return;
            }
            list.push(Left {
                lane,
                slot,
                events,
                left_at: clock::monotonic_ns(),
            })
        });
    }

    /// Flight recorder: takes the oldest chunk that `lane` has left, if any.
    fn take_left(&self, lane: u32) -> Option<Left> {
        self.parts().left.take(|list| {
            let i = list.iter().position(|l| l.lane == lane)?;
            Some(list.remove(i))
        })
    }

    /// Flight recorder, for a thread with no left chunk of its own: takes
    /// the oldest chunk another (live) lane has left, from a lane that has
    /// left more than one (so that a thread keeps some history of its own
    /// while another has more to give), if it was left before `before`.
    /// With `before` `None` (the pool is empty), if no lane has left more
    /// than one, the oldest chunk any other lane has left.
    fn take_left_of_others(&self, lane: u32, before: Option<u64>) -> Option<Left> {
        self.parts().left.take(|list| {
            let other = |l: &Left| l.lane != lane;
            // Counted by scanning, not in a map: no allocation here.
            let several = |l: &Left| list.iter().filter(|m| m.lane == l.lane).nth(1).is_some();
            let i = match list.iter().position(|l| other(l) && several(l)) {
                Some(i) if before.is_none_or(|t| list[i].left_at < t) => i,
                Some(_) => return None,
                None if before.is_none() => list.iter().position(other)?,
                None => return None,
            };
            Some(list.remove(i))
        })
    }

    /// Flight recorder: takes every chunk `lane` has left, oldest first (the
    /// thread is exiting and pools them).
    fn drain_left(&self, lane: u32) -> Vec<Left> {
        self.parts()
            .left
            .take(|list| {
                // In place, so the list keeps the capacity the slow path
                // relies on (this runs at thread exit: it may allocate).
                let mut mine = Vec::new();
                let mut i = 0;
                while i < list.len() {
                    if list[i].lane == lane {
                        mine.push(list.remove(i));
                    } else {
                        i += 1;
                    }
                }
                Some(mine)
            })
            .unwrap_or_default()
    }

    /// Writes a clock anchor unless one was written recently: every 10 ms
    /// during the first second (so even a short or killed process has a
    /// well-spread fit), then every second (so a long run's metadata grows
    /// by about 100 KB an hour).
    pub(crate) fn maybe_anchor(&self) {
        let now = clock::monotonic_ns();
        let interval = if now.saturating_sub(self.start_mono) < 1_000_000_000 {
            10_000_000
        } else {
            1_000_000_000
        };
        // Relaxed: a rate limit; a race writes one extra anchor.
        if now.saturating_sub(self.last_anchor_mono.load(Ordering::Relaxed)) > interval {
            self.last_anchor_mono.store(now, Ordering::Relaxed);
            self.write_meta(&MetaRef::Anchor(clock::anchor()));
        }
    }

    /// A thread without a chunk lost its first event: from now on its
    /// losses are counted in a [`Chunkless`] slot, for a `Meta::Lost`
    /// entry. `None` when every slot is taken: the thread's losses then
    /// count for the process only.
    fn register_chunkless(&self, lane: u32, tid: u32, name: &str) -> Option<usize> {
        let i = self.parts().chunkless.iter().position(|c| {
            // Relaxed: the slot's other fields are published below, under
            // its lock.
            c.lane
                .compare_exchange(0, lane, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })?;
        let c = &self.parts().chunkless[i];
        let mut who = lock(&c.who);
        who.lane = lane;
        who.tid = tid;
        let name = truncate(name, who.name.len());
        who.name[..name.len()].copy_from_slice(name.as_bytes());
        who.len = name.len();
        Some(i)
    }

    /// The thread of slot `i` got a chunk, or exits: the slot is free again
    /// (its losses counted by then).
    fn forget_chunkless(&self, i: usize) {
        // Release: a thread taking the slot next sees the counts settled.
        self.parts().chunkless[i].lane.store(0, Ordering::Release);
    }

    /// Writes the losses of slot `i` that nothing counts yet as a
    /// `Meta::Lost` entry (taking them from the slot, so that no other
    /// entry or header counts them again). If the entry cannot be stored,
    /// they go back to the slot for a later entry or chunk.
    fn note_lost(&self, i: usize) {
        let c = &self.parts().chunkless[i];
        // Relaxed: the count is the only thing exchanged; every loss is
        // taken by exactly one swap.
        let events = c.events.swap(0, Ordering::Relaxed);
        if events == 0 {
            return;
        }
        let who = lock(&c.who);
        let entry = MetaRef::Lost(LostRef {
            lane: who.lane,
            tid: who.tid,
            name: Clipped::whole(std::str::from_utf8(&who.name[..who.len]).unwrap_or("")),
            ts: self.now(),
            events,
        });
        if !self.write_meta_stored(&entry) {
            c.events.fetch_add(events, Ordering::Relaxed);
        }
    }

    /// Writes `events` losses of `lane` (thread `tid`) that the file's
    /// header counts already as a `Meta::Lost` entry, so they show on the
    /// lane; false if the entry could not be stored.
    pub(crate) fn note_lane_lost(&self, lane: u32, tid: u32, events: u64) -> bool {
        self.write_meta_stored(&MetaRef::Lost(LostRef {
            lane,
            tid,
            name: Clipped::whole(""),
            ts: self.now(),
            events,
        }))
    }

    /// Finishes the file: the losses of threads that still run without a
    /// chunk, a final anchor, the clean-exit flag. Once.
    pub(crate) fn finish(&self) {
        // Relaxed: callers serialise finishing (the session's lock).
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        for i in 0..self.parts().chunkless.len() {
            // Acquire: pairs with the slot's release when it was freed.
            if self.parts().chunkless[i].lane.load(Ordering::Acquire) != 0 {
                self.note_lost(i);
            }
        }
        self.write_meta(&MetaRef::Anchor(clock::anchor()));
        self.buf().set_finished();
        // The preparer stops.
        self.parts().ready_cv.notify_all();
        // The session's use of the file ends.
        self.detach();
    }

    /// In a child forked from a recording process: the parent's file, which
    /// the child never writes (see `session/hooks.rs`), is released in the
    /// child (its mapping and descriptor; the parent's are its own). The
    /// parent's preparer thread does not exist in the child: its handle is
    /// forgotten, not joined. Only in the child, before any of its threads
    /// could use this file (none can: it is not current).
    pub(crate) fn release_in_forked_child(&self) {
        // SeqCst: as in `attach` (there is no other thread to race with).
        if self.users.load(Ordering::SeqCst) & RELEASED != 0 {
            return; // released in the parent before the fork
        }
        // Relaxed: the child's only user of this copy is this thread.
        self.finished.store(true, Ordering::Relaxed);
        std::mem::forget(lock(&self.parts().preparer).take());
        self.users.store(0, Ordering::SeqCst);
        self.try_release();
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Lets the calling thread run on every CPU the process may use. A new
/// thread inherits the affinity of the thread that made it: the preparer,
/// started by whichever thread recorded first, would otherwise share the
/// CPU of a worker the application pinned (and compete with it, or starve
/// behind it). Asking for all CPUs gets those the process's cpuset allows.
/// Best effort.
pub(crate) fn any_cpu() {
    // SAFETY: a zeroed cpu_set_t is a valid, empty set; CPU_SET writes
    // inside it; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Gives the calling thread the lowest normal priority (nice 19). For the
/// preparer: its page work is worth doing on a spare core, but it should
/// not preempt the application's threads on a busy machine (they reserve
/// their own chunks when none is ready). Measured with two recording
/// threads on two cores: 1.43x the one-thread cost at nice 0, 1.33-1.38x at
/// nice 19, one thread unchanged; SCHED_IDLE did as well for two threads
/// but cost one thread 3% (docs/PERFORMANCE.md). Best effort.
fn idle_priority() {
    // SAFETY: who 0 is the calling thread (Linux: a thread id).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// The losses of a thread that has no chunk, and so no header to hold
/// them, that no `Meta::Lost` entry and no header counts yet. The thread
/// adds each loss; whoever counts them takes them with one swap to 0, so
/// each loss is counted exactly once: the thread's exit, or the
/// recorder's finish while it still runs (a `Meta::Lost` entry each), or
/// the thread itself when it gets a chunk after all (the header's
/// `lost_before`). One slot of a fixed table per such thread.
#[derive(Default)]
struct Chunkless {
    /// The lane of the thread using the slot; 0 when free.
    lane: AtomicU32,
    /// Losses not counted yet.
    events: AtomicU64,
    /// Its thread.
    who: Mutex<ChunklessThread>,
}

/// The thread of a [`Chunkless`] slot.
struct ChunklessThread {
    lane: u32,
    tid: u32,
    /// Its name (the first `len` bytes), cut at 256 bytes so the entry
    /// always fits.
    name: [u8; 256],
    len: usize,
}

impl Default for ChunklessThread {
    fn default() -> ChunklessThread {
        ChunklessThread {
            lane: 0,
            tid: 0,
            name: [0; 256],
            len: 0,
        }
    }
}

/// A list under a lock, with a flag saying whether it may hold anything, so
/// that finding it empty (the common case, on a slow path that may run for
/// every lost event) costs one relaxed load and no lock.
struct HintedList<T> {
    list: Mutex<Vec<T>>,
    hint: AtomicBool,
}

impl<T> HintedList<T> {
    /// An empty list with room for `cap` entries.
    fn new(cap: usize) -> HintedList<T> {
        HintedList {
            list: Mutex::new(Vec::with_capacity(cap)),
            hint: AtomicBool::new(false),
        }
    }

    /// Changes the list under its lock.
    fn update(&self, f: impl FnOnce(&mut Vec<T>)) {
        let mut list = lock(&self.list);
        f(&mut list);
        // Relaxed: a hint for `pop`; the list itself is under the lock.
        self.hint.store(!list.is_empty(), Ordering::Relaxed);
    }

    /// Takes the last element, if any.
    fn pop(&self) -> Option<T> {
        self.take(Vec::pop)
    }

    /// Takes what `f` removes from the list under its lock; `None` without
    /// the lock when the list is (probably) empty.
    fn take<R>(&self, f: impl FnOnce(&mut Vec<T>) -> Option<R>) -> Option<R> {
        // Relaxed: a stale `false` only means the element is taken next time.
        if !self.hint.load(Ordering::Relaxed) {
            return None;
        }
        let mut x = None;
        self.update(|list| x = f(list));
        x
    }
}

/// The rest of an exited thread's chunk, for the next thread that needs one.
struct HandedOff {
    /// The chunk.
    chunk: Chunk,
    /// Its next free record word.
    next: u32,
    /// Flight recorder only (empty under keep-first): the events of each
    /// segment written so far, `(lane, events)`, the header's lane first.
    segments: Segments,
}

/// A flight-recorder chunk that no thread writes any more.
struct Pooled {
    /// Its slot.
    slot: u32,
    /// CLOCK_MONOTONIC ns when its last writer left it.
    left_at: u64,
    /// The events of each of its segments, `(lane, events)`, the header's
    /// lane first: what reusing it overwrites.
    segments: Segments,
}

/// A flight-recorder chunk that a live thread claimed (or reused) and has
/// left: no thread writes it.
struct Left {
    /// The lane that left it (its header's lane).
    lane: u32,
    /// Its slot.
    slot: u32,
    /// Events of `lane` in it.
    events: u64,
    /// CLOCK_MONOTONIC ns when the thread left it.
    left_at: u64,
}

/// The thread's current chunk.
struct Current {
    slot: u32,
    /// Claimed (or reused) by this thread, rather than continued.
    own: bool,
    /// Keep-last, continued chunk: the events of the earlier segments,
    /// `(lane, events)`.
    prior: Segments,
}

/// The slow path's per-thread state for one recorder: its current chunk,
/// and its losses while it had none. Plain data: what happens at the
/// thread's exit is [`thread_exit`].
pub(crate) struct Owned {
    /// The recorder epoch this state is about.
    epoch: u32,
    current: Option<Current>,
    /// The thread lost events while it had no chunk (and has none yet):
    /// its [`Chunkless`] slot, which holds the losses no entry or header
    /// counts yet ([`NO_SLOT`]: none was free).
    chunkless: Option<usize>,
}

impl Owned {
    /// No chunk, nothing lost.
    pub(crate) const fn new() -> Owned {
        Owned {
            epoch: 0,
            current: None,
            chunkless: None,
        }
    }

    /// Whether this state is about the recorder `w` writes to.
    pub(crate) fn is_about(&self, w: &Writer) -> bool {
        self.epoch == w.epoch.get()
    }
}

/// A thread as the slow path sees it: its cursor, and its slow-path state
/// (`None` while the thread exits and its state is gone).
pub(crate) struct Thread<'a> {
    pub(crate) w: &'a Writer,
    pub(crate) owned: Option<&'a RefCell<Owned>>,
}

impl Thread<'_> {
    /// Runs `f` on the thread's slow-path state for the writer's epoch;
    /// `None` while the thread is exiting.
    fn owned<R>(&self, f: impl FnOnce(&mut Owned) -> R) -> Option<R> {
        let mut o = self.owned?.borrow_mut();
        if o.epoch != self.w.epoch.get() {
            // Another recorder's state: the chunks it left stay in the old
            // recorder's list, and its uncounted losses without a chunk in
            // the old file.
            *o = Owned {
                epoch: self.w.epoch.get(),
                ..Owned::new()
            };
        }
        Some(f(&mut o))
    }

    /// Records what the thread knows about the chunk it just installed.
    fn set_current(&self, own: bool, prior: Segments) {
        let slot = self.w.slot.get();
        self.owned(|o| o.current = Some(Current { slot, own, prior }));
    }
}

/// Writes an event (and its payload) for the slow path: whenever the fast
/// path could not, because the thread has no room, needs a new time base,
/// or records on CLOCK_MONOTONIC. Gives the thread a chunk when it needs
/// one; without one, counts the event as lost. The thread has a lane.
pub(crate) fn write_slow(
    t: &Thread,
    sup: &'static Chunks,
    bits: u32,
    kind: u8,
    payload: Option<[u64; 2]>,
) {
    let w = t.w;
    let event_words = 1 + if payload.is_some() { 2 } else { 0 };
    let mut ts = sup.now();
    let mut need_base = w.need_base.get() || word::high(ts) != w.base_hi.get();
    let need = event_words + if need_base { 2 } else { 0 };
    if w.idx.get() + need > w.room.get() && !grow_current(w, sup, need) {
        if !new_chunk(t, sup) {
            w.lost.set(w.lost.get() + 1);
            sup.buf().add_lost_events(1);
            if !w.hdr.get().is_null() {
                // The gap is after the last chunk this lane has.
                Chunk::set_lost_after_at(w.hdr.get(), w.lost.get());
            } else {
                lost_without_chunk(t, sup);
            }
            return;
        }
        // A fresh segment (new_chunk guarantees room for a base and an
        // event with payload): its time base is the event's time.
        ts = sup.now();
        need_base = true;
    }
    let mut words = [0u64; 5];
    let mut n = 0;
    if need_base {
        words[0] = word::site_kind(0, kind::BASE);
        words[1] = ts;
        n = 2;
        w.base_hi.set(word::high(ts));
        w.need_base.set(false);
    }
    words[n] = word::new(ts, bits as u64 | kind as u64);
    n += 1;
    if let Some(p) = payload {
        words[n] = p[0];
        words[n + 1] = p[1];
        n += 2;
    }
    w.extra.set(w.extra.get() + n as u32 - 1);
    // SAFETY: new_chunk or the check above guarantees room for `n` words.
    unsafe { w.write_words(w.idx.get(), &words[..n]) };
}

/// Reserves more of the thread's current chunk, so that `need` more words
/// fit: false when it has no chunk, the chunk is reserved whole, or the
/// file cannot grow (then the thread goes on as with a full chunk, and a
/// claim after a failure waits as a failed claim does).
fn grow_current(w: &Writer, sup: &Chunks, need: u32) -> bool {
    if w.hdr.get().is_null() || w.room.get() == 0 {
        return false;
    }
    let retry_at = w.retry_at.get();
    if retry_at != 0 && retry_at != u64::MAX && clock::monotonic_ns() < retry_at {
        return false;
    }
    let at_least = w.idx.get() + need;
    match sup
        .buf()
        .grow(w.slot.get(), format::CHUNK_EVENTS, w.room.get(), at_least)
    {
        Ok(room) => {
            w.set_room(room);
            true
        }
        Err(_) => false,
    }
}

/// Counts a loss of a thread that has no chunk, so no header to hold it,
/// in its [`Chunkless`] slot (taken at its first such loss), for the
/// `Meta::Lost` entry its exit or the recorder's finish writes. While the
/// thread exits (its slow-path state is gone), or when every slot is
/// taken, the loss counts for the process only.
fn lost_without_chunk(t: &Thread, sup: &Chunks) {
    t.owned(|o| {
        let i = *o.chunkless.get_or_insert_with(|| {
            let th = std::thread::current();
            sup.register_chunkless(t.w.lane.get(), t.w.tid.get(), th.name().unwrap_or(""))
                .unwrap_or(NO_SLOT)
        });
        if let Some(c) = sup.parts().chunkless.get(i) {
            // Relaxed: see `Chunks::note_lost`.
            c.events.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// [`Owned::chunkless`] of a thread that found no free [`Chunkless`] slot.
const NO_SLOT: usize = usize::MAX;

/// The losses a thread without a chunk brings into the chunk it gets:
/// those of its [`Chunkless`] slot that no `Meta::Lost` entry counts yet
/// (the recorder's finish may have written some). They are taken just
/// before the first attempt that may publish a header (or a hand-off) with
/// them, and given back if every attempt fails, so that no loss is in an
/// entry and in a header.
struct Carry(Option<usize>);

impl Carry {
    /// Puts the thread's uncounted losses into `init` (once).
    fn take(&mut self, t: &Thread, sup: &Chunks, init: &mut ChunkInit) {
        if self.0.is_some() {
            return;
        }
        if let Some(i) = t.owned(|o| o.chunkless).flatten() {
            if let Some(c) = sup.parts().chunkless.get(i) {
                // Relaxed: see `Chunks::note_lost`.
                init.lost_before = c.events.swap(0, Ordering::Relaxed);
            }
            self.0 = Some(i);
        }
    }

    /// The thread has a chunk now: its losses go into headers again.
    fn done(self, t: &Thread, sup: &Chunks) {
        if let Some(i) = self.0 {
            if i != NO_SLOT {
                sup.forget_chunkless(i);
            }
            t.owned(|o| o.chunkless = None);
        }
    }

    /// No chunk after all: the losses in `init` are uncounted again.
    fn give_back(self, sup: &Chunks, init: &ChunkInit) {
        if let Some(c) = self.0.and_then(|i| sup.parts().chunkless.get(i)) {
            c.events.fetch_add(init.lost_before, Ordering::Relaxed);
        }
    }
}

/// Gives this thread a chunk to write to: the rest of a finished thread's
/// chunk, else a fresh one. Under `keep-last`, when the budget is used up
/// or the file cannot grow, the thread starts its own oldest chunk over,
/// or, when it has left none, the oldest chunk another thread has left
/// (pooled, or on the recorder's left list), or else its current chunk.
/// False when there is nothing to write to (keep-first with the budget
/// used up or the disk full).
fn new_chunk(t: &Thread, sup: &'static Chunks) -> bool {
    let w = t.w;
    let keep_last = sup.buf().policy() == Policy::KeepLast;
    if keep_last && t.owned.is_none() {
        // The thread is exiting and its chunk list is gone: a chunk taken
        // now would never be pooled again. The event is lost (and counted).
        w.set_room(0);
        return false;
    }
    let mut init = ChunkInit {
        kind: format::CHUNK_EVENTS,
        lane: w.lane.get(),
        tid: w.tid.get(),
        seq: w.seq.get(),
        lost_before: w.lost.get(),
        overwritten: w.overwritten.get(),
    };
    let mut carry = Carry(None);
    let got = take_a_chunk(t, sup, &mut init, &mut carry);
    if got {
        carry.done(t, sup);
    } else {
        carry.give_back(sup, &init);
        // Nothing to write to: keep-first with the budget used up or the
        // disk full, or a flight-recorder thread with no chunk at all while
        // every other chunk is some live thread's current chunk.
        w.set_room(0);
    }
    got
}

/// [`new_chunk`]'s attempts, in order: a hand-off, a claim, and (keep-last)
/// a reuse. Each first puts the losses of a thread without a chunk into
/// `init` (see [`Carry`]).
fn take_a_chunk(t: &Thread, sup: &'static Chunks, init: &mut ChunkInit, carry: &mut Carry) -> bool {
    let w = t.w;
    let keep_last = sup.buf().policy() == Policy::KeepLast;
    let retry_at = w.retry_at.get();
    let may_claim = retry_at == 0 || (retry_at != u64::MAX && clock::monotonic_ns() >= retry_at);
    while let Some(h) = sup.take_handoff() {
        carry.take(t, sup, init);
        // Continue a finished thread's chunk: say so in the metadata
        // first, so the reader attributes the records from `start` on to
        // this lane.
        let stored = sup.write_meta_stored(&MetaRef::Handoff(format::Handoff {
            slot: h.chunk.slot,
            start: h.next,
            lane: init.lane,
            tid: init.tid,
            seq: init.seq,
            lost_before: init.lost_before,
        }));
        if !stored {
            // Without the entry a reader would give this thread's records
            // to the chunk's previous lane: do not continue the chunk.
            // Keep-first leaves it as it is; keep-last pools it (reusing
            // it needs a `Reused` entry, so it stays as it is too while
            // the metadata space is full).
            if keep_last {
                sup.pool(Pooled {
                    slot: h.chunk.slot,
                    left_at: clock::monotonic_ns(),
                    segments: h.segments,
                });
            }
            continue;
        }
        leave_current(t, sup);
        w.install(h.chunk, h.next);
        // Not owned: a continued chunk is reused only through the pool,
        // with a `Reused` entry that retires its hand-offs.
        t.set_current(false, h.segments);
        return true;
    }
    if may_claim || sup.ready_waiting() {
        carry.take(t, sup, init);
        match sup.claim_events(init, may_claim) {
            Ok(c) => {
                leave_current(t, sup);
                w.install(c, 0);
                t.set_current(true, Segments::new());
                return true;
            }
            // Nothing ready after all (another thread took it).
            Err(ClaimError::Budget) if !may_claim => {}
            // The budget will not come back.
            Err(ClaimError::Budget) => w.retry_at.set(u64::MAX),
            Err(ClaimError::Io(e)) => {
                let then = match sup.buf().policy() {
                    Policy::KeepLast => {
                        "the flight recorder goes on by overwriting the oldest events"
                    }
                    Policy::KeepFirst => "threads stop recording until there is room again",
                };
                crate::warn::warn_once(
                    &sup.grow_warned,
                    format_args!(
                        "cannot grow {} ({}); {then}, and lost events are counted",
                        sup.buf().path().display(),
                        crate::warn::Errno(e.raw_os_error().unwrap_or(0)),
                    ),
                );
                // A full disk stays full for a while: retry in 100 ms.
                w.retry_at.set(clock::monotonic_ns() + 100_000_000);
            }
        }
    }
    if keep_last {
        carry.take(t, sup, init);
        return reuse_a_chunk(t, sup, init);
    }
    false
}

/// Flight recorder, once no fresh chunk can be had: overwrites, in order
/// of preference, this thread's oldest chunk (one it left, never its
/// current one, so it keeps at least a chunk of history), the oldest chunk
/// another thread has left (pooled, or a live thread's: see
/// [`take_from_others`]), or its current chunk. True when the thread got
/// one.
fn reuse_a_chunk(t: &Thread, sup: &'static Chunks, init: &ChunkInit) -> bool {
    let w = t.w;
    let retry = w.retry_at.get();
    let got = if let Some(old) = sup.take_left(w.lane.get()) {
        // SAFETY: the slot is an event chunk this thread claimed (or took)
        // from this supply (the list is the supply's) and left; taking it
        // from the list under its lock made it this thread's alone.
        let c = unsafe { reuse_own(w, sup, init, old.slot, old.events) };
        leave_current(t, sup);
        Some(c)
    } else if let Some(c) = take_from_others(w, sup, init) {
        leave_current(t, sup);
        Some(c)
    } else {
        reuse_current(t, sup, init)
    };
    let Some(c) = got else {
        return false;
    };
    sup.maybe_anchor();
    w.install(c, 0);
    t.set_current(true, Segments::new());
    w.retry_at.set(retry);
    true
}

/// Starts this thread's own chunk `slot`, holding `events` events of its
/// lane, over: the new header's cumulative `overwritten` grows by the
/// events, and its `lost_before` takes over the old header's (the events
/// the lane lost before the overwritten ones: the chunk's content goes,
/// the count of what the lane lost stays in a header of the lane). Then
/// the events count in `lost_events` and in the lane's `overwritten`.
///
/// One header rewrite moves the losses, so a SIGKILL leaves them in the
/// old header or in the new one, never in both (or, killed in the middle
/// of the rewrite, in neither: the chunk has no magic and is skipped).
///
/// # Safety
/// `slot` is an event chunk this thread claimed or reused as its own from
/// this supply, and no other thread can take it.
unsafe fn reuse_own(w: &Writer, sup: &Chunks, init: &ChunkInit, slot: u32, events: u64) -> Chunk {
    // SAFETY: guaranteed by the caller.
    let old = unsafe { sup.buf().chunk_owner(slot) };
    let init = ChunkInit {
        overwritten: w.overwritten.get() + events,
        // Saturating: a panic here could be in a TLS destructor.
        lost_before: init.lost_before.saturating_add(old.lost_before),
        ..*init
    };
    // SAFETY: guaranteed by the caller.
    let c = unsafe { sup.buf().reuse(slot, &init) };
    sup.buf().add_lost_events(events);
    w.overwritten.set(w.overwritten.get() + events);
    c
}

/// For a thread with no chunk of its own to overwrite: takes the oldest
/// of the chunks other threads no longer write, until one can be reused,
/// through a [`Meta::Reused`] entry (so that the overwritten events count
/// against the lanes that wrote them). The candidates are the pooled chunk
/// left longest ago (exited threads' chunks, and continued chunks) and the
/// oldest chunk of a live lane that has left more than one (see
/// [`Chunks::take_left_of_others`]); without either, the oldest chunk
/// any other live lane has left. A chunk whose entry cannot be stored (the
/// metadata space is used up) is left as it is, for good: its content
/// stays readable.
fn take_from_others(w: &Writer, sup: &'static Chunks, init: &ChunkInit) -> Option<Chunk> {
    loop {
        let pooled_at = sup.oldest_pooled_at();
        let (slot, segments) = if let Some(l) = sup.take_left_of_others(w.lane.get(), pooled_at) {
            (l.slot, Segments::from_iter([(l.lane, l.events)]))
        } else if pooled_at.is_none() {
            return None;
        } else if let Some(p) = sup.take_pooled() {
            (p.slot, p.segments)
        } else {
            // Another thread emptied the pool meanwhile: look again.
            continue;
        };
        // SAFETY: the thread that left the chunk (a live lane's, or a
        // pooled one) no longer writes it, and taking it from its list
        // under the list's lock made it this thread's alone.
        if let Some(c) = unsafe { reuse_shared(sup, init, slot, &segments) } {
            return Some(c);
        }
    }
}

/// Starts the current chunk over (the thread has no other chunk to
/// overwrite).
fn reuse_current(t: &Thread, sup: &'static Chunks, init: &ChunkInit) -> Option<Chunk> {
    let w = t.w;
    if w.hdr.get().is_null() {
        return None;
    }
    let cur = t.owned(|o| o.current.take()).flatten()?;
    let events = w.segment_events();
    if cur.own {
        // SAFETY: the thread's own chunk, which it stops writing here.
        return Some(unsafe { reuse_own(w, sup, init, cur.slot, events) });
    }
    let mut segments = cur.prior.clone();
    // Room: a chunk is handed on only with fewer than MAX_SEGMENTS.
    segments.push((w.lane.get(), events));
    // SAFETY: a continued chunk is written only by its current owner, this
    // thread, which stops writing it here.
    let c = unsafe { reuse_shared(sup, init, cur.slot, &segments) };
    if c.is_none() {
        // Still the current chunk (full): the losses go into its header.
        t.owned(|o| o.current = Some(cur));
    }
    c
}

/// Gives `slot`, a chunk other threads wrote (`segments` says how many
/// events of which lane it holds), to the thread of `init`: writes
/// [`Meta::Reused`] under the metadata lock, then re-initialises the
/// header, then counts the overwritten events, then writes the replaced
/// header's `lost_before` (the losses of its lane before the chunk) as
/// [`Meta::Lost`]. `None` (and the chunk untouched) if the `Reused` entry
/// could not be stored: without it a reader would split the new content at
/// the old hand-offs.
///
/// A SIGKILL between the entry and the end of the header's
/// re-initialisation leaves either the old header (the reader sees that
/// the entry's `lane`/`seq` are not there and keeps the old hand-offs) or
/// a header without magic (the reader skips the chunk); either way its
/// old events are not yet in `lost_events`.
///
/// # Safety
/// No thread writes `slot` any more or can take it.
unsafe fn reuse_shared(
    sup: &'static Chunks,
    init: &ChunkInit,
    slot: u32,
    segments: &[(u32, u64)],
) -> Option<Chunk> {
    // SAFETY: guaranteed by the caller.
    let old = unsafe { sup.buf().chunk_owner(slot) };
    let (prev_lane, prev_overwritten) = (old.lane, old.overwritten);
    let events = segments.iter().map(|s| s.1).sum::<u64>();
    let entry_ts = sup.now();
    let entry = MetaRef::Reused(ReusedRef {
        slot,
        lane: init.lane,
        seq: init.seq,
        ts: entry_ts,
        prev_lane,
        prev_overwritten,
        overwritten: segments,
    });
    if !sup.write_meta_stored(&entry) {
        return None;
    }
    // The events belong to the lanes in the entry, not to this thread:
    // its own `overwritten` stays as it is.
    // SAFETY: guaranteed by the caller.
    let c = unsafe { sup.buf().reuse(slot, init) };
    sup.buf().add_lost_events(events);
    if old.lost_before > 0 {
        // What the old header's lane lost before the chunk: the header is
        // gone, so an entry counts it now (the hand-offs' losses are in
        // their own entries). Written after the header, so a SIGKILL
        // never leaves it counted twice.
        sup.write_meta(&MetaRef::Lost(LostRef {
            lane: old.lane,
            tid: old.tid,
            name: Clipped::whole(""),
            ts: entry_ts,
            events: old.lost_before,
        }));
    }
    Some(c)
}

/// The thread leaves its current chunk (it has a new one, not yet
/// installed, and writes nothing more into this one): under keep-last an
/// own chunk joins the recorder's list of left chunks, a continued one goes
/// to the pool. Keep-first never reuses a chunk.
fn leave_current(t: &Thread, sup: &Chunks) {
    let w = t.w;
    if w.hdr.get().is_null() || sup.buf().policy() != Policy::KeepLast {
        return;
    }
    let Some(cur) = t.owned(|o| o.current.take()).flatten() else {
        return;
    };
    let events = w.segment_events();
    if cur.own {
        sup.leave(w.lane.get(), cur.slot, events);
    } else {
        let mut segments = cur.prior;
        segments.push((w.lane.get(), events));
        sup.pool(Pooled {
            slot: cur.slot,
            left_at: clock::monotonic_ns(),
            segments,
        });
    }
}

/// The thread is exiting: offer the unused rest of its chunk to the next
/// thread that needs one (1,000 short-lived threads then share chunks
/// instead of taking 1,000 of them), and stop writing into it. Under
/// keep-last, its other chunks (and its current one, if not handed off) go
/// to the pool, where threads with no chunk of their own to overwrite take
/// them, the chunk left longest ago first. A thread that lost events
/// without ever having a chunk writes them as [`Meta::Lost`].
///
/// Afterwards the writer has no chunk: an event recorded by a later
/// thread-local destructor must not touch a header that is another
/// thread's (or the pool's) now.
pub(crate) fn thread_exit(w: &Writer, o: &mut Owned, sup: &Chunks) {
    let keep_last = sup.buf().policy() == Policy::KeepLast;
    let now = clock::monotonic_ns();
    let lane = w.lane.get();
    let next = w.idx.get();
    let mut segments = Segments::new();
    if keep_last {
        if let Some(cur) = &mut o.current {
            segments = std::mem::take(&mut cur.prior);
            segments.push((lane, w.segment_events()));
        }
    }
    let current = o.current.take();
    let mut chunk = w.take_chunk();
    if let Some(c) = chunk.as_mut().filter(|c| c.capacity <= next + 16) {
        // Room for the next thread, if the chunk has more to reserve. (A
        // writer whose claim failed has room 0 for a chunk that holds
        // `next` words: those are reserved, and are not to be reserved
        // again, which would write zeros over them.)
        let have = c.capacity.max(next);
        let grown = sup
            .buf()
            .grow(c.slot, format::CHUNK_EVENTS, have, next + 17);
        if let Ok(capacity) = grown {
            c.capacity = capacity;
        }
    }
    if let (Some(cur), Some(chunk)) = (current, chunk) {
        if chunk.capacity > next + 16 && segments.len() < MAX_SEGMENTS {
            sup.hand_off(HandedOff {
                chunk,
                next,
                segments,
            });
        } else if keep_last {
            sup.pool(Pooled {
                slot: cur.slot,
                left_at: now,
                segments,
            });
        }
    }
    if keep_last {
        // The chunks it left that no other thread took.
        for l in sup.drain_left(lane) {
            sup.pool(Pooled {
                slot: l.slot,
                left_at: l.left_at,
                segments: Segments::from_iter([(lane, l.events)]),
            });
        }
    }
    if let Some(i) = o.chunkless.take().filter(|&i| i != NO_SLOT) {
        // It never had a chunk: its losses go into an entry, then the slot
        // is free.
        sup.note_lost(i);
        sup.forget_chunkless(i);
    }
}

/// The chunk supply and the flight recorder on plain memory: simulated
/// threads (a [`Writer`] and an [`Owned`] each, driven one at a time from
/// the test thread) record into a [`Chunks`] over anonymous memory, and the
/// merge's own reader decodes the bytes. Every test checks the accounting
/// the format promises: per lane, events kept + events lost or overwritten
/// = events made, and no loss left to the process.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mpprof_merge::read::{self, ProcessFile};
    use mpprof_merge::{EventKind, Session};

    use super::*;
    use crate::buffer::Config;
    use crate::format::MIN_CHUNK_SIZE;

    /// Record words in a 4 KiB chunk: (4096 - 64) / 8.
    const WORDS: u64 = ((MIN_CHUNK_SIZE - format::CHUNK_HEADER_SIZE) / format::RECORD_SIZE) as u64;

    /// A supply of `slots` 4 KiB chunks under `policy`, whose "disk" holds
    /// `limit` bytes. Leaked: a supply is `'static`, like a recorder.
    fn supply(policy: Policy, slots: u32, limit: u64) -> &'static Chunks {
        supply_of(MIN_CHUNK_SIZE, policy, slots, limit)
    }

    /// [`supply`] with chunks of `chunk_size` bytes.
    fn supply_of(chunk_size: u32, policy: Policy, slots: u32, limit: u64) -> &'static Chunks {
        let config = Config {
            chunk_size,
            max_chunks: slots,
            policy,
        };
        let buf = ProcessBuffer::in_memory(config, 0xfeed, 4242, limit).expect("anonymous memory");
        Box::leak(Box::new(Chunks::new(buf, false, false)))
    }

    /// A simulated thread, and how many events it made.
    struct T {
        w: Writer,
        o: RefCell<Owned>,
        name: String,
        made: u64,
    }

    impl T {
        fn new(sup: &Chunks, name: &str) -> T {
            let w = Writer::new();
            // An even epoch: timestamps from CLOCK_MONOTONIC, so every
            // event takes the slow path (the fast path only skips it).
            w.reset(4);
            let tid = 1000 + sup.next_lane.load(Ordering::Relaxed);
            w.tid.set(tid);
            w.lane.set(sup.new_lane(tid, name));
            T {
                w,
                o: RefCell::new(Owned::new()),
                name: name.to_owned(),
                made: 0,
            }
        }

        /// Records `n` instants (callsite 1), every 7th a counter with a
        /// payload, so segments hold payload words too.
        fn record(&mut self, sup: &'static Chunks, n: u64) {
            for i in 0..n {
                let t = Thread {
                    w: &self.w,
                    owned: Some(&self.o),
                };
                let (k, p) = if i % 7 == 6 {
                    (kind::COUNTER, Some([i, 0]))
                } else {
                    (kind::INSTANT, None)
                };
                write_slow(&t, sup, 1 << word::SITE_SHIFT, k, p);
                self.made += 1;
            }
        }

        fn exit(self, sup: &Chunks) -> (String, u64) {
            thread_exit(&self.w, &mut self.o.borrow_mut(), sup);
            assert!(self.w.hdr.get().is_null(), "an exited thread has no chunk");
            (self.name, self.made)
        }

        fn made(&self) -> (String, u64) {
            (self.name.clone(), self.made)
        }
    }

    /// The buffer as the merge reads it.
    fn read(sup: &Chunks) -> ProcessFile {
        let f = read::from_bytes("memory.mpb".as_ref(), sup.buf().snapshot()).expect("it reads");
        let unexpected: Vec<&String> = f
            .warnings
            .iter()
            .filter(|w| !w.contains("no process information"))
            .collect();
        assert!(unexpected.is_empty(), "{unexpected:?}");
        f
    }

    /// Each thread's events kept on its lane plus its losses (as the reader
    /// counts them, and as the merged trace's loss markers show them on
    /// the lane) are exactly what it made; the process's lost events are
    /// all some lane's. Returns the events kept per thread.
    fn accounts(sup: &Chunks, made: &[(String, u64)]) -> BTreeMap<String, u64> {
        let f = read(sup);
        let lane_of: BTreeMap<String, u32> = f
            .lanes
            .iter()
            .map(|(&lane, l)| (l.name.clone(), lane))
            .collect();
        let mut kept = BTreeMap::new();
        for (name, n) in made {
            let lane = lane_of[name];
            let k = f.lane_events(lane);
            let lost = f.lanes[&lane].lost();
            assert_eq!(k + lost, *n, "{name} (lane {lane}): {k} kept + {lost} lost");
            kept.insert(name.clone(), k);
        }
        assert_eq!(f.unattributed_losses(), 0, "every loss is a lane's");
        let total: u64 = made.iter().map(|m| m.1).sum();
        assert_eq!(f.recorded_events() + f.lost_events, total);
        // The merged trace shows the same on each lane.
        let s = Session::from_files(vec![f]);
        let mut shown: BTreeMap<u32, u64> = BTreeMap::new();
        for e in s.events() {
            let n = match e.kind {
                EventKind::Lost { count, .. } => count,
                EventKind::Instant { .. } | EventKind::Counter { .. } => 1,
                _ => 0,
            };
            *shown.entry(e.lane).or_default() += n;
        }
        for (name, n) in made {
            assert_eq!(shown[&lane_of[name]], *n, "{name} in the merged trace");
        }
        kept
    }

    #[test]
    fn keep_first_counts_what_comes_after_the_budget() {
        // 6 slots: events stop 2 short of the budget, and the metadata log
        // took the first slot: 3 event chunks.
        let sup = supply(Policy::KeepFirst, 6, u64::MAX);
        let mut a = T::new(sup, "a");
        let mut b = T::new(sup, "b");
        for _ in 0..10 {
            a.record(sup, 300);
            b.record(sup, 200);
        }
        let kept = accounts(sup, &[a.made(), b.made()]);
        // Three chunks' worth is kept: 6 of 7 events take a word, every 7th
        // (a counter) three, and each chunk starts with a time base.
        let all: u64 = kept.values().sum();
        assert!(
            all * 9 / 7 <= 3 * WORDS && all * 9 / 7 > 3 * (WORDS - 8),
            "{kept:?}"
        );
        assert_eq!(read(sup).lost_chunks, 0);
    }

    #[test]
    fn a_full_disk_costs_events_and_recording_resumes_when_space_returns() {
        // The "disk" holds the header and two chunks (metadata, one event
        // chunk): the second event chunk cannot be reserved.
        let room = format::HEADER_SIZE + 2 * u64::from(MIN_CHUNK_SIZE);
        let sup = supply(Policy::KeepFirst, 16, room);
        let mut a = T::new(sup, "a");
        a.record(sup, 2 * WORDS);
        let before = accounts(sup, &[a.made()])["a"];
        let f = read(sup);
        assert!(f.lost_chunks > 0 && f.lost_events == 2 * WORDS - before);
        // Space comes back; the thread retries after its 100 ms back-off.
        sup.buf().set_memory_limit(u64::MAX);
        std::thread::sleep(std::time::Duration::from_millis(110));
        a.record(sup, 100);
        let kept = accounts(sup, &[a.made()]);
        assert_eq!(kept["a"], before + 100, "recording resumed");
    }

    #[test]
    fn keep_last_keeps_each_threads_newest_events_and_counts_the_rest() {
        let sup = supply(Policy::KeepLast, 8, u64::MAX);
        let mut threads: Vec<T> = (0..3).map(|i| T::new(sup, &format!("t{i}"))).collect();
        for round in 0..20u64 {
            for (i, t) in threads.iter_mut().enumerate() {
                t.record(sup, 100 + 37 * ((round + i as u64) % 5));
            }
        }
        let made: Vec<_> = threads.iter().map(T::made).collect();
        let kept = accounts(sup, &made);
        let f = read(sup);
        for (name, k) in &kept {
            assert!(*k > 0, "{name} keeps events: {kept:?}");
            let lane = f.lanes.iter().find(|l| &l.1.name == name).unwrap().1;
            assert!(lane.overwritten > 0, "{name} had events overwritten");
            assert_eq!(lane.not_recorded(), 0, "keep-last loses nothing unrecorded");
        }
        // The newest event of each thread survives: its last counter.
        let s = Session::from_files(vec![f]);
        let mut last_counter: BTreeMap<u32, f64> = BTreeMap::new();
        for e in s.events() {
            if let EventKind::Counter { value, .. } = e.kind {
                last_counter.insert(e.lane, value.as_f64());
            }
        }
        assert_eq!(last_counter.len(), 3, "{last_counter:?}");
    }

    /// Keep-last: the losses a lane had before a chunk (here: while the
    /// disk was full) stay counted when the lane overwrites that chunk.
    #[test]
    fn keep_last_keeps_the_losses_before_a_chunk_it_overwrites() {
        let room = format::HEADER_SIZE + u64::from(MIN_CHUNK_SIZE);
        let sup = supply(Policy::KeepLast, 8, room);
        let mut a = T::new(sup, "a");
        a.record(sup, 1000);
        assert_eq!(read(sup).lost_events, 1000, "no event chunk: all lost");
        sup.buf().set_memory_limit(u64::MAX);
        std::thread::sleep(std::time::Duration::from_millis(110));
        a.record(sup, 20 * WORDS);
        accounts(sup, &[a.made()]);
        let f = read(sup);
        let lane = f.lanes.values().next().unwrap();
        assert_eq!(lane.not_recorded(), 1000, "{lane:?}");
    }

    #[test]
    fn an_exited_threads_chunk_is_continued_by_the_next_thread() {
        let sup = supply(Policy::KeepFirst, 16, u64::MAX);
        let mut made = Vec::new();
        for i in 0..50 {
            let mut t = T::new(sup, &format!("short{i}"));
            t.record(sup, 3);
            made.push(t.exit(sup));
        }
        accounts(sup, &made);
        let f = read(sup);
        // 50 threads of 3 events (and a time base each) share one chunk.
        let event_chunks = f.lanes.values().flat_map(|l| &l.chunks).count();
        assert_eq!(event_chunks, 50, "one segment per thread");
        assert_eq!(f.handoffs.len(), 49);
        assert!(
            f.handoffs.iter().all(|h| h.slot == f.handoffs[0].slot),
            "all in the first event chunk"
        );
    }

    #[test]
    fn a_thread_that_never_had_a_chunk_reports_its_own_losses() {
        let sup = supply(Policy::KeepFirst, 6, u64::MAX);
        let mut busy = T::new(sup, "busy");
        busy.record(sup, 10 * WORDS);
        let mut late = T::new(sup, "late");
        late.record(sup, 500);
        // It exits: its losses become a `Lost` entry of its lane.
        let late = late.exit(sup);
        let mut later = T::new(sup, "later");
        later.record(sup, 70);
        // Still running at the finish: the finish writes its entry.
        sup.finish();
        accounts(sup, &[busy.made(), late, later.made()]);
        let f = read(sup);
        assert!(f.clean);
        let by_name = |n: &str| f.lanes.values().find(|l| l.name == n).unwrap();
        assert_eq!(by_name("late").lost_noted, 500);
        assert_eq!(by_name("later").lost_noted, 70);
    }

    #[test]
    fn keep_last_threads_churning_account_for_every_event() {
        let sup = supply(Policy::KeepLast, 8, u64::MAX);
        let mut made = Vec::new();
        let mut long = T::new(sup, "long");
        for i in 0..120u64 {
            long.record(sup, 40);
            let mut t = T::new(sup, &format!("short{i}"));
            t.record(sup, 5 + i % 90);
            made.push(t.exit(sup));
        }
        made.push(long.made());
        accounts(sup, &made);
        let f = read(sup);
        assert!(
            f.reuses.iter().any(|r| r.effective),
            "chunks other threads wrote were taken over"
        );
        assert!(f.lanes.values().any(|l| l.overwritten > 0));
    }

    #[test]
    fn a_late_thread_under_keep_last_takes_a_chunk_another_thread_left() {
        // 6 slots: 4 event chunks, all claimed by `busy`.
        let sup = supply(Policy::KeepLast, 6, u64::MAX);
        let mut busy = T::new(sup, "busy");
        busy.record(sup, 6 * WORDS);
        let mut late = T::new(sup, "late");
        late.record(sup, 300);
        busy.record(sup, 100);
        accounts(sup, &[busy.made(), late.made()]);
        let f = read(sup);
        let late_lane = f.lanes.iter().find(|l| l.1.name == "late").unwrap();
        assert_eq!(
            f.lane_events(*late_lane.0),
            300,
            "the late thread kept all it made"
        );
        let r = f
            .reuses
            .iter()
            .find(|r| r.entry.lane == *late_lane.0)
            .unwrap();
        assert!(r.effective && r.entry.overwritten.iter().all(|o| o.0 != *late_lane.0));
    }

    /// Chunks of 64 KiB: reserved 4 KiB at a time at first, then twice as
    /// much each time they fill.
    const BIG: u32 = 64 * 1024;

    /// Record words in a 64 KiB chunk.
    const BIG_WORDS: u64 = ((BIG - format::CHUNK_HEADER_SIZE) / format::RECORD_SIZE) as u64;

    #[test]
    fn chunks_take_disk_as_they_fill() {
        let sup = supply_of(BIG, Policy::KeepFirst, 16, u64::MAX);
        let mut a = T::new(sup, "a");
        a.record(sup, 100);
        accounts(sup, &[a.made()]);
        // The header, the metadata chunk's and the event chunk's first
        // 4 KiB.
        let page = u64::from(crate::buffer::FIRST_RESERVE);
        assert_eq!(sup.buf().memory_reserved(), format::HEADER_SIZE + 2 * page);
        // One chunk and a bit: the first grew to the whole chunk; the
        // second, a busy thread's, is reserved whole at once.
        a.record(sup, BIG_WORDS);
        accounts(sup, &[a.made()]);
        assert_eq!(
            sup.buf().memory_reserved(),
            format::HEADER_SIZE + page + 2 * u64::from(BIG)
        );
        // A second thread's first chunk starts small again.
        let mut b = T::new(sup, "b");
        b.record(sup, 10);
        accounts(sup, &[a.made(), b.made()]);
        assert_eq!(
            sup.buf().memory_reserved(),
            format::HEADER_SIZE + 2 * page + 2 * u64::from(BIG)
        );
        let f = read(sup);
        assert_eq!(f.lanes.values().next().unwrap().chunks.len(), 2);
        assert_eq!(f.lost_chunks, 0);
    }

    #[test]
    fn a_disk_that_fills_while_a_chunk_grows_costs_events_not_a_crash() {
        // The "disk" ends 17 KiB into the first event chunk: it grows to
        // 16 KiB and no further (a write past that would crash the test:
        // what is not reserved is read-only).
        let room = format::HEADER_SIZE + u64::from(BIG) + 17 * 1024;
        let sup = supply_of(BIG, Policy::KeepFirst, 16, room);
        let mut a = T::new(sup, "a");
        a.record(sup, 2 * BIG_WORDS);
        let before = accounts(sup, &[a.made()])["a"];
        let f = read(sup);
        assert!(f.lost_chunks > 0, "{}", f.lost_chunks);
        assert!(
            before * 9 / 7 <= 2040 && before * 9 / 7 > 1900,
            "16 KiB of records kept: {before}"
        );
        // The thread exits with its chunk full (the file could not grow):
        // what it wrote stays.
        let a = a.exit(sup);
        assert_eq!(accounts(sup, std::slice::from_ref(&a))["a"], before);
        // Space comes back; a new thread records.
        sup.buf().set_memory_limit(u64::MAX);
        let mut b = T::new(sup, "b");
        b.record(sup, 100);
        let kept = accounts(sup, &[a, b.made()]);
        assert_eq!(kept["b"], 100, "recording resumed");
    }

    #[test]
    fn keep_last_with_growing_chunks_accounts_for_every_event() {
        // Threads that leave chunks partly written (and partly reserved),
        // which others continue and the flight recorder reuses: a reuse
        // reserves the rest of the chunk first.
        let sup = supply_of(BIG, Policy::KeepLast, 6, u64::MAX);
        let mut made = Vec::new();
        let mut long = T::new(sup, "long");
        for i in 0..60u64 {
            long.record(sup, 900);
            let mut t = T::new(sup, &format!("short{i}"));
            t.record(sup, 5 + 41 * (i % 13));
            made.push(t.exit(sup));
        }
        made.push(long.made());
        accounts(sup, &made);
        let f = read(sup);
        assert!(f.lanes.values().any(|l| l.overwritten > 0));
        // Every slot ends up reserved whole: no more than the budget.
        assert!(sup.buf().memory_reserved() <= format::HEADER_SIZE + 6 * u64::from(BIG));
    }

    #[test]
    fn keep_last_reserves_the_rest_of_a_partly_reserved_chunk_it_reuses() {
        // 6 slots: 4 event chunks. Seventeen short threads share the first
        // (its first 4 KiB); with sixteen segments it goes to the pool,
        // partly reserved. `busy` takes the other three and fills them; a
        // late thread then reuses the pooled chunk and writes all of it.
        let sup = supply_of(BIG, Policy::KeepLast, 6, u64::MAX);
        let mut made = Vec::new();
        for i in 0..17 {
            let mut t = T::new(sup, &format!("short{i}"));
            t.record(sup, 10);
            made.push(t.exit(sup));
        }
        let mut busy = T::new(sup, "busy");
        busy.record(sup, 3 * BIG_WORDS);
        let mut late = T::new(sup, "late");
        late.record(sup, BIG_WORDS / 2);
        made.push(busy.made());
        made.push(late.made());
        accounts(sup, &made);
        let f = read(sup);
        assert!(
            f.reuses.iter().any(|r| r.effective),
            "the pooled chunk was reused"
        );
        let late_lane = f.lanes.values().find(|l| l.name == "late").unwrap();
        assert_eq!(late_lane.lost(), 0, "{late_lane:?}");
    }

    #[test]
    fn keep_last_on_a_full_disk_reuses_only_what_is_reserved() {
        // The "disk" ends 8 KiB into the second event chunk: the thread's
        // chunks cannot grow past what is reserved, and its reuses stop
        // there too.
        let room = format::HEADER_SIZE + 2 * u64::from(BIG) + 8 * 1024;
        let sup = supply_of(BIG, Policy::KeepLast, 16, room);
        let mut a = T::new(sup, "a");
        a.record(sup, 3 * BIG_WORDS);
        let mut b = T::new(sup, "b");
        b.record(sup, BIG_WORDS);
        accounts(sup, &[a.made(), b.made()]);
        assert!(read(sup).lost_chunks > 0);
    }
}
