//! The recording session of this process: starting (explicitly with
//! [`init`], or lazily in a child that inherited `MPPROF_DIR`), the process
//! file, and finishing it on exit.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::buffer::{Chunk, ChunkInit, ClaimError, Config, MetaLog, ProcessBuffer};
use crate::flow::FlowId;
use crate::format::{flow_name, ClockKind, Lost, Meta, ProcessInfo};
use crate::{callsite, clock};

/// Recording state, read (relaxed) at the top of every hot-path call:
/// [`OFF`], [`UNKNOWN`] (not yet decided: the first call looks at the
/// environment), or an epoch `>= 4` naming the current recorder. Threads
/// compare it with the epoch of their current chunk, so a new recorder (a
/// new session, or a forked child's own file) is picked up without touching
/// other threads' state. The epoch's low bit says whether timestamps come
/// from the time-stamp counter ([`epoch_uses_tsc`]), so the hot path needs
/// no separate load for the clock choice.
pub(crate) static STATE: AtomicU32 = AtomicU32::new(UNKNOWN);
/// Not recording.
pub(crate) const OFF: u32 = 0;
/// Not yet decided.
pub(crate) const UNKNOWN: u32 = 2;

/// Whether an epoch's timestamps come from the time-stamp counter.
#[inline(always)]
pub(crate) const fn epoch_uses_tsc(epoch: u32) -> bool {
    epoch & 1 != 0
}

/// The current recorder (null when none). Recorders are never freed: a
/// thread may still hold a pointer into a finished recorder's mapping.
static CURRENT: AtomicPtr<Recorder> = AtomicPtr::new(std::ptr::null_mut());

/// Serialises starting and finishing.
static LIFECYCLE: Mutex<()> = Mutex::new(());

/// Epoch of the next recorder (even; the low bit is added for the TSC).
static NEXT_EPOCH: AtomicU32 = AtomicU32::new(4);

/// Sequence numbers of this process's flow ids (process-wide, so a second
/// session in the same process never repeats an id).
static FLOW_SEQ: AtomicU64 = AtomicU64::new(1);

/// Random process uid, also the `process` half of this process's flow ids.
static PROCESS_UID: AtomicU64 = AtomicU64::new(0);

/// This process's unique id (64 random bits, drawn on first use).
pub fn process_uid() -> u64 {
    // Relaxed: any thread that draws it stores a valid random value; the
    // compare_exchange keeps the first one.
    let v = PROCESS_UID.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let mut bytes = [0u8; 8];
    let mut fresh = getrandom::fill(&mut bytes)
        .map(|_| u64::from_le_bytes(bytes))
        .unwrap_or(0);
    if fresh == 0 {
        fresh = fallback_random();
    }
    match PROCESS_UID.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(existing) => existing,
    }
}

fn fallback_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(clock::realtime_ns());
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// One process file and what writes to it.
pub(crate) struct Recorder {
    pub(crate) buf: ProcessBuffer,
    pub(crate) epoch: u32,
    meta: Mutex<MetaLog>,
    next_lane: AtomicU32,
    pub(crate) dir: PathBuf,
    pub(crate) clock_hz: f64,
    finished: AtomicBool,
    /// Partly used chunks left by finished threads: new threads continue
    /// them before claiming fresh ones, so thread churn does not eat the
    /// budget.
    handoffs: HintedList<HandedOff>,
    /// Flight recorder (keep-last): event chunks no thread writes any more
    /// (left by exited threads, or continued chunks their last writer moved
    /// on from), ordered by when they were left, newest first: the last one
    /// holds the oldest events and is reused first.
    pool: HintedList<Pooled>,
    /// Flight recorder (keep-last): event chunks that live threads claimed
    /// (or reused) and have since left, in the order they were left, oldest
    /// first. A thread needing a chunk overwrites its own oldest one; a
    /// thread with none of its own, when the pool is empty too, takes
    /// another lane's (see [`Recorder::take_left_of_others`]). Never a
    /// thread's current chunk: a thread adds its chunk only once it has
    /// stopped writing it, and taking one removes it under the lock.
    left: HintedList<Left>,
    /// Threads that lost events while they had no chunk (see
    /// [`Chunkless`]): [`Recorder::finish`] writes the losses of those
    /// still running. A leaf lock.
    chunkless: Mutex<Vec<Arc<Chunkless>>>,
    /// Event chunk slots reserved and page-mapped ahead by the preparer.
    ready: Mutex<Vec<u32>>,
    ready_cv: parking_lot::Condvar,
    preparer_started: AtomicBool,
    start_mono: u64,
    last_anchor_mono: AtomicU64,
}

