//! The hot path: each thread writes 8-byte record words into its own chunk
//! and publishes them with one release store of the chunk's commit count.
//!
//! A word holds the low half of the event's timestamp, the callsite and the
//! kind; the high half is that of the segment's time base (a `BASE` record
//! the slow path writes at the start of every chunk the thread takes, and
//! again when the high half changes); see [`crate::format::word`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::buffer::{Chunk, ChunkInit, ClaimError};
use crate::clock;
use crate::format::{self, kind, word, Meta, Policy};
use crate::session::{self, Recorder, OFF, STATE, UNKNOWN};

/// A thread's position in its current chunk. Plain `Cell`s: only the owning
/// thread touches it. No destructor, so the thread-local is a bare
/// `#[thread_local]` slot.
struct Writer {
    /// Epoch of the recorder the chunk belongs to (0: none).
    epoch: Cell<u32>,
    /// Next free record index in the chunk.
    idx: Cell<u32>,
    /// Record words the chunk holds (0: no chunk).
    cap: Cell<u32>,
    /// High half of the current segment's time base: an event whose
    /// timestamp has another high half needs a new `BASE` first.
    base_hi: Cell<u32>,
    /// First record word of the chunk.
    recs: Cell<*mut u64>,
    /// The chunk's commit counter.
    commit: Cell<*const AtomicU32>,
    /// This thread's lane in the current recorder (0: not assigned).
    lane: Cell<u32>,
    /// Sequence number of the next chunk of this lane.
    seq: Cell<u32>,
    /// Events lost since the last successful claim.
    lost: Cell<u64>,
    /// Events of this lane overwritten by the flight recorder so far.
    overwritten: Cell<u64>,
    /// Header of the current (or last) chunk, null when none.
    hdr: Cell<*mut u8>,
    /// Slot of the current chunk.
    slot: Cell<u32>,
    /// OS thread id (set with the lane).
    tid: Cell<u32>,
    /// After a failed claim: CLOCK_MONOTONIC time before which no new claim
    /// is tried (failed claims cost a syscall; a full disk stays full for a
    /// while). `u64::MAX`: never (budget used up under keep-first).
    retry_at: Cell<u64>,
    /// The chunk was just installed: the next record must be a `BASE`.
    need_base: Cell<bool>,
    /// Words of the current chunk that are not events (`BASE` records and
    /// payload words), so that overwriting it counts events exactly.
    extra: Cell<u32>,
}

thread_local! {
    static WRITER: Writer = const {
        Writer {
            epoch: Cell::new(0),
            idx: Cell::new(0),
            cap: Cell::new(0),
            base_hi: Cell::new(0),
            recs: Cell::new(std::ptr::null_mut()),
            commit: Cell::new(std::ptr::null()),
            lane: Cell::new(0),
            seq: Cell::new(0),
            lost: Cell::new(0),
            overwritten: Cell::new(0),
            hdr: Cell::new(std::ptr::null_mut()),
            slot: Cell::new(0),
            tid: Cell::new(0),
            retry_at: Cell::new(0),
            need_base: Cell::new(false),
            extra: Cell::new(0),
        }
    };
    /// Slow-path state: the event chunks this thread owns in the current
    /// recorder, oldest first (the flight recorder reuses the front one).
    /// Its destructor hands the thread's partly used chunk on at exit.
    static OWNED: RefCell<Owned> = const { RefCell::new(Owned { epoch: 0, slots: VecDeque::new() }) };
}

/// Records one event. The hot path: one relaxed load of the global state,
/// the thread-local, one timestamp, one 8-byte store, one release store.
#[inline(always)]
pub(crate) fn record(site: u32, kind: u8) {
    let s = STATE.load(Ordering::Relaxed);
    if s != OFF {
        record_in(s, site, kind);
    }
}

