//! The recording session of this process: the global state the hot path
//! reads, starting (explicitly with [`init`], or lazily in a child that
//! inherited `MPPROF_DIR`), the current recorder, and finishing it.
//!
//! - `dir.rs`: the session directory;
//! - `process.rs`: the process's uid and facts;
//! - `hooks.rs`: `atexit` and `pthread_atfork`;
//! - `sampler.rs`: the resource sampler thread.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::buffer::{Config, ProcessBuffer};
use crate::chunks::Chunks;
use crate::format::{flow_name, kind, ClockKind, FlowId, MetaRef};
use crate::{callsite, clock, record};

mod dir;
mod hooks;
mod process;
mod profiler;
mod sampler;
mod syscalls;

#[cfg(feature = "tracing")]
pub(crate) use hooks::{hold_across_fork, ForkLock};

pub use process::process_uid;

/// Recording state, read (relaxed) at the top of every hot-path call:
/// [`OFF`], [`UNKNOWN`] (not yet decided: the first call looks at the
/// environment), or an epoch `>= 4` naming the current recorder. Threads
/// compare it with the epoch of their current chunk, so a new recorder (a
/// new session, or a forked child's own file) is picked up without touching
/// other threads' state. The epoch's low bit says whether timestamps come
/// from the time-stamp counter (`writer::epoch_uses_tsc`), so the hot path
/// needs no separate load for the clock choice.
pub(crate) static STATE: AtomicU32 = AtomicU32::new(UNKNOWN);
/// Not recording.
pub(crate) const OFF: u32 = 0;
/// Not yet decided.
pub(crate) const UNKNOWN: u32 = 2;

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

/// One process file and what writes to it.
pub(crate) struct Recorder {
    /// The file's chunks and metadata log.
    pub(crate) chunks: Chunks,
    /// Its epoch (see [`STATE`]).
    pub(crate) epoch: u32,
    /// The session directory.
    pub(crate) dir: PathBuf,
    /// The clock frequency the process measured (or inherited).
    pub(crate) clock_hz: f64,
    /// Live [`Session`] guards of this recorder: the last one dropped
    /// finishes it. 0 for a child that started recording on its own.
    guards: AtomicU32,
    /// The resource sampler (CPU, memory, I/O of the process, its threads
    /// and the host).
    pub(crate) sampler: sampler::Sampler,
}

impl Recorder {
    /// A new flow id from this process.
    pub(crate) fn next_flow(&self) -> FlowId {
        // Relaxed: only uniqueness matters.
        FlowId::from_parts(process_uid(), FLOW_SEQ.fetch_add(1, Ordering::Relaxed))
    }
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

/// The current recorder, unless it is finished. A sequentially
/// consistent load: callsite registration relies on its order with the
/// store that makes a recorder current (see `Callsite::publish`).
pub(crate) fn live_recorder() -> Option<&'static Recorder> {
    // SeqCst: see above (it is also an acquire, as in `recorder_for`).
    let p = CURRENT.load(Ordering::SeqCst);
    // SAFETY: recorders are leaked, so a non-null pointer stays valid.
    unsafe { p.as_ref() }.filter(|r| !r.chunks.is_finished())
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

/// Guard of a recording session, returned by [`init`]. Dropping the last
/// guard of a session finishes this process's file (final clock anchor,
/// clean-exit flag), stops recording in this process and releases the
/// file's resources (its mapping and descriptor) once no thread uses it.
/// Two live guards (two calls of [`init`]) share one session: recording
/// goes on until both are dropped.
#[must_use = "recording stops when the Session is dropped"]
#[derive(Debug)]
pub struct Session {
    dir: Option<PathBuf>,
    /// The recorder this guard keeps recording (`None` when disabled).
    rec: Option<&'static Recorder>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session directory, or `None` when recording is disabled
    /// (`MPPROF=off`).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Gives up this guard now (same as dropping it): the session finishes
    /// when its last guard goes.
    pub fn finish(self) {}