impl Recorder {
    /// Appends a metadata entry.
    pub(crate) fn write_meta(&self, m: &Meta) {
        self.meta.lock().append(&self.buf, m);
    }

    /// A new lane number for a thread starting to record.
    pub(crate) fn new_lane(&self) -> u32 {
        // Relaxed: only uniqueness matters.
        self.next_lane.fetch_add(1, Ordering::Relaxed)
    }

    /// A new flow id from this process.
    pub(crate) fn next_flow(&self) -> FlowId {
        // Relaxed: only uniqueness matters.
        FlowId::from_parts(process_uid(), FLOW_SEQ.fetch_add(1, Ordering::Relaxed))
    }

    /// Claims an event chunk for a thread (and maybe writes an anchor).
    pub(crate) fn claim_events(&'static self, init: &ChunkInit) -> Result<Chunk, ClaimError> {
        let ready = self.ready.lock().pop();
        let c = match ready {
            // SAFETY: the slot was reserved by the preparer for anyone, and
            // popping it from the list made it ours alone.
            Some(slot) => unsafe { self.buf.publish(slot, init) },
            None => self.buf.claim(init)?,
        };
        self.wake_preparer();
        self.maybe_anchor();
        Ok(c)
    }

    /// Chunks kept ready (reserved and page-mapped) by the preparer thread.
    const READY_CHUNKS: usize = 4;

    /// Starts the preparer on first use, and asks it to refill the ready
    /// list. The preparer reserves chunks and maps their pages ahead of time
    /// on its own thread, so a recording thread that takes one writes into
    /// pages that are already there: no page fault, no zero-fill, no disk
    /// reservation on the application's threads (`MPPROF_PREPARE=0` turns it
    /// off; chunks are then reserved by the thread that needs one).
    fn wake_preparer(&'static self) {
        static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *DISABLED.get_or_init(|| std::env::var("MPPROF_PREPARE").is_ok_and(|v| v == "0")) {
            return;
        }
        // Relaxed: guarded by the compare_exchange; at most one thread spawns.
        if !self.preparer_started.swap(true, Ordering::Relaxed) {
            let spawned = std::thread::Builder::new()
                .name("mpprof-prepare".into())
                .spawn(move || self.prepare_loop());
            if spawned.is_err() {
                return; // no thread: threads reserve their own chunks
            }
        }
        self.ready_cv.notify_one();
    }

