//! The on-disk format of a process buffer file, shared by the recorder and
//! the merge. `docs/FORMAT.md` draws the same layout as byte diagrams; every
//! offset used by either side is defined here, once.
//!
//! All integers are little-endian and fixed-size; nothing on disk is a
//! `usize`. A file is:
//!
//! ```text
//! [ file header: HEADER_SIZE bytes ][ chunk 0 ][ chunk 1 ] ... [ chunk max_chunks-1 ]
//! ```
//!
//! Chunk `i` starts at `HEADER_SIZE + i * chunk_size`. A chunk is either an
//! event chunk (8-byte record words of one thread, see [`word`]) or a metadata chunk (an
//! append-only log of postcard-encoded [`Meta`] entries). Each chunk commits
//! its content with one counter in its own header, so whatever a killed
//! process committed is readable and nothing after the counter is trusted.
//!
//! **Bump [`FORMAT_VERSION`] whenever any layout below changes** (sizes are
//! pinned by tests next to the constants).

use serde::{Deserialize, Serialize};

use crate::flow::FlowId;

/// First eight bytes of every buffer file. The `\r\n` catches text-mode
/// mangling, like PNG's signature.
pub const MAGIC: [u8; 8] = *b"MPPROF\r\n";

/// Version of the layout described in this module. Bump it on any change of
/// a size or offset below, or of the meaning of a field.
///
/// - 1: first version.
/// - 2: chunk header fields `OVERWRITTEN` and `LOST_AFTER` (zero in version
///   1 files, so they read the same), and [`Meta::Handoff`].
/// - 3: record kinds `ASYNC_BEGIN` and `ASYNC_END`.
/// - 4: 8-byte record words (the timestamp's low half, callsite and kind
///   in one `u64`, see [`word`]) instead of 16-byte records, and the record
///   kind `BASE`, and [`Meta::Reused`] and [`Meta::Lost`]. Versions 1-3 use
///   16-byte records ([`record_v3`]).
pub const FORMAT_VERSION: u32 = 4;

/// Size of the file header; chunk 0 starts here. One page, so the chunk area
/// is page-aligned.
pub const HEADER_SIZE: u64 = 4096;

/// Size of a chunk header; the first record of an event chunk starts here.
pub const CHUNK_HEADER_SIZE: u32 = 64;

/// Size of one record word (an event, or a payload word after one).
pub const RECORD_SIZE: u32 = 8;

/// Size of one record in format versions 1-3.
pub const RECORD_SIZE_V3: u32 = 16;

/// Default chunk size (including its header).
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;

/// Smallest and largest chunk sizes a reader accepts.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// See [`MIN_CHUNK_SIZE`].
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

/// Byte offsets of the fields of the file header.
pub mod header {
    /// `[u8; 8]`: [`super::MAGIC`].
    pub const MAGIC: usize = 0;
    /// `u32`: [`super::FORMAT_VERSION`] of the writer.
    pub const VERSION: usize = 8;
    /// `u32`: size of the file header in bytes (offset of chunk 0).
    pub const HEADER_SIZE: usize = 12;
    /// `u32`: size of a chunk in bytes, header included.
    pub const CHUNK_SIZE: usize = 16;
    /// `u16`: size of a chunk header.
    pub const CHUNK_HEADER_SIZE: usize = 20;
    /// `u16`: size of a record word: [`super::RECORD_SIZE`] (16 in versions 1-3).
    pub const RECORD_SIZE: usize = 22;
    /// `u32`: number of chunks the file may hold (its budget).
    pub const MAX_CHUNKS: usize = 24;
    /// `u32`: overflow policy, see [`super::Policy`].
    pub const POLICY: usize = 28;
    /// `u32` atomic: chunk slots claimed so far (slots `0..NEXT_CHUNK` may
    /// hold chunks; a slot whose claim failed has no chunk magic).
    pub const NEXT_CHUNK: usize = 32;
    /// `u32` atomic: [`super::STATE_RECORDING`] or [`super::STATE_FINISHED`].
    pub const STATE: usize = 36;
    /// `u64` atomic: events that could not be recorded (budget, disk).
    pub const LOST_EVENTS: usize = 40;
    /// `u64` atomic: chunk claims that failed because the file could not
    /// grow (disk full, file size limit).
    pub const LOST_CHUNKS: usize = 48;
    /// `u64`: the process uid (random, unique per process).
    pub const PROCESS_UID: usize = 56;
    /// `u32`: pid of the writer (also in the metadata; here so a file whose
    /// metadata is unreadable can still be named).
    pub const PID: usize = 64;
    /// `u32` atomic: metadata entries that could not be stored (metadata
    /// space exhausted); names may be missing from the trace.
    pub const LOST_META: usize = 68;
    /// End of the defined fields; the rest of the header is zero.
    pub const END: usize = 72;
}