/// [`record`] for a caller that already loaded the state `s` (not OFF).
#[inline(always)]
pub(crate) fn record_in(s: u32, site: u32, kind: u8) {
    // `try_with`: during thread teardown the slot may be gone; drop the event.
    let _ = WRITER.try_with(|w| {
        let i = w.idx.get();
        if w.epoch.get() == s && i < w.cap.get() {
            let t = clock::counter_parts(session::epoch_uses_tsc(s));
            if let Some((lo, _)) = t.filter(|t| t.1 == w.base_hi.get()) {
                // SAFETY: i < cap, so the word is inside this thread's chunk,
                // which no other thread writes; commit points into its header.
                unsafe { write_one(w, i, word::new(lo as u64, word::site_kind(site, kind))) };
                return;
            }
        }
        slow(w, s, site, kind, None);
    });
}

/// Records a span exit. No global load: the exit goes where its entry went,
/// into the thread's current chunk, even if the session has just finished
/// (the file stays mapped and the reader takes what is committed). A thread
/// without room (or in a forked child, whose chunk was forgotten) takes the
/// slow path, which looks at the state.
#[inline(always)]
pub(crate) fn exit(site: u32) {
    let _ = WRITER.try_with(|w| {
        let i = w.idx.get();
        if i < w.cap.get() {
            let t = clock::counter_parts(session::epoch_uses_tsc(w.epoch.get()));
            if let Some((lo, _)) = t.filter(|t| t.1 == w.base_hi.get()) {
                // SAFETY: as in `record_in`.
                unsafe {
                    write_one(
                        w,
                        i,
                        word::new(lo as u64, word::site_kind(site, kind::EXIT)),
                    )
                };
                return;
            }
        }
        // Relaxed: as in `record`.
        let s = STATE.load(Ordering::Relaxed);
        if s != OFF {
            slow(w, s, site, kind::EXIT, None);
        }
    });
}

/// # Safety
/// `i < w.cap` and `w` holds a live chunk.
#[inline(always)]
unsafe fn write_one(w: &Writer, i: u32, rec: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        w.recs.get().add(i as usize).write(rec);
        // Release: the word above is visible before the count that covers
        // it (readers load the count with acquire).
        (*w.commit.get()).store(i + 1, Ordering::Release);
    }
    w.idx.set(i + 1);
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
    let _ = WRITER.try_with(|w| {
        let i = w.idx.get();
        if w.epoch.get() == s && i + 2 < w.cap.get() {
            let t = clock::counter_parts(session::epoch_uses_tsc(s));
            if let Some((lo, _)) = t.filter(|t| t.1 == w.base_hi.get()) {
                let words = [
                    word::new(lo as u64, word::site_kind(site, kind)),
                    payload[0],
                    payload[1],
                ];
                // SAFETY: i + 2 < cap: all three words are inside this
                // thread's chunk.
                unsafe { write_words(w, i, &words) };
                w.extra.set(w.extra.get() + 2);
                return;
            }
        }
        slow(w, s, site, kind, Some(payload));
    });
}

/// Writes `words` from word `i` on and commits them with one release store.
///
/// # Safety
/// `i + words.len() <= w.cap` and `w` holds a live chunk.
#[inline(always)]
unsafe fn write_words(w: &Writer, i: u32, words: &[u64]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let p = w.recs.get().add(i as usize);
        for (k, &x) in words.iter().enumerate() {
            p.add(k).write(x);
        }
        // Release: all the words are visible before the count.
        (*w.commit.get()).store(i + words.len() as u32, Ordering::Release);
    }
    w.idx.set(i + words.len() as u32);
}

