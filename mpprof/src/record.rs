//! The hot path: each thread writes 8-byte record words into its own chunk
//! and publishes them with one release store of the chunk's commit count
//! (see [`Writer`]). Everything else (starting to record, a lane, a new
//! chunk, a lost event) goes through [`slow`] to the chunk supply
//! (`chunks.rs`).
//!
//! Also the guards and calls the macros expand to ([`SpanGuard`],
//! [`instant`], [`counter`]).
//!
//! **Re-entrance.** A signal handler may record on a thread that is
//! half-way through recording: between reading its write index and
//! storing it, in the middle of a chunk change, holding the metadata lock.
//! So every way into the recorder marks the thread busy first ([`inside`];
//! the hot path sets [`Writer::busy`] itself, a store before and after),
//! and an event that finds the thread busy is not written: it is counted,
//! in the file header's lost events at once (an atomic add, safe in a
//! handler) and in the thread's `nested` count, which the thread's next
//! slow path (or its exit) writes as a `Meta::Lost` entry of its lane.
//! So a handler's event is recorded, correctly nested, or counted as lost:
//! never written over another, never waiting on its own thread.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{compiler_fence, Ordering};

use crate::callsite::{self, Callsite};
use crate::chunks::{self, Owned, Thread};
use crate::clock;
use crate::format::{counter, kind, word, FlowId, SiteKind};
use crate::session::{self, OFF, STATE, UNKNOWN};
use crate::writer::Writer;

thread_local! {
    /// The thread's cursor: the hot path's only thread-local.
    static WRITER: Writer = const { Writer::new() };
    /// Slow-path state: what the thread knows about its current chunk in
    /// the current recorder (the chunks it has left are in the recorder's
    /// lists). Its destructor gives the thread's chunks back at exit.
    static OWNED: OwnedSlot = const { OwnedSlot(RefCell::new(Owned::new())) };
}

/// The thread-local holding [`Owned`]; dropping it (at thread exit) runs
/// [`chunks::thread_exit`] when the state is about the current recorder.
struct OwnedSlot(RefCell<Owned>);

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        let _ = WRITER.try_with(|w| {
            // The thread's exit takes the supply's locks: a handler that
            // records meanwhile must not (see the module docs).
            let Some(_inside) = Inside::enter(w) else {
                return;
            };
            let owned = self.0.get_mut();
            match session::recorder_for(w.epoch.get()).filter(|_| owned.is_about(w)) {
                Some(r) => {
                    flush_nested(w, &r.chunks);
                    chunks::thread_exit(w, owned, &r.chunks)
                }
                // Another recorder's chunk (or none): only stop writing it.
                None => {
                    let _ = w.take_chunk();
                }
            }
            detach(w);
            // A safe point: files no one uses any more are released.
            session::sweep();
        });
    }
}

/// The thread is inside the recorder while this lives (see the module
/// docs).
pub(crate) struct Inside<'a>(&'a Writer);

impl<'a> Inside<'a> {
    /// Marks the thread busy; `None` if it already is (a signal handler
    /// interrupted the recorder on this thread).
    fn enter(w: &'a Writer) -> Option<Inside<'a>> {
        if w.busy.get() {
            return None;
        }
        w.busy.set(true);
        // The handler that interrupts us from here on sees `busy`, and
        // nothing below moves above it.
        compiler_fence(Ordering::SeqCst);
        Some(Inside(w))
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        // Everything above is done before a handler can see us not busy.
        compiler_fence(Ordering::SeqCst);
        self.0.busy.set(false);
    }
}

/// Runs `f` inside the recorder (see the module docs): `None`, without
/// running it, when the thread already is (a signal handler interrupted
/// it there) or is being torn down.
pub(crate) fn inside<R>(f: impl FnOnce() -> R) -> Option<R> {
    WRITER
        .try_with(|w| {
            let _inside = Inside::enter(w)?;
            Some(f())
        })
        .ok()
        .flatten()
}

/// An event that came while its thread was inside the recorder: not
/// written, counted as lost in the file of the recorder `epoch` names (if
/// it is still current) and in the thread's `nested` count.
#[cold]
#[inline(never)]
fn nested(w: &Writer, epoch: u32) {
    if let Some(r) = session::recorder_for(epoch) {
        // Using the file: it may be released meanwhile (not by this thread,
        // which is not at a safe point).
        r.chunks.using(|c| c.buf().add_lost_events(1));
        // Relaxed: this thread's own count; the interrupted code takes it
        // with a swap.
        w.nested.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes the thread's nested losses (see [`nested`]) as a `Meta::Lost`
/// entry of its lane; kept for later if the entry cannot be stored.
fn flush_nested(w: &Writer, sup: &chunks::Chunks) {
    // Relaxed: see `nested`.
    if w.nested.load(Ordering::Relaxed) == 0 || w.lane.get() == 0 {
        return;
    }
    let n = w.nested.swap(0, Ordering::Relaxed);
    if !sup.note_lane_lost(w.lane.get(), w.tid.get(), n) {
        w.nested.fetch_add(n, Ordering::Relaxed);
    }
}

/// A counter value: integers are stored as `i64`, floats as `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CounterValue {
    /// A signed integer sample, recorded exactly.
    Int(i64),
    /// An unsigned integer sample, recorded exactly (all of `u64`).
    UInt(u64),
    /// A floating-point sample, recorded as it is (NaN and the infinities
    /// too).
    Float(f64),
}

macro_rules! counter_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for CounterValue {
            fn from(v: $t) -> CounterValue { CounterValue::$v(v as _) }
        }
    )*};
}
counter_from!(i8 => Int, i16 => Int, i32 => Int, i64 => Int, isize => Int, u8 => Int, u16 => Int, u32 => Int,
    u64 => UInt, usize => UInt, f32 => Float, f64 => Float);