/// Byte offsets of the fields of a chunk header.
pub mod chunk {
    /// `u32`: [`super::CHUNK_MAGIC`], stored last (release) when the chunk is
    /// claimed; a chunk without it was never claimed or its claim failed.
    pub const MAGIC: usize = 0;
    /// `u16`: [`super::CHUNK_EVENTS`] or [`super::CHUNK_META`].
    pub const KIND: usize = 4;
    /// `u32`: the lane (thread index in the process, from 1); 0 for metadata.
    pub const LANE: usize = 8;
    /// `u32`: OS thread id of the writer.
    pub const TID: usize = 12;
    /// `u32`: sequence number of this chunk within its lane, from 0.
    pub const SEQ: usize = 16;
    /// `u32` atomic: committed record words (event chunks) or bytes
    /// (metadata chunks). Stored with release after the content it covers.
    pub const COMMITTED: usize = 20;
    /// `u64`: events lost by this lane (budget, disk) just before the first
    /// record of this chunk: a gap marker for the merge. Keep-last, in a
    /// chunk the lane reused as its own: plus the `LOST_BEFORE` of the
    /// header it replaced (losses before the overwritten events), so that
    /// the lane's losses survive the reuse.
    pub const LOST_BEFORE: usize = 24;
    /// `u64`: events of this lane overwritten by the flight recorder
    /// (`keep-last`) before this chunk was (re)claimed, cumulative. The
    /// lane's oldest surviving event follows a gap of the largest value.
    pub const OVERWRITTEN: usize = 32;
    /// `u64` atomic: events lost by this lane after this chunk filled up
    /// (no further chunk could be claimed). Meaningful on a lane's last chunk.
    pub const LOST_AFTER: usize = 40;
    /// End of the defined fields.
    pub const END: usize = 48;
}

/// Chunk header magic ("CHNK").
pub const CHUNK_MAGIC: u32 = u32::from_le_bytes(*b"CHNK");
/// Chunk kind: event records of one thread.
pub const CHUNK_EVENTS: u16 = 1;
/// Chunk kind: metadata log.
pub const CHUNK_META: u16 = 2;

/// File state: the process may still be writing, or died without finishing.
pub const STATE_RECORDING: u32 = 0;
/// File state: the process finished the file (clean exit).
pub const STATE_FINISHED: u32 = 1;

/// What a process does when its buffer budget is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u32)]
pub enum Policy {
    /// Stop recording and count what is lost (default).
    KeepFirst = 0,
    /// Flight recorder: each thread reuses its own oldest chunk.
    KeepLast = 1,
}

impl Policy {
    /// Decodes the on-disk value.
    pub fn from_u32(v: u32) -> Option<Policy> {
        match v {
            0 => Some(Policy::KeepFirst),
            1 => Some(Policy::KeepLast),
            _ => None,
        }
    }
}

