//! The chunk header: the byte offset of each field, and [`ChunkHeader`],
//! which encodes and decodes them. A chunk header takes
//! [`crate::CHUNK_HEADER_SIZE`] bytes; the fields end at [`END`].
//!
//! `MAGIC` and `COMMITTED` publish the chunk and its content: the
//! recorder stores them with atomics at these offsets (the magic last,
//! with release), so [`ChunkHeader::encode`] gives the other fields' bytes
//! and the recorder copies those.

use crate::header::{put, u16_at, u32_at, u64_at};

/// `u32`: [`crate::CHUNK_MAGIC`], stored last (release) when the chunk is
/// claimed; a chunk without it was never claimed or its claim failed.
pub const MAGIC: usize = 0;
/// `u16`: [`crate::CHUNK_EVENTS`] or [`crate::CHUNK_META`].
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

/// The fields of a chunk header, as numbers (unchecked, as for
/// [`crate::FileHeader`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkHeader {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`KIND`].
    pub kind: u16,
    /// [`LANE`].
    pub lane: u32,
    /// [`TID`].
    pub tid: u32,
    /// [`SEQ`].
    pub seq: u32,
    /// [`COMMITTED`].
    pub committed: u32,
    /// [`LOST_BEFORE`].
    pub lost_before: u64,
    /// [`OVERWRITTEN`].
    pub overwritten: u64,
    /// [`LOST_AFTER`].
    pub lost_after: u64,
}

impl ChunkHeader {
    /// The header's first [`END`] bytes.
    pub fn encode(&self) -> [u8; END] {
        let mut b = [0u8; END];
        put(&mut b, MAGIC, &self.magic.to_le_bytes());
        put(&mut b, KIND, &self.kind.to_le_bytes());
        put(&mut b, LANE, &self.lane.to_le_bytes());
        put(&mut b, TID, &self.tid.to_le_bytes());
        put(&mut b, SEQ, &self.seq.to_le_bytes());
        put(&mut b, COMMITTED, &self.committed.to_le_bytes());
        put(&mut b, LOST_BEFORE, &self.lost_before.to_le_bytes());
        put(&mut b, OVERWRITTEN, &self.overwritten.to_le_bytes());
        put(&mut b, LOST_AFTER, &self.lost_after.to_le_bytes());
        b
    }

    /// Reads the fields from the start of `b`; `None` if `b` is shorter
    /// than [`END`].
    pub fn decode(b: &[u8]) -> Option<ChunkHeader> {
        let b = b.get(..END)?;
        Some(ChunkHeader {
            magic: u32_at(b, MAGIC),
            kind: u16_at(b, KIND),
            lane: u32_at(b, LANE),
            tid: u32_at(b, TID),
            seq: u32_at(b, SEQ),
            committed: u32_at(b, COMMITTED),
            lost_before: u64_at(b, LOST_BEFORE),
            overwritten: u64_at(b, OVERWRITTEN),
            lost_after: u64_at(b, LOST_AFTER),
        })
    }
}
