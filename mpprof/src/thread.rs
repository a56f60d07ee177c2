//! The hot path: each thread writes 8-byte record words into its own chunk
//! and publishes them with one release store of the chunk's commit count.
//!
//! A word holds the low half of the event's timestamp, the callsite and the
//! kind; the high half is that of the segment's time base (a `BASE` record
//! the slow path writes at the start of every chunk the thread takes, and
//! again when the high half changes); see [`crate::format::word`].

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::buffer::{Chunk, ChunkInit, ClaimError};
use crate::clock;
use crate::format::{self, kind, word, Meta, Policy};
use crate::session::{self, Chunkless, HandedOff, Pooled, Recorder, OFF, STATE, UNKNOWN};

/// A thread's position in its current chunk. Plain `Cell`s: only the owning
/// thread touches it. No destructor, so the thread-local is a bare
/// `#[thread_local]` slot.
struct Writer {
    /// Epoch of the recorder the chunk belongs to (0: none).
    epoch: Cell<u32>,
    /// Next free record index in the chunk.
    idx: Cell<u32>,
    /// The fast paths' limit on `idx`: `room`, or 0 when they must not
    /// write (no chunk, or the process clock is CLOCK_MONOTONIC, which the
    /// slow path reads), so that one compare answers both.
    cap: Cell<u32>,
    /// Record words the chunk holds (0: no chunk).
    room: Cell<u32>,
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
    /// Words of this thread's segment of the current chunk that are not
    /// events (`BASE` records and payload words), so that overwriting it
    /// counts events exactly.
    extra: Cell<u32>,
    /// First word of this thread's segment of the current chunk (0, or
    /// where a continued chunk's previous owner stopped).
    start: Cell<u32>,
}

