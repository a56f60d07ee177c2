//! A thread's cursor in its current chunk: what the hot path reads and
//! writes (plain `Cell`s: only the owning thread touches it), and the
//! writes that publish words with one release store of the chunk's commit
//! count.
//!
//! A word holds the low half of the event's timestamp, the callsite and the
//! kind; the high half is that of the segment's time base (a `BASE` record
//! the slow path writes at the start of every chunk the thread takes, and
//! again when the high half changes); see [`crate::format::word`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::buffer::Chunk;

/// Whether a recording epoch's timestamps come from the time-stamp counter
/// (its low bit; see `session::STATE`).
#[inline(always)]
pub(crate) const fn epoch_uses_tsc(epoch: u32) -> bool {
    epoch & 1 != 0
}

/// A thread's position in its current chunk. No destructor, so the
/// thread-local that holds it is a bare `#[thread_local]` slot.
pub(crate) struct Writer {
    /// Epoch of the recorder the chunk belongs to (0: none).
    pub(crate) epoch: Cell<u32>,
    /// Next free record index in the chunk.
    pub(crate) idx: Cell<u32>,
    /// The fast paths' limit on `idx`: `room`, or 0 when they must not
    /// write (no chunk, or the process clock is CLOCK_MONOTONIC, which the
    /// slow path reads), so that one compare answers both.
    pub(crate) cap: Cell<u32>,
    /// Record words the chunk holds (0: no chunk).
    pub(crate) room: Cell<u32>,
    /// High half of the current segment's time base: an event whose
    /// timestamp has another high half needs a new `BASE` first.
    pub(crate) base_hi: Cell<u32>,
    /// First record word of the chunk.
    pub(crate) recs: Cell<*mut u64>,
    /// The chunk's commit counter.
    pub(crate) commit: Cell<*const AtomicU32>,
    /// This thread's lane in the current recorder (0: not assigned).
    pub(crate) lane: Cell<u32>,
    /// Sequence number of the next chunk of this lane.
    pub(crate) seq: Cell<u32>,
    /// Events lost since the last successful claim.
    pub(crate) lost: Cell<u64>,
    /// Events of this lane overwritten by the flight recorder so far.
    pub(crate) overwritten: Cell<u64>,
    /// Header of the current (or last) chunk, null when none.
    pub(crate) hdr: Cell<*mut u8>,
    /// Slot of the current chunk.
    pub(crate) slot: Cell<u32>,
    /// OS thread id (set with the lane).
    pub(crate) tid: Cell<u32>,
    /// After a failed claim: CLOCK_MONOTONIC time before which no new claim
    /// is tried (failed claims cost a syscall; a full disk stays full for a
    /// while). `u64::MAX`: never (budget used up under keep-first).
    pub(crate) retry_at: Cell<u64>,
    /// The chunk was just installed: the next record must be a `BASE`.
    pub(crate) need_base: Cell<bool>,
    /// Words of this thread's segment of the current chunk that are not
    /// events (`BASE` records and payload words), so that overwriting it
    /// counts events exactly.
    pub(crate) extra: Cell<u32>,
    /// First word of this thread's segment of the current chunk (0, or
    /// where a continued chunk's previous owner stopped).
    pub(crate) start: Cell<u32>,
    /// The thread is inside the recorder (writing an event, or in the slow
    /// path, a session's start or finish, a flow, its exit): a signal
    /// handler that records on this thread meanwhile must not touch the
    /// chunk or a lock the thread may hold; its events are dropped and
    /// counted (`nested`). See `record.rs`.
    pub(crate) busy: Cell<bool>,
    /// The file (`chunks::Chunks`) this writer is attached to (counted in
    /// its users until the writer moves to another file or the thread
    /// exits), null when none.
    pub(crate) attached: Cell<*const ()>,
    /// Events dropped because they came while the thread was [`busy`]
    /// (from a signal handler), not yet attributed to the lane in the
    /// metadata (they are counted in the file header's lost events when
    /// dropped). Atomic: the handler adds while the thread may be taking
    /// the count.
    ///
    /// [`busy`]: Writer::busy
    pub(crate) nested: AtomicU64,
}