/// Records the exit of a span when dropped (also while unwinding).
/// Not `Send`: the exit belongs to the thread of the entry.
#[must_use = "the span ends when the guard is dropped"]
pub struct SpanGuard {
    /// The callsite's id in its place in a record word
    /// ([`Callsite::bits`]), 0 when the entry was not recorded.
    bits: u32,
    _not_send: PhantomData<*const ()>,
}

impl SpanGuard {
    /// Records the entry of the span at `cs`.
    #[inline(always)]
    pub fn enter(cs: &'static Callsite) -> SpanGuard {
        let s = state();
        if s == OFF {
            return SpanGuard {
                bits: 0,
                _not_send: PhantomData,
            };
        }
        let bits = cs.bits();
        record_in(s, bits, kind::ENTER);
        SpanGuard {
            bits,
            _not_send: PhantomData,
        }
    }
}

impl Drop for SpanGuard {
    #[inline(always)]
    fn drop(&mut self) {
        if self.bits != 0 {
            exit(self.bits);
        }
    }
}

/// Records an instant event at `cs`.
#[inline]
pub fn instant(cs: &'static Callsite) {
    if maybe_on() {
        record(cs.id(), kind::INSTANT);
    }
}

/// Records a counter sample at `cs`.
#[inline]
pub fn counter(cs: &'static Callsite, v: CounterValue) {
    if maybe_on() {
        record_with_payload(cs.id(), kind::COUNTER, counter_payload(v));
    }
}

/// Records a counter sample at callsite id `site`, which the caller named
/// in the file (the resource sampler's counters).
pub(crate) fn counter_id(site: u32, v: CounterValue) {
    if maybe_on() {
        record_with_payload(site, kind::COUNTER, counter_payload(v));
    }
}

fn counter_payload(v: CounterValue) -> [u64; 2] {
    match v {
        CounterValue::Int(i) => [i as u64, counter::INT],
        CounterValue::UInt(u) => [u, counter::UINT],
        CounterValue::Float(f) => [f.to_bits(), counter::FLOAT],
    }
}

/// Records one end of a flow (`FLOW_OUT` or `FLOW_IN`) named `name`.
/// Interning the name takes a lock: inside the recorder, or counted as a
/// nested loss when the thread already is.
pub(crate) fn flow(kind: u8, id: FlowId, name: &str) {
    match inside(|| callsite::intern(SiteKind::Flow, name)) {
        Some(site) => record_with_payload(site, kind, id.to_payload()),
        None => lost_nested(),
    }
}

/// Records an event of a callsite named at run time (`spawn <program>`).
pub(crate) fn named(kind: u8, site_kind: SiteKind, name: &str) {
    match inside(|| callsite::intern(site_kind, name)) {
        Some(site) => record(site, kind),
        None => lost_nested(),
    }
}

/// Counts an event this thread could not record because it is inside the
/// recorder already (see the module docs).
pub(crate) fn lost_nested() {
    let _ = WRITER.try_with(|w| nested(w, state()));
}