    fn inert() -> Session {
        Session {
            dir: None,
            rec: None,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(r) = self.rec {
            // Relaxed: the count is the only thing exchanged (the finish
            // below takes the session's lock).
            if r.guards.fetch_sub(1, Ordering::Relaxed) == 1 {
                finish(r);
            }
        }
    }
}

/// Starts recording in this process.
///
/// The session directory is `MPPROF_DIR` when set (a process started by
/// [`crate::spawn`] joins its parent's session this way; made if missing,
/// mode 0700, with its parents, and refused if it is a symlink, not ours or
/// writable by others), else a fresh
/// directory `./mpprof-out/<time>-<pid>/`. Prints where it records to
/// stderr, once. With `MPPROF=off` it returns an inert guard and nothing is
/// recorded. If this process already records (a child whose instrumented
/// code ran before `init`), the guard refers to that session.
pub fn init() -> Result<Session, Error> {
    if disabled_by_env() {
        STATE.store(OFF, Ordering::Relaxed);
        return Ok(Session::inert());
    }
    // Starting takes the session's lock: inside the recorder. Called from a
    // signal handler that interrupted the recorder, it does nothing.
    let (session, origin) = record::inside(init_inside).unwrap_or(Ok((Session::inert(), None)))?;
    if let Some((f, name)) = origin {
        record::flow(kind::FLOW_IN, f, name);
    }
    Ok(session)
}

fn init_inside() -> Result<(Session, Option<Origin>), Error> {
    let _l = LIFECYCLE.lock();
    // Acquire: as in `recorder_for`.
    if let Some(r) = unsafe_current() {
        if !r.chunks.is_finished() {
            // Relaxed: under the session's lock.
            r.guards.fetch_add(1, Ordering::Relaxed);
            let session = Session {
                dir: Some(r.dir.clone()),
                rec: Some(r),
            };
            return Ok((session, None));
        }
        // A finished session's file: this thread stops using it, and it is
        // released if no one else does (a safe point).
        record::detach_from(&r.chunks);
    }
    sweep();
    let (dir, fresh) = match std::env::var_os("MPPROF_DIR") {
        Some(d) if !d.is_empty() => (PathBuf::from(d), false),
        _ => (
            dir::fresh_session_dir().map_err(|(path, error)| Error::Dir { path, error })?,
            true,
        ),
    };
    if !fresh {
        dir::ensure_dir(&dir).map_err(|error| Error::Dir {
            path: dir.clone(),
            error,
        })?;
    }
    let origin = start(&dir, true, None).map_err(|error| Error::File {
        path: dir.clone(),
        error,
    })?;
    let rec = unsafe_current();
    let dir = rec.map_or(dir, |r| r.dir.clone());
    eprintln!("mpprof: recording to {}", dir.display());
    let session = Session {
        dir: Some(dir),
        rec,
    };
    Ok((session, origin))
}

pub(super) fn unsafe_current() -> Option<&'static Recorder> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: recorders are leaked, so a non-null pointer stays valid.
    unsafe { p.as_ref() }
}

/// The directory the current session records into.
pub fn session_dir() -> Option<PathBuf> {
    unsafe_current()
        .filter(|r| !r.chunks.is_finished())
        .map(|r| r.dir.clone())
}

fn disabled_by_env() -> bool {
    crate::env::disabled()
}

/// The flow that started this process (spawn or fork) and its name: its
/// end is recorded on the thread that starts recording, just before its
/// first event, once that thread is out of the start (see [`start`]).
pub(crate) type Origin = (FlowId, &'static str);

/// The first hot-path call in a process that has not decided yet: record
/// into `MPPROF_DIR` if it is set (a child of [`crate::spawn`]), else turn
/// recording off for good. Returns the flow that started the process, for
/// the caller to record. Runs inside the recorder (`record::inside`).
#[cold]
pub(crate) fn lazy_start() -> Option<Origin> {
    let _l = LIFECYCLE.lock();
    // Relaxed: guarded by LIFECYCLE.
    if STATE.load(Ordering::Relaxed) != UNKNOWN {
        return None;
    }
    // A child forked (without exec) from a recording process records into
    // the parent's session, in a file of its own; it lets go of its copy
    // of the parent's.
    let parent = hooks::FORKED_FROM.swap(std::ptr::null_mut(), Ordering::Relaxed);
    // SAFETY: recorders are leaked, so a non-null pointer stays valid.
    if let Some(p) = unsafe { parent.as_ref() } {
        p.chunks.release_in_forked_child();
        p.sampler.forget_in_forked_child();
    }
    let forked = hooks::FORK_INFO.lock().take();
    if let Some((dir, flow)) = forked {
        return match start(&dir, false, Some((flow, flow_name::FORK))) {
            Ok(origin) => origin,
            Err(e) => {
                crate::warn::warn(format_args!(
                    "cannot record this forked child into {} ({e}); it runs without recording",
                    dir.display()
                ));
                STATE.store(OFF, Ordering::Relaxed);
                None
            }
        };
    }
    let dir = match std::env::var_os("MPPROF_DIR") {
        Some(d) if !d.is_empty() && !disabled_by_env() => PathBuf::from(d),
        _ => {
            STATE.store(OFF, Ordering::Relaxed);
            return None;
        }
    };
    match dir::check_dir(&dir).and_then(|()| start(&dir, false, None)) {
        Ok(origin) => origin,
        Err(e) => {
            crate::warn::warn(format_args!(
                "cannot record into {} ({e}); this process runs without recording and will be missing from the trace",
                dir.display()
            ));
            STATE.store(OFF, Ordering::Relaxed);
            None
        }
    }
}

/// Creates this process's file in `dir` and makes it current. `origin` is
/// the flow that started this process when it is not the one passed by
/// `spawn` in the environment (a fork).
fn start(dir: &Path, root: bool, origin: Option<Origin>) -> io::Result<Option<Origin>> {
    crate::env::check_unknown();
    // Once, at the start: every child is given this absolute path, so a
    // child started in another directory records into the same session.
    let dir = &std::path::absolute(dir)?;
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
    let mut info = process::process_info(uid, clock, clock_hz, config);
    let (parent_flow, flow_name) = match origin {
        Some((f, name)) => (Some(f), name),
        None => (info.parent_flow, flow_name::SPAWN),
    };
    info.parent_flow = parent_flow;
    let epoch = NEXT_EPOCH.fetch_add(2, Ordering::Relaxed) | u32::from(clock == ClockKind::Tsc);
    let tsc = clock == ClockKind::Tsc;
    let rec: &'static Recorder = Box::leak(Box::new(Recorder {
        chunks: Chunks::new(buf, tsc, prepare_enabled()),
        epoch,
        dir: dir.to_owned(),
        clock_hz,
        guards: AtomicU32::new(u32::from(root)),
        sampler: sampler::Sampler::new(),
    }));
    rec.chunks.write_meta(&MetaRef::Process(&info));
    rec.chunks.write_meta(&MetaRef::Anchor(clock::anchor()));
    // SeqCst (a release too: it publishes the initialised recorder to
    // `recorder_for`): made current before the callsites are replayed into
    // it, so a callsite registered meanwhile is named here either by the
    // replay or by its own registration (see `Callsite::publish`).
    CURRENT.store(rec as *const Recorder as *mut Recorder, Ordering::SeqCst);
    // Relaxed: threads that see the new epoch find the recorder through
    // CURRENT (acquire) before touching it.
    STATE.store(epoch, Ordering::Relaxed);
    callsite::replay(|m| rec.chunks.write_meta(m));
    rec.chunks.start_preparer();
    rec.sampler.start(&rec.chunks, &rec.dir, &info.host_id);
    hooks::register_exit_hook();
    hooks::register_fork_hook();
    // The arrow from the parent's spawn point ends on the thread that
    // starts recording, just before its first event: the caller records
    // it once it is out of the start.
    Ok(parent_flow.map(|f| (f, flow_name)))
}