/// Record kinds (bits 0..4 of a record word; byte 12 of a version 1-3
/// record).
pub mod kind {
    /// Span entered; `site` is the callsite.
    pub const ENTER: u8 = 1;
    /// Span exited; `site` is the callsite.
    pub const EXIT: u8 = 2;
    /// Instant event.
    pub const INSTANT: u8 = 3;
    /// Counter sample; followed by two payload words `[value][type]`, where
    /// type 0 means the value is an i64 and 1 an f64.
    pub const COUNTER: u8 = 4;
    /// Flow leaves this thread; followed by two payload words holding the
    /// [`crate::FlowId`] as `[process][seq]`.
    pub const FLOW_OUT: u8 = 5;
    /// Flow arrives on this thread; payload as for `FLOW_OUT`.
    pub const FLOW_IN: u8 = 6;
    /// An async span (a future's whole life, across polls and threads)
    /// begins; followed by two payload words `[async id][0]`. The id is
    /// unique within the process. (Format 3.)
    pub const ASYNC_BEGIN: u8 = 7;
    /// The async span with the payload's id ends (the future completed or
    /// was dropped). (Format 3.)
    pub const ASYNC_END: u8 = 8;
    /// Time base (format 4): followed by one payload word, a full
    /// timestamp. The records after it in the same chunk segment take the
    /// high half of their timestamps from it. Every segment starts with one;
    /// the writer adds another when the high half changes. Not an event: the
    /// reader consumes it.
    pub const BASE: u8 = 9;
    /// The largest kind this version writes.
    pub const LAST: u8 = BASE;
    /// The largest kind of versions 1-3.
    pub const LAST_V3: u8 = ASYNC_END;

    /// Payload words after a record of this kind (format 4). Versions 1-3
    /// have one 16-byte payload record after each kind with two words here.
    pub const fn payload_words(k: u8) -> u32 {
        match k {
            COUNTER | FLOW_OUT | FLOW_IN | ASYNC_BEGIN | ASYNC_END => 2,
            BASE => 1,
            _ => 0,
        }
    }

    /// Whether a record of this kind carries a payload.
    pub const fn has_payload(k: u8) -> bool {
        payload_words(k) > 0
    }
}

/// The 8-byte record word of format 4, little-endian `u64`:
///
/// ```text
/// bits 63..32  timestamp, low 32 bits; the high 32 bits are those of the
///              segment's last BASE
/// bits 31..4   callsite id (28 bits)
/// bits  3..0   kind
/// ```
///
/// The writer stores an event word only when the high half of its timestamp
/// equals the high half of the last `BASE` (one compare on the hot path);
/// otherwise (every 2^32 ticks, about 1.4 s of TSC at 3 GHz or 4.3 s of
/// nanoseconds, or after a thread sat idle) it writes a new `BASE` first.
/// Payload words (after `COUNTER`, flows, async spans and `BASE`) are plain
/// `u64`s.
pub mod word {
    /// Bits of the kind field.
    pub const KIND_BITS: u32 = 4;
    /// Position of the callsite field.
    pub const SITE_SHIFT: u32 = KIND_BITS;
    /// Bits of the callsite field.
    pub const SITE_BITS: u32 = 28;
    /// Position of the timestamp's low half.
    pub const TS_SHIFT: u32 = 32;
    /// The largest callsite id a word can hold.
    pub const MAX_SITE: u32 = (1 << SITE_BITS) - 1;

    /// `site << 4 | kind`: the low 32 bits of a record word.
    #[inline(always)]
    pub const fn site_kind(site: u32, kind: u8) -> u64 {
        ((site as u64) << SITE_SHIFT) | kind as u64
    }

    /// A record word for the timestamp `ts` (only its low half is kept) and
    /// `site_kind`.
    #[inline(always)]
    pub const fn new(ts: u64, site_kind: u64) -> u64 {
        (ts << TS_SHIFT) | site_kind
    }

