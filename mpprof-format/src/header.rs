//! The file header: the byte offset of each field, and [`FileHeader`],
//! which encodes and decodes them. The header takes [`crate::HEADER_SIZE`]
//! bytes; the fields below end at [`END`] and the rest is zero.
//!
//! Several fields change while the process runs (`NEXT_CHUNK`, `STATE`, the
//! loss counters): the recorder updates them in place with atomics at
//! these offsets, and [`FileHeader`] only writes their initial values.

/// `[u8; 8]`: [`crate::MAGIC`].
pub const MAGIC: usize = 0;
/// `u32`: [`crate::FORMAT_VERSION`] of the writer.
pub const VERSION: usize = 8;
/// `u32`: size of the file header in bytes (offset of chunk 0).
pub const HEADER_SIZE: usize = 12;
/// `u32`: size of a chunk in bytes, header included.
pub const CHUNK_SIZE: usize = 16;
/// `u16`: size of a chunk header.
pub const CHUNK_HEADER_SIZE: usize = 20;
/// `u16`: size of a record word: [`crate::RECORD_SIZE`] (16 in versions 1-3).
pub const RECORD_SIZE: usize = 22;
/// `u32`: number of chunks the file may hold (its budget).
pub const MAX_CHUNKS: usize = 24;
/// `u32`: overflow policy, see [`crate::Policy`].
pub const POLICY: usize = 28;
/// `u32` atomic: chunk slots claimed so far (slots `0..NEXT_CHUNK` may
/// hold chunks; a slot whose claim failed has no chunk magic).
pub const NEXT_CHUNK: usize = 32;
/// `u32` atomic: [`crate::STATE_RECORDING`] or [`crate::STATE_FINISHED`].
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

/// The fields of a file header, as numbers. [`FileHeader::decode`] takes
/// them as they are: checking them is the reader's job, which knows which
/// file it reads and can say what a bad value means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// [`CHUNK_SIZE`].
    pub chunk_size: u32,
    /// [`CHUNK_HEADER_SIZE`].
    pub chunk_header_size: u16,
    /// [`RECORD_SIZE`].
    pub record_size: u16,
    /// [`MAX_CHUNKS`].
    pub max_chunks: u32,
    /// [`POLICY`], as stored (see [`crate::Policy::from_u32`]).
    pub policy: u32,
    /// [`NEXT_CHUNK`].
    pub next_chunk: u32,
    /// [`STATE`].
    pub state: u32,
    /// [`LOST_EVENTS`].
    pub lost_events: u64,
    /// [`LOST_CHUNKS`].
    pub lost_chunks: u64,
    /// [`PROCESS_UID`].
    pub process_uid: u64,
    /// [`PID`].
    pub pid: u32,
    /// [`LOST_META`].
    pub lost_meta: u32,
}

impl FileHeader {
    /// The header a writer of this version starts a file with: nothing
    /// claimed, recording, nothing lost.
    pub fn new(
        chunk_size: u32,
        max_chunks: u32,
        policy: crate::Policy,
        uid: u64,
        pid: u32,
    ) -> FileHeader {
        FileHeader {
            magic: crate::MAGIC,
            version: crate::FORMAT_VERSION,
            header_size: crate::HEADER_SIZE as u32,
            chunk_size,
            chunk_header_size: crate::CHUNK_HEADER_SIZE as u16,
            record_size: crate::RECORD_SIZE as u16,
            max_chunks,
            policy: policy as u32,
            next_chunk: 0,
            state: crate::STATE_RECORDING,
            lost_events: 0,
            lost_chunks: 0,
            process_uid: uid,
            pid,
            lost_meta: 0,
        }
    }

    /// The header's first [`END`] bytes.
    pub fn encode(&self) -> [u8; END] {
        let mut b = [0u8; END];
        b[MAGIC..MAGIC + 8].copy_from_slice(&self.magic);
        put(&mut b, VERSION, &self.version.to_le_bytes());
        put(&mut b, HEADER_SIZE, &self.header_size.to_le_bytes());
        put(&mut b, CHUNK_SIZE, &self.chunk_size.to_le_bytes());
        put(
            &mut b,
            CHUNK_HEADER_SIZE,
            &self.chunk_header_size.to_le_bytes(),
        );
        put(&mut b, RECORD_SIZE, &self.record_size.to_le_bytes());
        put(&mut b, MAX_CHUNKS, &self.max_chunks.to_le_bytes());
        put(&mut b, POLICY, &self.policy.to_le_bytes());
        put(&mut b, NEXT_CHUNK, &self.next_chunk.to_le_bytes());
        put(&mut b, STATE, &self.state.to_le_bytes());
        put(&mut b, LOST_EVENTS, &self.lost_events.to_le_bytes());
        put(&mut b, LOST_CHUNKS, &self.lost_chunks.to_le_bytes());
        put(&mut b, PROCESS_UID, &self.process_uid.to_le_bytes());
        put(&mut b, PID, &self.pid.to_le_bytes());
        put(&mut b, LOST_META, &self.lost_meta.to_le_bytes());
        b
    }

    /// Reads the fields from the start of `b`; `None` if `b` is shorter
    /// than [`END`].
    pub fn decode(b: &[u8]) -> Option<FileHeader> {
        let b: &[u8; END] = b.get(..END)?.try_into().ok()?;
        Some(FileHeader {
            magic: b[MAGIC..MAGIC + 8].try_into().ok()?,
            version: u32_at(b, VERSION),
            header_size: u32_at(b, HEADER_SIZE),
            chunk_size: u32_at(b, CHUNK_SIZE),
            chunk_header_size: u16_at(b, CHUNK_HEADER_SIZE),
            record_size: u16_at(b, RECORD_SIZE),
            max_chunks: u32_at(b, MAX_CHUNKS),
            policy: u32_at(b, POLICY),
            next_chunk: u32_at(b, NEXT_CHUNK),
            state: u32_at(b, STATE),
            lost_events: u64_at(b, LOST_EVENTS),
            lost_chunks: u64_at(b, LOST_CHUNKS),
            process_uid: u64_at(b, PROCESS_UID),
            pid: u32_at(b, PID),
            lost_meta: u32_at(b, LOST_META),
        })
    }
}

pub(crate) fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