/// Whether a preparer thread keeps chunks ready: unless `MPPROF_PREPARE=0`.
fn prepare_enabled() -> bool {
    !matches!(
        crate::env::choice("MPPROF_PREPARE", &["1", "0", "on", "off"], "1"),
        "0" | "off"
    )
}

/// Finishes the file of `r`: final anchor, clean-exit flag; recording off
/// if it is the current one. The calling thread stops using the file, which
/// is released once no thread does (now, or at a later safe point).
fn finish(r: &'static Recorder) {
    // The sampler's final sample, before the file is finished (outside
    // the recorder: it records on its own thread, and this one waits).
    r.sampler.stop();
    record::inside(|| {
        let _l = LIFECYCLE.lock();
        if !r.chunks.is_finished() {
            r.chunks.finish();
            retire(r);
        }
        if unsafe_current().is_some_and(|c| std::ptr::eq(c, r)) {
            // Relaxed: threads that still see the old epoch write into the
            // finished (still mapped) file until they move on.
            STATE.store(OFF, Ordering::Relaxed);
        }
        record::detach_from(&r.chunks);
        sweep();
    });
}

/// Finished recorders whose files are not released yet.
static RETIRED: Mutex<Vec<&'static Recorder>> = Mutex::new(Vec::new());

/// `r` is finished: [`sweep`] releases its file once no one uses it.
pub(crate) fn retire(r: &'static Recorder) {
    RETIRED.lock().push(r);
}

/// Releases the files of finished recorders that no thread uses any more.
/// At safe points only: a session's start and finish, a thread's exit.
pub(crate) fn sweep() {
    // `try_lock`: a thread exiting while another sweeps leaves it to that one.
    if let Some(mut retired) = RETIRED.try_lock() {
        retired.retain(|r| !r.chunks.try_release());
    }
}

/// Data for [`crate::spawn`]: the environment a child needs to join this
/// session, and the recorder to write the spawn flow to.
pub(crate) fn ensure_recording() -> Option<&'static Recorder> {
    let mut s = STATE.load(Ordering::Relaxed);
    if s == UNKNOWN {
        // Starting takes the session's lock: inside the recorder.
        if let Some((f, name)) = record::inside(lazy_start).flatten() {
            record::flow(kind::FLOW_IN, f, name);
        }
        s = STATE.load(Ordering::Relaxed);
    }
    if s == OFF {
        return None;
    }
    recorder_for(s)
}