    /// The high half of a timestamp: what a word's timestamp shares with its
    /// `BASE`.
    #[inline(always)]
    pub const fn high(ts: u64) -> u32 {
        (ts >> TS_SHIFT) as u32
    }

    /// The kind field.
    pub const fn kind(w: u64) -> u8 {
        (w & ((1 << KIND_BITS) - 1)) as u8
    }

    /// The callsite field.
    pub const fn site(w: u64) -> u32 {
        ((w >> SITE_SHIFT) & MAX_SITE as u64) as u32
    }

    /// The full timestamp of word `w` in a segment whose last `BASE` is `base`.
    pub const fn ts(w: u64, base: u64) -> u64 {
        (base & !((1 << TS_SHIFT) - 1)) | (w >> TS_SHIFT)
    }
}

/// Byte offsets inside a 16-byte record of format versions 1-3 (read, no
/// longer written). A payload record followed kinds with payload.
pub mod record_v3 {
    /// `u64`: timestamp in the process's clock (see [`super::ClockKind`]).
    pub const TS: usize = 0;
    /// `u32`: callsite id.
    pub const SITE: usize = 8;
    /// `u8`: record kind, see [`super::kind`].
    pub const KIND: usize = 12;
}

/// Which clock a process's timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClockKind {
    /// Raw time-stamp counter ticks (x86_64 `rdtsc`, aarch64 `cntvct_el0`);
    /// the merge maps them to CLOCK_MONOTONIC with the anchors.
    Tsc,
    /// CLOCK_MONOTONIC nanoseconds.
    Monotonic,
}

/// A simultaneous reading of the process clock, CLOCK_MONOTONIC and
/// CLOCK_REALTIME. `ts` is the midpoint of two clock readings taken around
/// the two `clock_gettime` calls; `width` is their distance (the anchor's
/// uncertainty, in clock units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Process clock.
    pub ts: u64,
    /// Uncertainty of `ts`, in process clock units.
    pub width: u32,
    /// CLOCK_MONOTONIC, ns.
    pub mono_ns: u64,
    /// CLOCK_REALTIME, ns since the Unix epoch.
    pub real_ns: u64,
}

/// Facts about the process, written once as the first metadata entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// OS process id.
    pub pid: u32,
    /// Parent's process id.
    pub ppid: u32,
    /// Random 64-bit process uid (also the `process` half of its flow ids).
    pub uid: u64,
    /// Flow that started this process (spawn or fork), if any.
    pub parent_flow: Option<FlowId>,
    /// Executable path.
    pub exe: String,
    /// Command line.
    pub argv: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// Host identity used for clock domains: the kernel boot id, or
    /// `MPPROF_HOST_ID` when set.
    pub host_id: String,
    /// Time namespace id (inode of `/proc/self/ns/time`), 0 if unknown.
    pub time_ns: u64,
    /// Source of the record timestamps.
    pub clock: ClockKind,
    /// Estimated clock frequency (ticks per second) measured or inherited
    /// by the writer; the merge prefers a fit of the anchors.
    pub clock_hz: f64,
    /// Overflow policy as configured.
    pub policy: Policy,
}

/// What a callsite is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SiteKind {
    /// A span (function or scope).
    Span,
    /// An instant event.
    Event,
    /// A counter.
    Counter,
    /// A flow endpoint name.
    Flow,
}

/// [`Meta::Handoff`]: a thread took over the rest of a chunk that a
/// finished thread left partly used: records `start..` of chunk `slot`
/// belong to `lane`. Encoded exactly as the struct variant it was before
/// (postcard writes a newtype variant's struct as the variant's fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// Chunk slot.
    pub slot: u32,
    /// First record of the new owner.
    pub start: u32,
    /// The new owner's lane.
    pub lane: u32,
    /// Its OS thread id.
    pub tid: u32,
    /// Sequence number of this segment within the lane.
    pub seq: u32,
    /// Events the lane lost just before this segment.
    pub lost_before: u64,
}

