//! The on-disk format of an mpprof process buffer file, shared by the
//! recorder (`mpprof`, which writes it) and the merge (`mpprof-merge`,
//! which reads it). `docs/FORMAT.md` draws the same layout as byte
//! diagrams; every offset used by either side is defined here, once, and
//! every structure is encoded here and decoded next to its encoder. This
//! crate does no I/O and builds on any OS.
//!
//! All integers are little-endian and fixed-size; nothing on disk is a
//! `usize`. A file is:
//!
//! ```text
//! [ file header: HEADER_SIZE bytes ][ chunk 0 ][ chunk 1 ] ... [ chunk max_chunks-1 ]
//! ```
//!
//! Chunk `i` starts at `HEADER_SIZE + i * chunk_size`. A chunk is either an
//! event chunk (8-byte record words of one thread, see [`word`]) or a
//! metadata chunk (an append-only log of postcard-encoded [`Meta`]
//! entries, framed by [`encode_entry`] and read back by [`Entries`]). Each
//! chunk commits its content with one counter in its own header, so
//! whatever a killed process committed is readable and nothing after the
//! counter is trusted.
//!
//! - [`header`]: the file header's offsets and [`FileHeader`];
//! - [`chunk`]: the chunk header's offsets and [`ChunkHeader`];
//! - [`kind`], [`word`], [`record_v3`]: event records;
//! - [`Meta`] and its entries, [`encode_entry`] / [`Entries`];
//! - [`resource`]: what the resource samples' counters measure;
//! - [`profile`]: stack samples, off-CPU intervals, modules and stacks;
//! - [`io`]: traced I/O calls and their channels;
//! - [`FlowId`], its bit conventions, the well-known flow names
//!   ([`flow_name`]) and its W3C `traceparent` form.
//!
//! **Bump [`FORMAT_VERSION`] whenever any layout below changes** (sizes are
//! pinned by tests next to the constants).
#![deny(unsafe_code)]
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

pub mod chunk;
mod flow;
pub mod header;
pub mod io;
mod meta;
pub mod profile;
pub mod resource;
mod traceparent;

pub use chunk::ChunkHeader;
pub use flow::{flow_name, FlowId, ParseFlowIdError};
pub use header::FileHeader;
pub use io::{Channel, ChannelKind};
pub use meta::*;
pub use profile::{Module, ProfilerInfo};
pub use resource::{Resource, SamplerInfo, Scope};
pub use traceparent::TraceparentError;

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
/// - 5: record kinds `SAMPLE`, `OFF_CPU`, `IO` and `SYSCALL`, and [`Meta::Profiler`],
///   [`Meta::Module`], [`Meta::Stack`] (see [`profile`]) and
///   [`Meta::Channel`] (see [`io`]). The layout of
///   version 4 is otherwise unchanged: a version 5 reader reads version 4
///   files as they are.
pub const FORMAT_VERSION: u32 = 5;

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
    /// Counter sample; followed by two payload words `[value][type]`: see
    /// [`crate::counter`].
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
    /// A stack sample (format 5): `site` is the sampled thread's OS thread
    /// id; two payload words, `[CLOCK_MONOTONIC ns][stack id | cpu << 32]`
    /// (see [`crate::profile`]). Not a span event: readers time it by its
    /// payload.
    pub const SAMPLE: u8 = 10;
    /// An off-CPU interval (format 5): `site` is the thread's OS thread id;
    /// two payload words, the CLOCK_MONOTONIC ns it was switched out and
    /// back in, the second with [`crate::profile::PREEMPTED`] set if it was
    /// preempted.
    pub const OFF_CPU: u8 = 11;
    /// A traced I/O call (format 5): the word's timestamp is the call's
    /// end, `site` the channel's id ([`crate::Meta::Channel`]); two payload
    /// words, `[start timestamp][call]` (see [`crate::io::Call::pack`]).
    pub const IO: u8 = 12;
    /// A traced system call (format 5, `MPPROF_SYSCALLS=1`): `site` is the
    /// thread's OS thread id; two payload words, `[CLOCK_MONOTONIC ns it
    /// began][call]` (see [`crate::profile::Syscall::pack`]).
    pub const SYSCALL: u8 = 13;
    /// The largest kind this version writes.
    pub const LAST: u8 = SYSCALL;
    /// The largest kind of version 4.
    pub const LAST_V4: u8 = BASE;
    /// The largest kind of versions 1-3.
    pub const LAST_V3: u8 = ASYNC_END;

    /// Payload words after a record of this kind (format 4). Versions 1-3
    /// have one 16-byte payload record after each kind with two words here.
    pub const fn payload_words(k: u8) -> u32 {
        match k {
            COUNTER | FLOW_OUT | FLOW_IN | ASYNC_BEGIN | ASYNC_END | SAMPLE | OFF_CPU | IO
            | SYSCALL => 2,
            BASE => 1,
            _ => 0,
        }
    }

    /// Whether a record of this kind carries a payload.
    pub const fn has_payload(k: u8) -> bool {
        payload_words(k) > 0
    }
}

/// The type word of a counter sample's payload (`[value][type]`): how to
/// read the value word. A reader that meets another type skips the sample
/// as malformed.
pub mod counter {
    /// The value is an `i64`.
    pub const INT: u64 = 0;
    /// The value holds the bits of an `f64` (any: NaN and the infinities
    /// too).
    pub const FLOAT: u64 = 1;
    /// The value is a `u64` (written for unsigned integers; readers before
    /// it read it as an `i64`, which differs only above `i64::MAX`).
    pub const UINT: u64 = 2;
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
        assert_eq!(FORMAT_VERSION, 5);
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
}