    fn prepare_loop(&self) {
        idle_priority();
        loop {
            {
                let mut ready = self.ready.lock();
                while ready.len() >= Self::READY_CHUNKS {
                    if self.finished.load(Ordering::Relaxed) {
                        return;
                    }
                    self.ready_cv
                        .wait_for(&mut ready, std::time::Duration::from_millis(200));
                }
            }
            if self.finished.load(Ordering::Relaxed) {
                return;
            }
            match self.buf.reserve_slot(crate::format::CHUNK_EVENTS, true) {
                Ok(slot) => self.ready.lock().push(slot),
                // The budget is used up: nothing more to prepare.
                Err(ClaimError::Budget) => return,
                // The disk is full: the recording threads find out and count
                // their losses; try again later.
                Err(ClaimError::Io(_)) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }

    /// Appends a metadata entry; false if it could not be stored.
    pub(crate) fn write_meta_stored(&self, m: &Meta) -> bool {
        self.meta.lock().append(&self.buf, m)
    }

    /// Offers the rest of a finished thread's chunk to the next thread.
    pub(crate) fn hand_off(&self, h: HandedOff) {
        self.handoffs.update(|list| list.push(h));
    }

    /// Takes a partly used chunk left by a finished thread, if any. Without
    /// any, costs one relaxed load (a thread losing events calls this for
    /// every event).
    pub(crate) fn take_handoff(&self) -> Option<HandedOff> {
        self.handoffs.pop()
    }

    /// Flight recorder: puts a chunk that no thread writes any more into the
    /// pool of reusable chunks.
    pub(crate) fn pool(&self, p: Pooled) {
        self.pool.update(|pool| {
            // Newest first; among equal times, the one pooled first is taken first.
            let at = pool.partition_point(|q| q.left_at > p.left_at);
            pool.insert(at, p);
        });
    }

    /// Flight recorder: takes the pooled chunk that was left longest ago
    /// (its newest event is the oldest in the pool). Without any, costs one
    /// relaxed load.
    pub(crate) fn take_pooled(&self) -> Option<Pooled> {
        self.pool.pop()
    }

    /// Flight recorder: when the pooled chunk left longest ago was left, if
    /// the pool holds any.
    pub(crate) fn oldest_pooled_at(&self) -> Option<u64> {
        self.pool.take(|pool| pool.last().map(|p| p.left_at))
    }

    /// Flight recorder: a live thread has left its own chunk `slot`
    /// (holding `events` events of `lane`); it joins the recorder-wide list
    /// of left chunks, stamped with the time under the list's lock so the
    /// list stays in the order chunks were left.
    pub(crate) fn leave(&self, lane: u32, slot: u32, events: u64) {
        self.left.update(|list| {
            list.push(Left {
                lane,
                slot,
                events,
                left_at: clock::monotonic_ns(),
            })
        });
    }

    /// Flight recorder: takes the oldest chunk that `lane` has left, if any.
    pub(crate) fn take_left(&self, lane: u32) -> Option<Left> {
        self.left.take(|list| {
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
    pub(crate) fn take_left_of_others(&self, lane: u32, before: Option<u64>) -> Option<Left> {
        self.left.take(|list| {
            let mut counts = std::collections::HashMap::<u32, usize>::new();
            for l in list.iter() {
                *counts.entry(l.lane).or_default() += 1;
            }
            let other = |l: &Left| l.lane != lane;
            let i = match list.iter().position(|l| other(l) && counts[&l.lane] > 1) {
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
    pub(crate) fn drain_left(&self, lane: u32) -> Vec<Left> {
        self.left
            .take(|list| {
                let (mine, rest) = std::mem::take(list)
                    .into_iter()
                    .partition(|l| l.lane == lane);
                *list = rest;
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
            self.write_meta(&Meta::Anchor(clock::anchor()));
        }
    }

    /// A thread without a chunk lost its first event: from now on its
    /// losses are counted in the returned record, for a [`Meta::Lost`]
    /// entry.
    pub(crate) fn register_chunkless(&self, lane: u32, tid: u32, name: &str) -> Arc<Chunkless> {
        let c = Arc::new(Chunkless {
            lane,
            tid,
            name: truncate(name.to_owned(), 256),
            events: AtomicU64::new(0),
        });
        self.chunkless.lock().push(c.clone());
        c
    }

    /// The thread of `c` got a chunk, or exits: the finish no longer
    /// looks at it.
    pub(crate) fn forget_chunkless(&self, c: &Arc<Chunkless>) {
        self.chunkless.lock().retain(|x| !Arc::ptr_eq(x, c));
    }

    /// Writes the losses of `c` that nothing counts yet as a [`Meta::Lost`]
    /// entry (taking them from `c`, so that no other entry or header
    /// counts them again). If the entry cannot be stored, they go back to
    /// `c` for a later entry or chunk.
    pub(crate) fn note_lost(&self, c: &Chunkless) {
        // Relaxed: the count is the only thing exchanged; every loss is
        // taken by exactly one swap.
        let events = c.events.swap(0, Ordering::Relaxed);
        if events == 0 {
            return;
        }
        let entry = Meta::Lost(Lost {
            lane: c.lane,
            tid: c.tid,
            name: c.name.clone(),
            ts: clock::now_with(epoch_uses_tsc(self.epoch)),
            events,
        });
        if !self.write_meta_stored(&entry) {
            c.events.fetch_add(events, Ordering::Relaxed);
        }
    }

    fn finish(&self) {
        // Relaxed: guarded by LIFECYCLE.
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        // Threads that still run without a chunk: their losses so far.
        let chunkless = self.chunkless.lock().clone();
        for c in &chunkless {
            self.note_lost(c);
        }
        self.write_meta(&Meta::Anchor(clock::anchor()));
        self.buf.set_finished();
    }
}

/// The losses of a thread that has no chunk, and so no header to hold
/// them, that no [`Meta::Lost`] entry and no header counts yet. The thread
/// adds each loss; whoever counts them takes them with one swap to 0, so
/// each loss is counted exactly once: the thread's exit, or the
/// recorder's finish while it still runs (a `Meta::Lost` entry each), or
/// the thread itself when it gets a chunk after all (the header's
/// `lost_before`).
pub(crate) struct Chunkless {
    pub(crate) lane: u32,
    pub(crate) tid: u32,
    /// Thread name, cut at 256 bytes so the entry always fits.
    pub(crate) name: String,
    /// Losses not counted yet.
    pub(crate) events: AtomicU64,
}

/// A list under a lock, with a flag saying whether it may hold anything, so
/// that finding it empty (the common case, on a slow path that may run for
/// every lost event) costs one relaxed load and no lock.
struct HintedList<T> {
    list: Mutex<Vec<T>>,
    hint: AtomicBool,
}

impl<T> HintedList<T> {
    fn new() -> HintedList<T> {
        HintedList {
            list: Mutex::new(Vec::new()),
            hint: AtomicBool::new(false),
        }
    }

    /// Changes the list under its lock.
    fn update(&self, f: impl FnOnce(&mut Vec<T>)) {
        let mut list = self.list.lock();
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
pub(crate) struct HandedOff {
    /// The chunk.
    pub(crate) chunk: Chunk,
    /// Its next free record word.
    pub(crate) next: u32,
    /// Flight recorder only (empty under keep-first): the events of each
    /// segment written so far, `(lane, events)`, the header's lane first.
    pub(crate) segments: Vec<(u32, u64)>,
}

/// A flight-recorder chunk that no thread writes any more.
pub(crate) struct Pooled {
    /// Its slot.
    pub(crate) slot: u32,
    /// CLOCK_MONOTONIC ns when its last writer left it.
    pub(crate) left_at: u64,
    /// The events of each of its segments, `(lane, events)`, the header's
    /// lane first: what reusing it overwrites.
    pub(crate) segments: Vec<(u32, u64)>,
}

/// A flight-recorder chunk that a live thread claimed (or reused) and has
/// left: no thread writes it.
pub(crate) struct Left {
    /// The lane that left it (its header's lane).
    pub(crate) lane: u32,
    /// Its slot.
    pub(crate) slot: u32,
    /// Events of `lane` in it.
    pub(crate) events: u64,
    /// CLOCK_MONOTONIC ns when the thread left it.
    pub(crate) left_at: u64,
}

/// The recorder for epoch `s`, if it is still the current one.
#[inline]
pub(crate) fn recorder_for(s: u32) -> Option<&'static Recorder> {
    // Acquire: pairs with the release store in `install`, so the recorder's
    // fields are initialised when seen through the pointer.
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: recorders are leaked, so a non-null pointer stays valid.
    let r = unsafe { p.as_ref() }?;
    (r.epoch == s).then_some(r)
}

/// Writes a metadata entry to the current file, if any.
pub(crate) fn write_meta(m: &Meta) {
    // Acquire: as in `recorder_for`.
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: recorders are leaked, so a non-null pointer stays valid.
    if let Some(r) = unsafe { p.as_ref() } {
        if !r.finished.load(Ordering::Relaxed) {
            r.write_meta(m);
        }
    }
}

/// Errors of [`init`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session directory could not be made or used.
    #[error("mpprof: cannot use session directory {path}: {error}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why. (In the message, not the error's `source()`, so that a
        /// report of the whole chain does not say it twice.)
        error: io::Error,
    },
    /// The process file could not be created.
    #[error("mpprof: cannot create buffer file in {path}: {error}")]
    File {
        /// The directory.
        path: PathBuf,
        /// Why. (In the message, not the error's `source()`, so that a
        /// report of the whole chain does not say it twice.)
        error: io::Error,
    },
}

/// Guard of a recording session, returned by [`init`]. Dropping it
/// finishes this process's file (final clock anchor, clean-exit flag) and
/// stops recording in this process.
#[must_use = "recording stops when the Session is dropped"]
#[derive(Debug)]
pub struct Session {
    dir: Option<PathBuf>,
}

impl Session {
    /// The session directory, or `None` when recording is disabled
    /// (`MPPROF=off`).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Finishes the file now (same as dropping the guard).
    pub fn finish(self) {}
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.dir.is_some() {
            finish_current();
        }
    }
}

/// Starts recording in this process.
///
/// The session directory is `MPPROF_DIR` when set (a process started by
/// [`crate::spawn`] joins its parent's session this way), else a fresh
/// directory `./mpprof-out/<time>-<pid>/`. Prints where it records to
/// stderr, once. With `MPPROF=off` it returns an inert guard and nothing is
/// recorded. If this process already records (a child whose instrumented
/// code ran before `init`), the guard refers to that session.
pub fn init() -> Result<Session, Error> {
    if disabled_by_env() {
        STATE.store(OFF, Ordering::Relaxed);
        return Ok(Session { dir: None });
    }
    let _l = LIFECYCLE.lock();
    // Acquire: as in `recorder_for`.
    if let Some(r) = unsafe_current() {
        if !r.finished.load(Ordering::Relaxed) {
            return Ok(Session {
                dir: Some(r.dir.clone()),
            });
        }
    }
    let (dir, fresh) = match std::env::var_os("MPPROF_DIR") {
        Some(d) if !d.is_empty() => (PathBuf::from(d), false),
        _ => (
            fresh_session_dir().map_err(|(path, error)| Error::Dir { path, error })?,
            true,
        ),
    };
    if !fresh {
        check_dir(&dir).map_err(|error| Error::Dir {
            path: dir.clone(),
            error,
        })?;
    }
    start(&dir, true, None).map_err(|error| Error::File {
        path: dir.clone(),
        error,
    })?;
    eprintln!("mpprof: recording to {}", dir.display());
    Ok(Session { dir: Some(dir) })
}

fn unsafe_current() -> Option<&'static Recorder> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: recorders are leaked, so a non-null pointer stays valid.
    unsafe { p.as_ref() }
}

/// The directory the current session records into.
pub fn session_dir() -> Option<PathBuf> {
    unsafe_current()
        .filter(|r| !r.finished.load(Ordering::Relaxed))
        .map(|r| r.dir.clone())
}

fn disabled_by_env() -> bool {
    matches!(
        std::env::var("MPPROF").as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

/// Makes `./mpprof-out/<utc time>-<pid>` (mode 0700).
fn fresh_session_dir() -> Result<PathBuf, (PathBuf, io::Error)> {
    use std::os::unix::fs::DirBuilderExt;
    let root = PathBuf::from("mpprof-out");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&root)
        .map_err(|e| (root.clone(), e))?;
    let secs = clock::realtime_ns() / 1_000_000_000;
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    let name = format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{}",
        std::process::id()
    );
    // A second session of this process in the same second gets a suffix.
    let mut dir = root.join(&name);
    let mut n = 1;
    loop {
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => {
                n += 1;
                dir = root.join(format!("{name}.{n}"));
            }
            Err(e) => return Err((dir, e)),
        }
    }
    Ok(dir)
}

/// UTC calendar fields of a Unix time (Howard Hinnant's days-from-civil,
/// inverted).
fn civil_from_unix(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y as u64,
        m as u64,
        d as u64,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
    )
}

/// A session directory given by `MPPROF_DIR` must be a real directory (not
/// a symlink) owned by us and not writable by others.
fn check_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(dir)?;
    if md.file_type().is_symlink() {
        return Err(io::Error::other("it is a symbolic link"));
    }
    if !md.is_dir() {
        return Err(io::Error::other("it is not a directory"));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if md.uid() != euid {
        return Err(io::Error::other(format!(
            "it belongs to uid {}, not to us (uid {euid})",
            md.uid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "it is writable by others (mode {:o})",
            md.mode() & 0o777
        )));
    }
    Ok(())
}

/// The first hot-path call in a process that has not decided yet: record
/// into `MPPROF_DIR` if it is set (a child of [`crate::spawn`]), else turn
/// recording off for good.
#[cold]
pub(crate) fn lazy_start() {
    let _l = LIFECYCLE.lock();
    // Relaxed: guarded by LIFECYCLE.
    if STATE.load(Ordering::Relaxed) != UNKNOWN {
        return;
    }
    // A child forked (without exec) from a recording process records into
    // the parent's session, in a file of its own.
    let forked = FORK_INFO.lock().take();
    if let Some((dir, flow)) = forked {
        if let Err(e) = start(&dir, false, Some((flow, flow_name::FORK))) {
            crate::warn(format_args!(
                "cannot record the forked child (pid {}) into {} ({e}); it runs without recording",
                std::process::id(),
                dir.display()
            ));
            STATE.store(OFF, Ordering::Relaxed);
        }
        return;
    }
    let dir = match std::env::var_os("MPPROF_DIR") {
        Some(d) if !d.is_empty() && !disabled_by_env() => PathBuf::from(d),
        _ => {
            STATE.store(OFF, Ordering::Relaxed);
            return;
        }
    };
    let res = check_dir(&dir).and_then(|()| start(&dir, false, None));
    if let Err(e) = res {
        crate::warn(format_args!(
            "cannot record into {} ({e}); this process (pid {}) runs without recording and will be missing from the trace",
            dir.display(),
            std::process::id()
        ));
        STATE.store(OFF, Ordering::Relaxed);
    }
}

/// Creates this process's file in `dir` and makes it current. `origin` is
/// the flow that started this process when it is not the one passed by
/// `spawn` in the environment (a fork).
fn start(dir: &Path, root: bool, origin: Option<(FlowId, &'static str)>) -> io::Result<()> {
    let clock = clock::select();
    let clock_hz = clock::estimate_hz(if root { 5 } else { 2 });
    let uid = process_uid();
    let pid = std::process::id();
    let config = Config::from_env();
    // One file per recorder: a process that starts a second session in the
    // same directory (or a forked child, which has a new uid) gets a new name.
    let path = match NEXT_EPOCH.load(Ordering::Relaxed) {
        4 => dir.join(format!("{pid}-{uid:016x}.mpb")),
        e => dir.join(format!("{pid}-{uid:016x}-{}.mpb", e / 2 - 1)),
    };
    let buf = ProcessBuffer::create(&path, config, uid, pid)?;
    let mut info = process_info(uid, clock, clock_hz, config);
    let (parent_flow, flow_name) = match origin {
        Some((f, name)) => (Some(f), name),
        None => (info.parent_flow, flow_name::SPAWN),
    };
    info.parent_flow = parent_flow;
    let epoch = NEXT_EPOCH.fetch_add(2, Ordering::Relaxed) | u32::from(clock == ClockKind::Tsc);
    let rec: &'static Recorder = Box::leak(Box::new(Recorder {
        buf,
        epoch,
        meta: Mutex::new(MetaLog::new()),
        next_lane: AtomicU32::new(1),
        dir: dir.to_owned(),
        clock_hz,
        finished: AtomicBool::new(false),
        handoffs: HintedList::new(),
        pool: HintedList::new(),
        left: HintedList::new(),
        chunkless: Mutex::new(Vec::new()),
        ready: Mutex::new(Vec::new()),
        ready_cv: parking_lot::Condvar::new(),
        preparer_started: AtomicBool::new(false),
        start_mono: clock::monotonic_ns(),
        last_anchor_mono: AtomicU64::new(clock::monotonic_ns()),
    }));
    rec.write_meta(&Meta::Process(info));
    rec.write_meta(&Meta::Anchor(clock::anchor()));
    callsite::replay_then(
        |m| rec.write_meta(m),
        || {
            // Release: publishes the initialised recorder to `recorder_for`.
            CURRENT.store(rec as *const Recorder as *mut Recorder, Ordering::Release);
            // Relaxed: threads that see the new epoch find the recorder
            // through CURRENT (acquire) before touching it.
            STATE.store(epoch, Ordering::Relaxed);
        },
    );
    register_exit_hook();
    register_fork_hook();
    if let Some(f) = parent_flow {
        // The arrow from the parent's spawn point ends here, on the thread
        // that starts recording, just before its first event.
        crate::flow::record_in(f, flow_name);
    }
    Ok(())
}

fn process_info(uid: u64, clock: ClockKind, clock_hz: f64, config: Config) -> ProcessInfo {
    let parent_flow = parent_flow_from_env();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut argv = Vec::new();
    // Keep the process entry well inside one metadata entry: each argument
    // costs its bytes plus up to 5 bytes of length prefix.
    let mut budget = 2048usize;
    for a in std::env::args_os() {
        let a = a.to_string_lossy().into_owned();
        if a.len() + 5 > budget || argv.len() >= 256 {
            argv.push("…".to_owned());
            break;
        }
        budget -= a.len() + 5;
        argv.push(a);
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let host_id = std::env::var("MPPROF_HOST_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or(boot_id);
    ProcessInfo {
        pid: std::process::id(),
        // SAFETY: getppid has no preconditions.
        ppid: unsafe { libc::getppid() } as u32,
        uid,
        parent_flow,
        exe: truncate(exe, 512),
        argv,
        hostname: truncate(hostname(), 128),
        host_id: truncate(host_id, 128),
        time_ns: time_namespace(),
        clock,
        clock_hz,
        policy: config.policy,
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The flow that started this process: `MPPROF_PARENT_FLOW`, trusted only
/// when `MPPROF_PARENT_PID` is our parent (a grandchild started without
/// `mpprof::spawn` inherits the variables but was not started by that flow).
fn parent_flow_from_env() -> Option<FlowId> {
    let flow: FlowId = std::env::var("MPPROF_PARENT_FLOW").ok()?.parse().ok()?;
    let ppid: u32 = std::env::var("MPPROF_PARENT_PID").ok()?.parse().ok()?;
    // SAFETY: getppid has no preconditions.
    (ppid == unsafe { libc::getppid() } as u32).then_some(flow)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Inode of this process's time namespace (`time:[N]`), 0 if unknown.
fn time_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/time")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_prefix("time:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// Finishes the current file: final anchor, clean-exit flag, recording off.
pub(crate) fn finish_current() {
    let _l = LIFECYCLE.lock();
    if let Some(r) = unsafe_current() {
        r.finish();
        // Relaxed: threads that still see the old epoch write into the
        // finished (still mapped) file, which the reader tolerates.
        STATE.store(OFF, Ordering::Relaxed);
    }
}

fn register_exit_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        // Never block at exit: if another thread holds the lock (it is
        // starting or finishing), leave the file unfinished rather than hang.
        if let Some(_l) = LIFECYCLE.try_lock() {
            if let Some(r) = unsafe_current() {
                r.finish();
            }
        }
    }
    ONCE.call_once(|| {
        // SAFETY: at_exit is a plain extern "C" fn that never unwinds.
        unsafe { libc::atexit(at_exit) };
    });
}

/// What a forked child needs to join the session: the directory and the
/// flow from the fork point. Set by the prepare handler in the parent.
static FORK_INFO: Mutex<Option<(PathBuf, FlowId)>> = Mutex::new(None);

/// `fork()` without `exec`: the child must not write into the parent's
/// mapping (it is MAP_SHARED, so it would corrupt the parent's chunks), so
/// it forgets the parent's recorder and starts a file of its own at its
/// next event, with a flow from the fork point. The handlers take the locks
/// that the child's start needs, so no other thread can hold them across
/// the fork.
fn register_fork_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn prepare() {
        // Lock first: two threads forking at once must not swap flows.
        std::mem::forget(LIFECYCLE.lock());
        let info = unsafe_current()
            .filter(|r| {
                !r.finished.load(Ordering::Relaxed) && STATE.load(Ordering::Relaxed) == r.epoch
            })
            .map(|r| {
                let flow = r.next_flow();
                crate::flow::record_out(flow, flow_name::FORK);
                (r.dir.clone(), flow)
            });
        *FORK_INFO.lock() = info;
        callsite::lock_for_fork();
        #[cfg(feature = "tracing")]
        crate::tracing_layer::lock_for_fork();
    }
    extern "C" fn parent() {
        #[cfg(feature = "tracing")]
        crate::tracing_layer::unlock_after_fork();
        callsite::unlock_after_fork();
        // SAFETY: locked by `prepare` on this thread, which still owns it.
        unsafe { LIFECYCLE.force_unlock() };
    }
    extern "C" fn child() {
        #[cfg(feature = "tracing")]
        crate::tracing_layer::unlock_after_fork();
        callsite::unlock_after_fork();
        // SAFETY: locked by `prepare` on this thread; in the child this
        // thread is the only one.
        unsafe { LIFECYCLE.force_unlock() };
        // Only atomic stores and this thread's own cells from here: the
        // child's recording starts lazily, in ordinary context.
        PROCESS_UID.store(0, Ordering::Relaxed);
        CURRENT.store(std::ptr::null_mut(), Ordering::Release);
        STATE.store(UNKNOWN, Ordering::Relaxed);
        crate::thread::forget_chunk();
    }
    ONCE.call_once(|| {
        // SAFETY: the handlers are extern "C" fns that never unwind.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

/// Data for [`crate::spawn`]: the environment a child needs to join this
/// session, and the recorder to write the spawn flow to.
pub(crate) fn ensure_recording() -> Option<&'static Recorder> {
    let mut s = STATE.load(Ordering::Relaxed);
    if s == UNKNOWN {
        lazy_start();
        s = STATE.load(Ordering::Relaxed);
    }
    if s == OFF {
        return None;
    }
    recorder_for(s)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