/// [`Meta::Reused`]: the flight recorder (`keep-last`) gave chunk `slot`,
/// which another thread wrote last or which other threads had continued,
/// to the thread of `lane`. Written before the chunk header is
/// re-initialised: [`Meta::Handoff`] entries of `slot` before it describe
/// the old content and no longer apply once the header shows `lane` with a
/// `seq` of at least `seq`. A chunk a thread reuses that only it ever wrote
/// gets no entry. Encoded exactly as the struct variant it was before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reused {
    /// Chunk slot.
    pub slot: u32,
    /// The new owner's lane, as in the re-initialised header.
    pub lane: u32,
    /// The `seq` in the re-initialised header.
    pub seq: u32,
    /// Process clock when the chunk was taken: every overwritten event
    /// is older.
    pub ts: u64,
    /// Lane in the chunk header being replaced.
    pub prev_lane: u32,
    /// `overwritten` in the chunk header being replaced: that lane's
    /// cumulative count, kept here because the header is gone.
    pub prev_overwritten: u64,
    /// The events overwritten, per segment of the old content in
    /// order: `(lane, events)` (the header's lane first, then each
    /// hand-off's).
    pub overwritten: Vec<(u32, u64)>,
}

/// [`Meta::Lost`]: the thread of `lane` lost `events` events that no chunk
/// header or hand-off counts. A thread that never had a chunk writes its
/// losses when it exits, and the recorder writes those of such threads
/// still running when it finishes; a flight-recorder thread that took over
/// a chunk another thread wrote writes the replaced header's
/// `LOST_BEFORE`. Entries of one lane add up; each loss is counted by one
/// entry or one header, never both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// The lane.
    pub lane: u32,
    /// Its OS thread id.
    pub tid: u32,
    /// Its thread name (may be empty; cut at 256 bytes).
    pub name: String,
    /// Process clock when the entry was written: every event it counts is
    /// older.
    pub ts: u64,
    /// Events lost.
    pub events: u64,
}

/// One entry of the metadata log. New variants are appended at the end
/// (postcard encodes the variant index).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Meta {
    /// Process facts; the first entry of the log.
    Process(ProcessInfo),
    /// A callsite: id as used in records, display name, full path, source location.
    Callsite {
        /// Id used in records.
        id: u32,
        /// Kind.
        kind: SiteKind,
        /// Display name.
        name: String,
        /// Full path (module path, for functions including the function).
        path: String,
        /// Source file.
        file: String,
        /// Source line.
        line: u32,
    },
    /// A thread (lane) and its name.
    Thread {
        /// Lane as in chunk headers.
        lane: u32,
        /// OS thread id.
        tid: u32,
        /// Thread name (may be empty).
        name: String,
    },
    /// A clock anchor.
    Anchor(Anchor),
    /// A thread took over the rest of a chunk that a finished thread left
    /// partly used (added in format 2; see [`Handoff`]).
    Handoff(Handoff),
    /// The flight recorder (`keep-last`) gave a chunk that another thread
    /// wrote last, or that other threads had continued, to another thread
    /// (added in format 4; see [`Reused`]).
    Reused(Reused),
    /// Events a thread lost that no chunk header or hand-off counts (added
    /// in format 4; see [`Lost`]).
    Lost(Lost),
}

impl Meta {
    /// Number of variants this version knows: an entry whose first byte
    /// (postcard's variant index) is at least this was written by a newer
    /// writer.
    pub const VARIANTS: u32 = 7;
}

/// Largest encoded metadata entry (bytes), so an entry always fits one
/// metadata chunk. The writer truncates the process entry's strings to stay
/// under it; any other entry over it is not stored and counted in the
/// header's `LOST_META`.
pub const MAX_META_ENTRY: usize = 3 * 1024;