impl Writer {
    /// A writer with no chunk, in no recorder.
    pub(crate) const fn new() -> Writer {
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
            busy: Cell::new(false),
            attached: Cell::new(std::ptr::null()),
            nested: AtomicU64::new(0),
        }
    }

    /// Starts over in the recorder of `epoch` (a new session, or the first
    /// event of a forked child): no chunk, no lane, nothing counted.
    pub(crate) fn reset(&self, epoch: u32) {
        self.epoch.set(epoch);
        self.idx.set(0);
        self.set_room(0);
        self.lane.set(0);
        self.seq.set(0);
        self.lost.set(0);
        self.overwritten.set(0);
        self.hdr.set(std::ptr::null_mut());
        self.retry_at.set(0);
    }

    /// Sets the chunk's room, and the fast paths' limit: the same when the
    /// process clock is the hardware counter, else 0.
    pub(crate) fn set_room(&self, n: u32) {
        self.room.set(n);
        self.cap.set(if epoch_uses_tsc(self.epoch.get()) {
            n
        } else {
            0
        });
    }

    /// Makes `c` the thread's chunk, writing from record `start`.
    pub(crate) fn install(&self, c: Chunk, start: u32) {
        self.recs.set(c.data as *mut u64);
        self.commit.set(c.committed);
        self.hdr.set(c.header);
        self.slot.set(c.slot);
        self.set_room(c.capacity);
        self.idx.set(start);
        self.seq.set(self.seq.get() + 1);
        self.lost.set(0);
        self.retry_at.set(0);
        self.need_base.set(true);
        self.extra.set(0);
        self.start.set(start);
    }

    /// The current chunk, taken from the writer, which no longer writes
    /// it (and no longer touches its header); `None` without one.
    pub(crate) fn take_chunk(&self) -> Option<Chunk> {
        let header = self.hdr.replace(std::ptr::null_mut());
        let capacity = self.room.get();
        self.set_room(0);
        self.idx.set(0);
        if header.is_null() {
            return None;
        }
        Some(Chunk {
            header,
            slot: self.slot.get(),
            data: self.recs.get() as *mut u8,
            committed: self.commit.get(),
            capacity,
        })
    }

    /// Forgets the chunk without giving it to anyone (in a forked child:
    /// the chunk is the parent's). Touches only this thread's cells.
    pub(crate) fn forget(&self) {
        self.attached.set(std::ptr::null());
        self.epoch.set(0);
        self.set_room(0);
        self.idx.set(0);
        self.hdr.set(std::ptr::null_mut());
    }

    /// Events this thread wrote into its segment of the current chunk.
    pub(crate) fn segment_events(&self) -> u64 {
        // Saturating: never below zero (`start <= idx`, and `extra` counts
        // words of the segment), but a panic here would be in a TLS
        // destructor.
        self.idx
            .get()
            .saturating_sub(self.start.get())
            .saturating_sub(self.extra.get()) as u64
    }

    /// Writes one word at `i` and commits it.
    ///
    /// # Safety
    /// `i < self.room` and the writer holds a live chunk.
    #[inline(always)]
    pub(crate) unsafe fn write_one(&self, i: u32, rec: u64) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            self.recs.get().add(i as usize).write(rec);
            // Release: the word above is visible before the count that
            // covers it (readers load the count with acquire).
            (*self.commit.get()).store(i + 1, Ordering::Release);
        }
        self.idx.set(i + 1);
    }

    /// Writes `words` from word `i` on and commits them with one release
    /// store, so a reader sees all or none.
    ///
    /// # Safety
    /// `i + words.len() <= self.room` and the writer holds a live chunk.
    #[inline(always)]
    pub(crate) unsafe fn write_words(&self, i: u32, words: &[u64]) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let p = self.recs.get().add(i as usize);
            for (k, &x) in words.iter().enumerate() {
                p.add(k).write(x);
            }
            // Release: all the words are visible before the count.
            (*self.commit.get()).store(i + words.len() as u32, Ordering::Release);
        }
        self.idx.set(i + words.len() as u32);
    }
}