thread_local! {
    static WRITER: Writer = const {
        Writer {
            epoch: Cell::new(0),
            idx: Cell::new(0),
            cap: Cell::new(0),
            room: Cell::new(0),
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
            start: Cell::new(0),
        }
    };
    /// Slow-path state: what the thread knows about its current chunk in
    /// the current recorder (the chunks it has left are in the recorder's
    /// `left` list). Its destructor hands the thread's partly used chunk on
    /// at exit, and (keep-last) pools the rest.
    static OWNED: RefCell<Owned> = const {
        RefCell::new(Owned { epoch: 0, current: None, chunkless: None })
    };
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
#[inline(always)]
pub(crate) fn record_in(s: u32, bits: u32, kind: u8) {
    // `try_with`: during thread teardown the slot may be gone; drop the event.
    let _ = WRITER.try_with(|w| {
        let i = w.idx.get();
        if w.epoch.get() == s && i < w.cap.get() {
            // cap > 0: the process clock is the hardware counter.
            let (lo, hi) = clock::counter_parts();
            if hi == w.base_hi.get() {
                // SAFETY: i < cap, so the word is inside this thread's chunk,
                // which no other thread writes; commit points into its header.
                unsafe { write_one(w, i, word::new(lo as u64, bits as u64 | kind as u64)) };
                return;
            }
        }
        slow(w, s, bits, kind, None);
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
        let i = w.idx.get();
        if i < w.cap.get() {
            // cap > 0: the process clock is the hardware counter.
            let (lo, hi) = clock::counter_parts();
            if hi == w.base_hi.get() {
                // SAFETY: as in `record_in`.
                unsafe { write_one(w, i, word::new(lo as u64, bits as u64 | kind::EXIT as u64)) };
                return;
            }
        }
        // Relaxed: as in `record`.
        let s = STATE.load(Ordering::Relaxed);
        if s != OFF {
            slow(w, s, bits, kind::EXIT, None);
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
    let bits = site << word::SITE_SHIFT;
    let _ = WRITER.try_with(|w| {
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
                unsafe { write_words(w, i, &words) };
                w.extra.set(w.extra.get() + 2);
                return;
            }
        }
        slow(w, s, bits, kind, Some(payload));
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
fn slow(w: &Writer, mut s: u32, bits: u32, kind: u8, payload: Option<[u64; 2]>) {
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
        set_room(w, 0);
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
    if w.idx.get() + need > w.room.get() {
        if !new_chunk(w, r) {
            w.lost.set(w.lost.get() + 1);
            r.buf.add_lost_events(1);
            if !w.hdr.get().is_null() {
                // The gap is after the last chunk this lane has.
                Chunk::set_lost_after_at(w.hdr.get(), w.lost.get());
            } else {
                lost_without_chunk(w, r);
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
    words[n] = word::new(ts, bits as u64 | kind as u64);
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

/// Counts a loss of a thread that has no chunk, so no header to hold it,
/// in its [`Chunkless`] record (registered with the recorder at its first
/// such loss), for the [`Meta::Lost`] entry its exit or the recorder's
/// finish writes. While the thread exits (its slow-path state is gone) the
/// loss counts for the process only.
fn lost_without_chunk(w: &Writer, r: &Recorder) {
    owned(w, |o| {
        let c = o.chunkless.get_or_insert_with(|| {
            let t = std::thread::current();
            r.register_chunkless(w.lane.get(), w.tid.get(), t.name().unwrap_or(""))
        });
        // Relaxed: see `Recorder::note_lost`.
        c.events.fetch_add(1, Ordering::Relaxed);
    });
}

/// The losses a thread without a chunk brings into the chunk it gets:
/// those of its [`Chunkless`] record that no [`Meta::Lost`] entry counts
/// yet (the recorder's finish may have written some). They are taken just
/// before the first attempt that may publish a header (or a hand-off) with
/// them, and given back if every attempt fails, so that no loss is in an
/// entry and in a header.
struct Carry(Option<Arc<Chunkless>>);

impl Carry {
    /// Puts the thread's uncounted losses into `init` (once).
    fn take(&mut self, w: &Writer, init: &mut ChunkInit) {
        if self.0.is_some() {
            return;
        }
        if let Some(c) = owned(w, |o| o.chunkless.clone()).flatten() {
            // Relaxed: see `Recorder::note_lost`.
            init.lost_before = c.events.swap(0, Ordering::Relaxed);
            self.0 = Some(c);
        }
    }

    /// The thread has a chunk now: its losses go into headers again.
    fn done(self, w: &Writer, r: &Recorder) {
        if let Some(c) = self.0 {
            r.forget_chunkless(&c);
            owned(w, |o| o.chunkless = None);
        }
    }

    /// No chunk after all: the losses in `init` are uncounted again.
    fn give_back(self, init: &ChunkInit) {
        if let Some(c) = self.0 {
            c.events.fetch_add(init.lost_before, Ordering::Relaxed);
        }
    }
}

/// Most segments a flight-recorder chunk is shared by: a thread exiting
/// with a chunk shared by this many pools it instead of handing it off, so
/// a [`Meta::Reused`] entry (one `(lane, events)` pair per segment) stays
/// small.
const MAX_SEGMENTS: usize = 32;

/// Gives this thread a chunk to write to: the rest of a finished thread's
/// chunk, else a fresh one. Under `keep-last`, when the budget is used up
/// or the file cannot grow, the thread starts its own oldest chunk over,
/// or, when it has left none, the oldest chunk another thread has left
/// (pooled, or on the recorder's left list), or else its current chunk.
/// False when there is nothing to write to (keep-first with the budget
/// used up or the disk full).
fn new_chunk(w: &Writer, r: &'static Recorder) -> bool {
    let keep_last = r.buf.policy() == Policy::KeepLast;
    if keep_last && owned(w, |_| ()).is_none() {
        // The thread is exiting and its chunk list is gone: a chunk taken
        // now would never be pooled again. The event is lost (and counted).
        set_room(w, 0);
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
    let got = take_a_chunk(w, r, &mut init, &mut carry);
    if got {
        carry.done(w, r);
    } else {
        carry.give_back(&init);
        // Nothing to write to: keep-first with the budget used up or the
        // disk full, or a flight-recorder thread with no chunk at all while
        // every other chunk is some live thread's current chunk.
        set_room(w, 0);
    }
    got
}

/// [`new_chunk`]'s attempts, in order: a hand-off, a claim, and (keep-last)
/// a reuse. Each first puts the losses of a thread without a chunk into
/// `init` (see [`Carry`]).
fn take_a_chunk(w: &Writer, r: &'static Recorder, init: &mut ChunkInit, carry: &mut Carry) -> bool {
    let keep_last = r.buf.policy() == Policy::KeepLast;
    let retry_at = w.retry_at.get();
    let may_claim = retry_at == 0 || (retry_at != u64::MAX && clock::monotonic_ns() >= retry_at);
    while let Some(h) = r.take_handoff() {
        carry.take(w, init);
        // Continue a finished thread's chunk: say so in the metadata
        // first, so the reader attributes the records from `start` on to
        // this lane.
        let stored = r.write_meta_stored(&Meta::Handoff(format::Handoff {
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
                r.pool(Pooled {
                    slot: h.chunk.slot,
                    left_at: clock::monotonic_ns(),
                    segments: h.segments,
                });
            }
            continue;
        }
        leave_current(w, r);
        install(w, h.chunk, h.next);
        // Not owned: a continued chunk is reused only through the pool,
        // with a `Reused` entry that retires its hand-offs.
        set_current(w, false, h.segments);
        return true;
    }
    if may_claim {
        carry.take(w, init);
        match r.claim_events(init) {
            Ok(c) => {
                leave_current(w, r);
                install(w, c, 0);
                set_current(w, true, Vec::new());
                return true;
            }
            // The budget will not come back.
            Err(ClaimError::Budget) => w.retry_at.set(u64::MAX),
            Err(ClaimError::Io(e)) => {
                if retry_at == 0 {
                    let then = match r.buf.policy() {
                        Policy::KeepLast => {
                            "the flight recorder goes on by overwriting the oldest events"
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
    if keep_last {
        carry.take(w, init);
        return reuse_a_chunk(w, r, init);
    }
    false
}

/// Flight recorder, once no fresh chunk can be had: overwrites, in order
/// of preference, this thread's oldest chunk (one it left, never its
/// current one, so it keeps at least a chunk of history), the oldest chunk
/// another thread has left (pooled, or a live thread's: see
/// [`take_from_others`]), or its current chunk. True when the thread got
/// one.
fn reuse_a_chunk(w: &Writer, r: &'static Recorder, init: &ChunkInit) -> bool {
    let retry = w.retry_at.get();
    let got = if let Some(old) = r.take_left(w.lane.get()) {
        // SAFETY: the slot is an event chunk this thread claimed (or took)
        // in this recorder (the list is the recorder's) and left; taking it
        // from the list under its lock made it this thread's alone.
        let c = unsafe { reuse_own(w, r, init, old.slot, old.events) };
        leave_current(w, r);
        Some(c)
    } else if let Some(c) = take_from_others(w, r, init) {
        leave_current(w, r);
        Some(c)
    } else {
        reuse_current(w, r, init)
    };
    let Some(c) = got else {
        return false;
    };
    r.maybe_anchor();
    install(w, c, 0);
    set_current(w, true, Vec::new());
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
/// `slot` is an event chunk this thread claimed or reused as its own in
/// this recorder, and no other thread can take it.
unsafe fn reuse_own(w: &Writer, r: &Recorder, init: &ChunkInit, slot: u32, events: u64) -> Chunk {
    // SAFETY: guaranteed by the caller.
    let old = unsafe { r.buf.chunk_owner(slot) };
    let init = ChunkInit {
        overwritten: w.overwritten.get() + events,
        // Saturating: a panic here could be in a TLS destructor.
        lost_before: init.lost_before.saturating_add(old.lost_before),
        ..*init
    };
    // SAFETY: guaranteed by the caller.
    let c = unsafe { r.buf.reuse(slot, &init) };
    r.buf.add_lost_events(events);
    w.overwritten.set(w.overwritten.get() + events);
    c
}

/// For a thread with no chunk of its own to overwrite: takes the oldest
/// of the chunks other threads no longer write, until one can be reused,
/// through a [`Meta::Reused`] entry (so that the overwritten events count
/// against the lanes that wrote them). The candidates are the pooled chunk
/// left longest ago (exited threads' chunks, and continued chunks) and the
/// oldest chunk of a live lane that has left more than one (see
/// [`Recorder::take_left_of_others`]); without either, the oldest chunk
/// any other live lane has left. A chunk whose entry cannot be stored (the
/// metadata space is used up) is left as it is, for good: its content
/// stays readable.
fn take_from_others(w: &Writer, r: &'static Recorder, init: &ChunkInit) -> Option<Chunk> {
    loop {
        let pooled_at = r.oldest_pooled_at();
        let (slot, segments) = if let Some(l) = r.take_left_of_others(w.lane.get(), pooled_at) {
            (l.slot, vec![(l.lane, l.events)])
        } else if pooled_at.is_none() {
            return None;
        } else if let Some(p) = r.take_pooled() {
            (p.slot, p.segments)
        } else {
            // Another thread emptied the pool meanwhile: look again.
            continue;
        };
        // SAFETY: the thread that left the chunk (a live lane's, or a
        // pooled one) no longer writes it, and taking it from its list
        // under the list's lock made it this thread's alone.
        if let Some(c) = unsafe { reuse_shared(w, r, init, slot, &segments) } {
            return Some(c);
        }
    }
}

/// Starts the current chunk over (the thread has no other chunk to
/// overwrite).
fn reuse_current(w: &Writer, r: &'static Recorder, init: &ChunkInit) -> Option<Chunk> {
    if w.hdr.get().is_null() {
        return None;
    }
    let cur = owned(w, |o| o.current.take()).flatten()?;
    let events = segment_events(w);
    if cur.own {
        // SAFETY: the thread's own chunk, which it stops writing here.
        return Some(unsafe { reuse_own(w, r, init, cur.slot, events) });
    }
    let mut segments = cur.prior.clone();
    segments.push((w.lane.get(), events));
    // SAFETY: a continued chunk is written only by its current owner, this
    // thread, which stops writing it here.
    let c = unsafe { reuse_shared(w, r, init, cur.slot, &segments) };
    if c.is_none() {
        // Still the current chunk (full): the losses go into its header.
        owned(w, |o| o.current = Some(cur));
    }
    c
}

/// Gives `slot`, a chunk other threads wrote (`segments` says how many
/// events of which lane it holds), to this thread: writes [`Meta::Reused`]
/// under the metadata lock, then re-initialises the header, then counts
/// the overwritten events, then writes the replaced header's `lost_before`
/// (the losses of its lane before the chunk) as [`Meta::Lost`]. `None`
/// (and the chunk untouched) if the `Reused` entry could not be stored:
/// without it a reader would split the new content at the old hand-offs.
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
    w: &Writer,
    r: &'static Recorder,
    init: &ChunkInit,
    slot: u32,
    segments: &[(u32, u64)],
) -> Option<Chunk> {
    // SAFETY: guaranteed by the caller.
    let old = unsafe { r.buf.chunk_owner(slot) };
    let (prev_lane, prev_overwritten) = (old.lane, old.overwritten);
    let events = segments.iter().map(|s| s.1).sum::<u64>();
    let entry_ts = clock::now_with(session::epoch_uses_tsc(w.epoch.get()));
    let entry = Meta::Reused(format::Reused {
        slot,
        lane: init.lane,
        seq: init.seq,
        ts: entry_ts,
        prev_lane,
        prev_overwritten,
        overwritten: segments.to_vec(),
    });
    if !r.write_meta_stored(&entry) {
        return None;
    }
    // The events belong to the lanes in the entry, not to this thread:
    // its own `overwritten` stays as it is.
    // SAFETY: guaranteed by the caller.
    let c = unsafe { r.buf.reuse(slot, init) };
    r.buf.add_lost_events(events);
    if old.lost_before > 0 {
        // What the old header's lane lost before the chunk: the header is
        // gone, so an entry counts it now (the hand-offs' losses are in
        // their own entries). Written after the header, so a SIGKILL
        // never leaves it counted twice.
        r.write_meta(&Meta::Lost(format::Lost {
            lane: old.lane,
            tid: old.tid,
            name: String::new(),
            ts: entry_ts,
            events: old.lost_before,
        }));
    }
    Some(c)
}

/// Events this thread wrote into its segment of the current chunk.
fn segment_events(w: &Writer) -> u64 {
    // Saturating: never below zero (`start <= idx`, and `extra` counts
    // words of the segment), but a panic here would be in a TLS destructor.
    w.idx
        .get()
        .saturating_sub(w.start.get())
        .saturating_sub(w.extra.get()) as u64
}

/// The thread leaves its current chunk (it has a new one, not yet
/// installed, and writes nothing more into this one): under keep-last an
/// own chunk joins the recorder's list of left chunks, a continued one goes
/// to the pool. Keep-first never reuses a chunk.
fn leave_current(w: &Writer, r: &Recorder) {
    if w.hdr.get().is_null() || r.buf.policy() != Policy::KeepLast {
        return;
    }
    let Some(cur) = owned(w, |o| o.current.take()).flatten() else {
        return;
    };
    let events = segment_events(w);
    if cur.own {
        r.leave(w.lane.get(), cur.slot, events);
    } else {
        let mut segments = cur.prior;
        segments.push((w.lane.get(), events));
        r.pool(Pooled {
            slot: cur.slot,
            left_at: clock::monotonic_ns(),
            segments,
        });
    }
}

/// Records what the thread knows about the chunk it just installed.
fn set_current(w: &Writer, own: bool, prior: Vec<(u32, u64)>) {
    let slot = w.slot.get();
    owned(w, |o| o.current = Some(Current { slot, own, prior }));
}

/// The thread's current chunk.
struct Current {
    slot: u32,
    /// Claimed (or reused) by this thread, rather than continued.
    own: bool,
    /// Keep-last, continued chunk: the events of the earlier segments,
    /// `(lane, events)`.
    prior: Vec<(u32, u64)>,
}

/// The slow path's per-thread state for the writer's recorder: its
/// current chunk.
struct Owned {
    epoch: u32,
    current: Option<Current>,
    /// The thread lost events while it had no chunk (and has none yet):
    /// the losses no entry or header counts yet.
    chunkless: Option<Arc<Chunkless>>,
}

impl Drop for Owned {
    /// The thread is exiting: offer the unused rest of its chunk to the next
    /// thread that needs one (1,000 short-lived threads then share chunks
    /// instead of taking 1,000 of them), and stop writing into it. Under
    /// keep-last, its other chunks (and its current one, if not handed off)
    /// go to the pool, where threads with no chunk of their own to overwrite
    /// take them, the chunk left longest ago first.
    fn drop(&mut self) {
        let _ = WRITER.try_with(|w| {
            let r = session::recorder_for(w.epoch.get()).filter(|_| self.epoch == w.epoch.get());
            if let Some(r) = r {
                let keep_last = r.buf.policy() == Policy::KeepLast;
                let now = clock::monotonic_ns();
                let lane = w.lane.get();
                if let Some(cur) = self.current.take().filter(|_| !w.hdr.get().is_null()) {
                    let (i, cap) = (w.idx.get(), w.room.get());
                    let mut segments = Vec::new();
                    if keep_last {
                        segments = cur.prior;
                        segments.push((lane, segment_events(w)));
                    }
                    if cap > i + 16 && segments.len() < MAX_SEGMENTS {
                        let chunk = Chunk {
                            header: w.hdr.get(),
                            slot: w.slot.get(),
                            data: w.recs.get() as *mut u8,
                            committed: w.commit.get(),
                            capacity: cap,
                        };
                        r.hand_off(HandedOff {
                            chunk,
                            next: i,
                            segments,
                        });
                    } else if keep_last {
                        r.pool(Pooled {
                            slot: cur.slot,
                            left_at: now,
                            segments,
                        });
                    }
                }
                if keep_last {
                    // The chunks it left that no other thread took.
                    for l in r.drain_left(lane) {
                        r.pool(Pooled {
                            slot: l.slot,
                            left_at: l.left_at,
                            segments: vec![(lane, l.events)],
                        });
                    }
                }
                if let Some(c) = self.chunkless.take() {
                    // It never had a chunk: its losses go into an entry.
                    r.forget_chunkless(&c);
                    r.note_lost(&c);
                }
            }
            // The chunk is another thread's (or the pool's) now: an event
            // recorded by a later thread-local destructor must not touch
            // its header (`lost_after`).
            w.hdr.set(std::ptr::null_mut());
            set_room(w, 0);
            w.idx.set(0);
        });
    }
}

/// Runs `f` on this thread's slow-path state for the writer's epoch;
/// `None` while the thread is exiting.
fn owned<R>(w: &Writer, f: impl FnOnce(&mut Owned) -> R) -> Option<R> {
    OWNED
        .try_with(|o| {
            let mut o = o.borrow_mut();
            if o.epoch != w.epoch.get() {
                // Not `*o = ..`: dropping an `Owned` hands the chunk off.
                // The chunks it left stay in the old recorder's list, and
                // its uncounted losses without a chunk in the old file.
                o.epoch = w.epoch.get();
                o.current = None;
                o.chunkless = None;
            }
            f(&mut o)
        })
        .ok()
}

/// Sets the chunk's room, and the fast paths' limit: the same when the
/// process clock is the hardware counter, else 0.
fn set_room(w: &Writer, n: u32) {
    w.room.set(n);
    w.cap.set(if session::epoch_uses_tsc(w.epoch.get()) {
        n
    } else {
        0
    });
}

/// Makes `c` the thread's chunk, writing from record `start`.
fn install(w: &Writer, c: Chunk, start: u32) {
    w.recs.set(c.data as *mut u64);
    w.commit.set(c.committed);
    w.hdr.set(c.header);
    w.slot.set(c.slot);
    set_room(w, c.capacity);
    w.idx.set(start);
    w.seq.set(w.seq.get() + 1);
    w.lost.set(0);
    w.retry_at.set(0);
    w.need_base.set(true);
    w.extra.set(0);
    w.start.set(start);
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
        set_room(w, 0);
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