/// Records one event. The hot path: one relaxed load of the global state,
/// the thread-local, one timestamp, one 8-byte store, one release store.
#[inline(always)]
pub(crate) fn record(site: u32, kind: u8) {
    let s = STATE.load(Ordering::Relaxed);
    if s != OFF {
        record_in(s, site << word::SITE_SHIFT, kind);
    }
}

/// [`record`] for a caller that already loaded the state `s` (not OFF) and
/// has the callsite as `bits` (`id << SITE_SHIFT`, see `Callsite::bits`).
///
/// The thread is marked busy (see the module docs) around the write, before
/// it reads its write index: a handler that interrupts it from there on
/// drops its event, and one that came before has finished by the time the
/// index is read.
#[inline(always)]
pub(crate) fn record_in(s: u32, bits: u32, kind: u8) {
    // `try_with`: during thread teardown the slot may be gone; drop the event.
    let _ = WRITER.try_with(|w| {
        if !w.busy.get() {
            w.busy.set(true);
            // See `Inside::enter`.
            compiler_fence(Ordering::SeqCst);
            let i = w.idx.get();
            if w.epoch.get() == s && i < w.cap.get() {
                // cap > 0: the process clock is the hardware counter.
                let (lo, hi) = clock::counter_parts();
                if hi == w.base_hi.get() {
                    // SAFETY: i < cap, so the word is inside this thread's
                    // chunk, which no other thread writes; commit points
                    // into its header.
                    unsafe { w.write_one(i, word::new(lo as u64, bits as u64 | kind as u64)) };
                    compiler_fence(Ordering::SeqCst);
                    w.busy.set(false);
                    return;
                }
            }
            compiler_fence(Ordering::SeqCst);
            w.busy.set(false);
        }
        slow_record(w, s, bits, kind, None);
    });
}

/// Records a span exit. No global load: the exit goes where its entry went,
/// into the thread's current chunk, even if the session has just finished
/// (the file stays mapped and the reader takes what is committed). A thread
/// without room (or in a forked child, whose chunk was forgotten) takes the
/// slow path, which looks at the state. `bits` as for [`record_in`].
#[inline(always)]
pub(crate) fn exit(bits: u32) {
    let _ = WRITER.try_with(|w| {
        if !w.busy.get() {
            w.busy.set(true);
            // See `Inside::enter`.
            compiler_fence(Ordering::SeqCst);
            let i = w.idx.get();
            if i < w.cap.get() {
                // cap > 0: the process clock is the hardware counter.
                let (lo, hi) = clock::counter_parts();
                if hi == w.base_hi.get() {
                    // SAFETY: as in `record_in`.
                    unsafe {
                        w.write_one(i, word::new(lo as u64, bits as u64 | kind::EXIT as u64))
                    };
                    compiler_fence(Ordering::SeqCst);
                    w.busy.set(false);
                    return;
                }
            }
            compiler_fence(Ordering::SeqCst);
            w.busy.set(false);
        }
        slow_exit(w, bits);
    });
}

/// Everything [`record_in`] and [`record_with_payload`] do not do inline:
/// an event that comes while the thread is busy, or that needs the slow
/// path. Out of line, so the instrumented function keeps few registers.
#[cold]
#[inline(never)]
fn slow_record(w: &Writer, s: u32, bits: u32, kind: u8, payload: Option<[u64; 2]>) {
    match Inside::enter(w) {
        Some(_inside) => slow(w, s, bits, kind, payload),
        None => nested(w, s),
    }
}

/// [`slow_record`] for [`exit`], which has not loaded the state.
#[cold]
#[inline(never)]
fn slow_exit(w: &Writer, bits: u32) {
    let Some(_inside) = Inside::enter(w) else {
        return nested(w, w.epoch.get());
    };
    // Relaxed: as in `record`.
    let s = STATE.load(Ordering::Relaxed);
    if s != OFF {
        slow(w, s, bits, kind::EXIT, None);
    }
}