/// Everything that is not a plain write into a chunk with room: deciding
/// whether to record at all, a new recorder, a new lane, a new chunk, or
/// counting the event as lost.
#[cold]
#[inline(never)]
fn slow(w: &Writer, mut s: u32, site: u32, kind: u8, payload: Option<[u64; 2]>) {
    if s == UNKNOWN {
        session::lazy_start();
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
        // old chunk and lane.
        w.epoch.set(s);
        w.idx.set(0);
        w.cap.set(0);
        w.lane.set(0);
        w.seq.set(0);
        w.lost.set(0);
        w.overwritten.set(0);
        w.hdr.set(std::ptr::null_mut());
        w.retry_at.set(0);
    }
    if w.lane.get() == 0 {
        let lane = r.new_lane();
        w.lane.set(lane);
        w.tid.set(gettid());
        let t = std::thread::current();
        r.write_meta(&Meta::Thread {
            lane,
            tid: w.tid.get(),
            name: t.name().unwrap_or("").to_owned(),
        });
    }
    let uses_tsc = session::epoch_uses_tsc(s);
    let event_words = 1 + if payload.is_some() { 2 } else { 0 };
    let mut ts = clock::now_with(uses_tsc);
    let mut need_base = w.need_base.get() || word::high(ts) != w.base_hi.get();
    let need = event_words + if need_base { 2 } else { 0 };
    if w.idx.get() + need > w.cap.get() {
        if !new_chunk(w, r) {
            w.lost.set(w.lost.get() + 1);
            r.buf.add_lost_events(1);
            if !w.hdr.get().is_null() {
                // The gap is after the last chunk this lane has.
                Chunk::set_lost_after_at(w.hdr.get(), w.lost.get());
            }
            return;
        }
        // A fresh segment (new_chunk guarantees room for a base and an
        // event with payload): its time base is the event's time.
        ts = clock::now_with(uses_tsc);
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
    words[n] = word::new(ts, word::site_kind(site, kind));
    n += 1;
    if let Some(p) = payload {
        words[n] = p[0];
        words[n + 1] = p[1];
        n += 2;
    }
    w.extra.set(w.extra.get() + n as u32 - 1);
    // SAFETY: new_chunk or the check above guarantees room for `n` words.
    unsafe { write_words(w, w.idx.get(), &words[..n]) };
}

/// Gives this thread a chunk to write to: the rest of a finished thread's
/// chunk, else a fresh one. Under `keep-last`, when the budget is used up
/// or the file cannot grow, the thread starts its own oldest chunk over.
/// False when there is nothing to write to (keep-first with the budget
/// used up or the disk full).
fn new_chunk(w: &Writer, r: &'static Recorder) -> bool {
    let init = ChunkInit {
        kind: format::CHUNK_EVENTS,
        lane: w.lane.get(),
        tid: w.tid.get(),
        seq: w.seq.get(),
        lost_before: w.lost.get(),
        overwritten: w.overwritten.get(),
    };
    // Leaving the current chunk: remember how many of its words are not
    // events, in case the flight recorder overwrites it later.
    let (slot, extra) = (w.slot.get(), w.extra.get());
    if !w.hdr.get().is_null() {
        owned(w, |o| {
            if let Some(b) = o.back_mut().filter(|b| b.0 == slot) {
                b.1 = extra;
            }
        });
    }
    let retry_at = w.retry_at.get();
    let may_claim = retry_at == 0 || (retry_at != u64::MAX && clock::monotonic_ns() >= retry_at);
    if let Some((c, start)) = r.take_handoff() {
        // Continue a finished thread's chunk: say so in the metadata
        // first, so the reader attributes the records from `start` on to
        // this lane.
        r.write_meta(&Meta::Handoff {
            slot: c.slot,
            start,
            lane: init.lane,
            tid: init.tid,
            seq: init.seq,
            lost_before: init.lost_before,
        });
        // Registers the exit hand-off for this thread too (not owned: a
        // continued chunk is never reused by the flight recorder).
        owned(w, |_| ());
        install(w, c, start);
        return true;
    }
    if may_claim {
        match r.claim_events(&init) {
            Ok(c) => {
                owned(w, |o| o.push_back((c.slot, 0)));
                install(w, c, 0);
                return true;
            }
            // The budget will not come back.
            Err(ClaimError::Budget) => w.retry_at.set(u64::MAX),
            Err(ClaimError::Io(e)) => {
                if retry_at == 0 {
                    let then = match r.buf.policy() {
                        Policy::KeepLast => {
                            "the flight recorder goes on by overwriting this thread's oldest events"
                        }
                        Policy::KeepFirst => "this thread stops recording until space is available",
                    };
                    crate::warn(format_args!(
                        "cannot grow {} ({e}); {then}, and lost events are counted",
                        r.buf.path().display(),
                    ));
                }
                // A full disk stays full for a while: retry in 100 ms.
                w.retry_at.set(clock::monotonic_ns() + 100_000_000);
            }
        }
    }
    if r.buf.policy() == Policy::KeepLast {
        if let Some((slot, extra)) = owned(w, |o| o.pop_front()).flatten() {
            // SAFETY: `slot` was claimed by this thread in this recorder
            // (OWNED is reset with the epoch) and the thread is done with it.
            let (c, old) = unsafe { r.buf.reuse(slot, &init, extra) };
            r.buf.add_lost_events(old as u64);
            w.overwritten.set(w.overwritten.get() + old as u64);
            r.maybe_anchor();
            owned(w, |o| o.push_back((c.slot, 0)));
            let retry = w.retry_at.get();
            install(w, c, 0);
            w.retry_at.set(retry);
            return true;
        }
    }
    // Nothing to write to: keep-first with the budget used up or the disk
    // full, or a flight-recorder thread that never had a chunk of its own.
    w.cap.set(0);
    false
}

/// The event chunks a thread claimed itself (not continued from another
/// thread), for the flight recorder to reuse: (slot, words in it that are
/// not events, known once the thread left it).
struct Owned {
    epoch: u32,
    slots: VecDeque<(u32, u32)>,
}

impl Drop for Owned {
    /// The thread is exiting: offer the unused rest of its chunk to the next
    /// thread that needs one (1,000 short-lived threads then share chunks
    /// instead of taking 1,000 of them), and stop writing into it.
    fn drop(&mut self) {
        let _ = WRITER.try_with(|w| {
            let (i, cap) = (w.idx.get(), w.cap.get());
            if cap > i + 16 {
                if let Some(r) = session::recorder_for(w.epoch.get()) {
                    let c = Chunk {
                        header: w.hdr.get(),
                        slot: w.slot.get(),
                        data: w.recs.get() as *mut u8,
                        committed: w.commit.get(),
                        capacity: cap,
                    };
                    r.hand_off(c, i);
                }
            }
            w.cap.set(0);
            w.idx.set(0);
        });
    }
}

/// Runs `f` on this thread's list of owned chunks for the writer's epoch;
/// `None` while the thread is exiting.
fn owned<R>(w: &Writer, f: impl FnOnce(&mut VecDeque<(u32, u32)>) -> R) -> Option<R> {
    OWNED
        .try_with(|o| {
            let mut o = o.borrow_mut();
            if o.epoch != w.epoch.get() {
                // Not `*o = ..`: dropping an `Owned` hands the chunk off.
                o.epoch = w.epoch.get();
                o.slots.clear();
            }
            f(&mut o.slots)
        })
        .ok()
}

/// Makes `c` the thread's chunk, writing from record `start`.
fn install(w: &Writer, c: Chunk, start: u32) {
    w.recs.set(c.data as *mut u64);
    w.commit.set(c.committed);
    w.hdr.set(c.header);
    w.slot.set(c.slot);
    w.cap.set(c.capacity);
    w.idx.set(start);
    w.seq.set(w.seq.get() + 1);
    w.lost.set(0);
    w.retry_at.set(0);
    w.need_base.set(true);
    w.extra.set(0);
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Forgets this thread's chunk (in a forked child: the chunk is the
/// parent's). Touches only this thread's cells.
pub(crate) fn forget_chunk() {
    let _ = WRITER.try_with(|w| {
        w.epoch.set(0);
        w.cap.set(0);
        w.idx.set(0);
        w.hdr.set(std::ptr::null_mut());
    });
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