/// Bytes of the length prefix of a metadata entry (`u32`).
pub const META_LEN_SIZE: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    // If one of these fails you changed the on-disk layout: bump FORMAT_VERSION,
    // update docs/FORMAT.md and add a golden file for the new version.
    #[test]
    fn record_layout_is_pinned() {
        assert_eq!(RECORD_SIZE, 8);
        assert_eq!(RECORD_SIZE_V3, 16);
        assert_eq!(CHUNK_HEADER_SIZE, 64);
        assert_eq!(HEADER_SIZE, 4096);
        assert_eq!(FORMAT_VERSION, 4);
        assert!(header::END <= HEADER_SIZE as usize);
        assert!(chunk::END <= CHUNK_HEADER_SIZE as usize);
        let w = word::new(
            0x7788_AABB_CCDD_EEFF,
            word::site_kind(0x987_6543, kind::EXIT),
        );
        assert_eq!(w.to_le_bytes(), 0xCCDD_EEFF_9876_5432u64.to_le_bytes());
        assert_eq!(word::kind(w), kind::EXIT);
        assert_eq!(word::site(w), 0x987_6543);
        assert_eq!(word::high(0x7788_AABB_CCDD_EEFF), 0x7788_AABB);
        assert_eq!(word::ts(w, 0x7788_AABB_0000_0001), 0x7788_AABB_CCDD_EEFF);
        assert_eq!(
            word::site(word::site_kind(word::MAX_SITE, kind::LAST)),
            word::MAX_SITE
        );
        const { assert!(kind::LAST < 1 << word::KIND_BITS) };
    }

    #[test]
    fn meta_roundtrips_through_postcard() {
        let m = Meta::Thread {
            lane: 3,
            tid: 77,
            name: "worker".into(),
        };
        let bytes = postcard::to_stdvec(&m).unwrap();
        assert_eq!(postcard::from_bytes::<Meta>(&bytes).unwrap(), m);
    }

    // Variants only grow at the end: the first byte is the variant index.
    // `Handoff` and `Reused` were struct variants until they became newtype
    // variants over shared structs; postcard encodes both alike (index, then
    // the fields in order), and these bytes are what the struct variants
    // wrote, so files on disk read the same.
    #[test]
    fn handoff_and_reused_encode_as_variants_4_and_5() {
        let h = Meta::Handoff(Handoff {
            slot: 7,
            start: 300,
            lane: 3,
            tid: 70000,
            seq: 2,
            lost_before: 5,
        });
        let bytes = postcard::to_stdvec(&h).unwrap();
        assert_eq!(bytes, [4, 7, 172, 2, 3, 240, 162, 4, 2, 5]);
        assert_eq!(postcard::from_bytes::<Meta>(&bytes).unwrap(), h);
        let m = Meta::Reused(Reused {
            slot: 7,
            lane: 3,
            seq: 2,
            ts: 1,
            prev_lane: 1,
            prev_overwritten: 0,
            overwritten: vec![(1, 100), (2, 5)],
        });
        let bytes = postcard::to_stdvec(&m).unwrap();
        assert_eq!(bytes, [5, 7, 3, 2, 1, 1, 0, 2, 1, 100, 2, 5]);
        assert_eq!(postcard::from_bytes::<Meta>(&bytes).unwrap(), m);
    }

    #[test]
    fn lost_is_meta_variant_6_and_the_last() {
        let m = Meta::Lost(Lost {
            lane: 3,
            tid: 77,
            name: "w".into(),
            ts: 1,
            events: 300,
        });
        let bytes = postcard::to_stdvec(&m).unwrap();
        assert_eq!(bytes, [6, 3, 77, 1, b'w', 1, 0xAC, 0x02]);
        assert_eq!(postcard::from_bytes::<Meta>(&bytes).unwrap(), m);
        assert_eq!(Meta::VARIANTS, 7);
        assert!(postcard::from_bytes::<Meta>(&[7]).is_err());
    }
}