/// Records an event followed by its two payload words (flows, counters,
/// async spans). All three are committed by one store, so a reader sees all
/// or none.
#[inline]
pub(crate) fn record_with_payload(site: u32, kind: u8, payload: [u64; 2]) {
    let s = STATE.load(Ordering::Relaxed);
    if s == OFF {
        return;
    }
    let bits = site << word::SITE_SHIFT;
    let _ = WRITER.try_with(|w| {
        if let Some(_inside) = Inside::enter(w) {
            let i = w.idx.get();
            if w.epoch.get() == s && i + 2 < w.cap.get() {
                // cap > 0: the process clock is the hardware counter.
                let (lo, hi) = clock::counter_parts();
                if hi == w.base_hi.get() {
                    let words = [
                        word::new(lo as u64, bits as u64 | kind as u64),
                        payload[0],
                        payload[1],
                    ];
                    // SAFETY: i + 2 < cap: all three words are inside this
                    // thread's chunk.
                    unsafe { w.write_words(i, &words) };
                    w.extra.set(w.extra.get() + 2);
                    return;
                }
            }
        }
        slow_record(w, s, bits, kind, Some(payload));
    });
}

/// Everything that is not a plain write into a chunk with room: deciding
/// whether to record at all, a new recorder, a new lane, then the chunk
/// supply's slow write (a new chunk, or counting the event as lost).
#[cold]
#[inline(never)]
fn slow(w: &Writer, mut s: u32, bits: u32, kind: u8, payload: Option<[u64; 2]>) {
    let mut origin = None;
    if s == UNKNOWN {
        origin = session::lazy_start();
        // Relaxed: lazy_start ran on this thread.
        s = STATE.load(Ordering::Relaxed);
        if s == OFF {
            return;
        }
    }
    let Some(r) = session::recorder_for(s) else {
        return;
    };
    if w.epoch.get() != s {
        // A new recorder (new session, or this is a forked child): forget the
        // old chunk and lane, and use the new file (unless it is released:
        // a finished session's, seen through a stale state).
        if !r.chunks.attach() {
            return;
        }
        detach(w);
        w.reset(s);
        w.attached
            .set(&r.chunks as *const chunks::Chunks as *const ());
    }
    if w.lane.get() == 0 {
        w.tid.set(gettid());
        let t = std::thread::current();
        w.lane
            .set(r.chunks.new_lane(w.tid.get(), t.name().unwrap_or("")));
    }
    let sup = &r.chunks;
    flush_nested(w, sup);
    let write = |t: &Thread| {
        if let Some((f, name)) = origin {
            // The flow that started the process ends just before its first
            // event (see `session::start`).
            let site = callsite::intern(SiteKind::Flow, name) << word::SITE_SHIFT;
            chunks::write_slow(t, sup, site, kind::FLOW_IN, Some(f.to_payload()));
        }
        chunks::write_slow(t, sup, bits, kind, payload);
    };
    let written = OWNED.try_with(|o| {
        write(&Thread {
            w,
            owned: Some(&o.0),
        })
    });
    if written.is_err() {
        // The thread is exiting and its slow-path state is gone.
        write(&Thread { w, owned: None });
    }
}

/// The writer stops using its file (see `Chunks::attach`); it no longer
/// has a chunk there. Releasing the file is left to a safe point.
pub(crate) fn detach(w: &Writer) {
    let p = w.attached.replace(std::ptr::null()) as *const chunks::Chunks;
    // SAFETY: `attached` points to the `Chunks` of a leaked (never freed)
    // recorder, set when the writer attached to it.
    if let Some(c) = unsafe { p.as_ref() } {
        // The chunk stays in the file; the writer no longer points into it.
        let _ = w.take_chunk();
        w.epoch.set(0);
        c.detach();
    }
}

/// Detaches this thread's writer from its file if that file is `c`'s (the
/// finishing thread: its later events go to the next session, or nowhere).
pub(crate) fn detach_from(c: &chunks::Chunks) {
    let _ = WRITER.try_with(|w| {
        if std::ptr::eq(w.attached.get(), c as *const chunks::Chunks as *const ()) {
            detach(w);
        }
    });
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Forgets this thread's chunk (in a forked child: the chunk is the
/// parent's). Touches only this thread's cells.
pub(crate) fn forget_chunk() {
    let _ = WRITER.try_with(Writer::forget);
}

/// The recording state: [`OFF`], or something for [`record_in`]. One
/// relaxed load (a hint: the write re-checks against the thread's epoch).
#[inline(always)]
pub(crate) fn state() -> u32 {
    STATE.load(Ordering::Relaxed)
}

/// Whether recording may be on (not [`OFF`]): one relaxed load.
#[inline(always)]
pub(crate) fn maybe_on() -> bool {
    state() != OFF
}

/// Records a span entry (kind ENTER).
#[cfg(feature = "tracing")]
#[inline(always)]
pub(crate) fn enter(site: u32) {
    record(site, kind::ENTER)
}
