//! The per-process buffer file: creation, slot claims, chunk headers, the
//! metadata log.
//!
//! The file is mapped `MAP_SHARED` for its whole budget up front but only
//! grows (by writing the chunk's zeros) when a chunk is claimed, so pages
//! are backed by reserved disk blocks before anyone writes them: a full disk
//! turns into a failed claim and counted losses, never into SIGBUS.
//!
//! A buffer can also live in anonymous memory ([`ProcessBuffer::in_memory`],
//! with a byte limit standing in for the disk), so that the chunk supply
//! and the flight recorder are unit-tested on plain memory, full disk
//! included.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arrayvec::ArrayVec;
use memmap2::MmapRaw;

use crate::env;
use crate::format::{self, chunk, header, MetaRef, Policy};
use crate::sync::lock;

/// Layout and budget of one process file.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Bytes per chunk, header included.
    pub chunk_size: u32,
    /// Chunks the file may hold.
    pub max_chunks: u32,
    /// What to do when the budget is used.
    pub policy: Policy,
}

/// Chunks always kept for metadata: event chunks stop this many slots short
/// of the budget, so names can still be written after the events ran out.
pub const META_RESERVE: u32 = 2;

/// The warning that the budget holds too few chunks was given.
static SMALL_BUDGET_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Slots a budget should hold when the chunk size is the default: a budget
/// too small for that many default chunks gets smaller chunks (see
/// [`Config::from_env`]), so that several threads, and a flight recorder's
/// history, have chunks to work with.
pub const MIN_SLOTS: u64 = 16;

/// The chunk size and the budget in slots, for a budget of `budget` bytes
/// and a chunk size `chunk` (given explicitly or the default): see
/// [`Config::from_env`].
fn sizes(budget: u64, mut chunk: u32, explicit: bool) -> (u32, u32) {
    if !explicit {
        while budget / (chunk as u64) < MIN_SLOTS && chunk / 2 >= format::MIN_CHUNK_SIZE {
            chunk /= 2;
        }
    }
    let slots = (budget / chunk as u64).clamp(META_RESERVE as u64 + 2, u32::MAX as u64 / 2);
    (chunk, slots as u32)
}

impl Config {
    /// Reads `MPPROF_BUFFER_MB` (default 64), `MPPROF_CHUNK_KB` (default
    /// 256) and `MPPROF_OVERFLOW` (`keep-first`, default, or `keep-last`).
    /// Invalid values fall back to the default with a warning.
    ///
    /// Without `MPPROF_CHUNK_KB`, a budget that holds fewer than
    /// [`MIN_SLOTS`] default chunks gets chunks halved until it holds that
    /// many (1 MiB: 64 KiB chunks). A chunk size given explicitly is kept;
    /// if the budget then holds fewer than the 4 slots a file needs, the
    /// file gets 4 and a warning says it outgrows the budget.
    pub fn from_env() -> Config {
        let chunk_kb = env::number(
            "MPPROF_CHUNK_KB",
            (format::DEFAULT_CHUNK_SIZE / 1024) as u64,
            (format::MIN_CHUNK_SIZE / 1024) as u64,
            (format::MAX_CHUNK_SIZE / 1024) as u64,
        );
        let budget_mb = env::number("MPPROF_BUFFER_MB", 64, 1, 1 << 20);
        let explicit = env::raw("MPPROF_CHUNK_KB").is_some();
        let (chunk_size, max_chunks) = sizes(budget_mb << 20, (chunk_kb * 1024) as u32, explicit);
        if (max_chunks as u64) * chunk_size as u64 > budget_mb << 20 {
            crate::warn::warn_once(
                &SMALL_BUDGET_WARNED,
                format_args!(
                    "MPPROF_BUFFER_MB={budget_mb} holds fewer than {} chunks of MPPROF_CHUNK_KB={chunk_kb}; \
                     the buffer file may grow to {} KiB",
                    META_RESERVE + 2,
                    max_chunks as u64 * chunk_kb
                ),
            );
        }
        let policy = match env::choice(
            "MPPROF_OVERFLOW",
            &["keep-first", "keep-last"],
            "keep-first",
        ) {
            "keep-last" => Policy::KeepLast,
            _ => Policy::KeepFirst,
        };
        Config {
            chunk_size,
            max_chunks,
            policy,
        }
    }

    /// Bytes the file may grow to.
    pub fn file_len(&self) -> u64 {
        format::HEADER_SIZE + self.chunk_size as u64 * self.max_chunks as u64
    }
}

/// A claimed chunk: where its content starts and how much it holds. Not
/// `Copy`: a chunk has one owner at a time (a thread writing it, the
/// metadata log, or a list of the chunk supply), and passing it on moves
/// it.
#[derive(Debug)]
pub struct Chunk {
    /// The chunk header.
    pub header: *mut u8,
    /// Slot index in the file.
    pub slot: u32,
    /// First byte after the chunk header.
    pub data: *mut u8,
    /// The chunk's commit counter.
    pub committed: *const AtomicU32,
    /// Capacity in records (event chunks) or bytes (metadata chunks): what
    /// of the chunk is reserved on disk so far (see [`FIRST_RESERVE`] and
    /// [`ProcessBuffer::grow`]).
    pub capacity: u32,
}

/// Bytes of a chunk (its header included) reserved on disk when a thread
/// claims it; the rest is reserved as the chunk fills, twice as much each
/// time ([`ProcessBuffer::grow`]), so a process that records little costs
/// little disk. A chunk the preparer made ready is reserved whole. Every
/// chunk handed out has at least this much (or the whole chunk, if
/// smaller) reserved: room for a time base and an event with payload.
pub const FIRST_RESERVE: u32 = 4096;

// SAFETY: the pointers are into the process-wide mapping, which is never
// unmapped; a Chunk moves between threads only through the recorder's
// hand-off list, whose mutex orders the old owner's writes before the new
// owner's.
unsafe impl Send for Chunk {}

/// Why a chunk could not be claimed.
#[derive(Debug)]
pub enum ClaimError {
    /// The budget (`MPPROF_BUFFER_MB`) is used up.
    Budget,
    /// The file could not grow (disk full, file size limit, I/O error).
    Io(io::Error),
}

/// One process's mapped buffer file.
pub struct ProcessBuffer {
    /// Slots whose disk reservation failed (disk full): tried again first,
    /// so a disk that stays full for a while does not use up the budget.
    /// Of fixed capacity (no allocation on the slow path): a slot that
    /// fails when it is full is not tried again.
    failed: std::sync::Mutex<ArrayVec<u32, 64>>,
    map: MmapRaw,
    backing: Backing,
    config: Config,
}

/// What backs a buffer's mapping.
enum Backing {
    /// A file, grown by reserving each chunk's blocks before use.
    File {
        /// The open file.
        file: File,
        /// Its path.
        path: PathBuf,
    },
    /// Anonymous memory (unit tests): a reservation past `limit` bytes
    /// fails as a full disk would. What is not reserved is read-only, so
    /// that a write past a reservation (a SIGBUS on a full disk, with a
    /// file) crashes the test.
    #[cfg_attr(not(test), allow(dead_code))]
    Memory {
        /// Bytes of the buffer that can be reserved.
        limit: AtomicU64,
        /// Bytes reserved so far (the file's disk use).
        reserved: AtomicU64,
    },
}

// SAFETY: the mapping is only accessed through atomics (shared fields) or by
// the single thread that claimed a chunk (its content).
unsafe impl Sync for ProcessBuffer {}
// SAFETY: as above; the raw pointers inside MmapRaw are to a process-wide mapping.
unsafe impl Send for ProcessBuffer {}

impl ProcessBuffer {
    /// Creates `path` exclusively (never following a symlink), mode 0600,
    /// writes the header and maps the whole budget.
    pub fn create(path: &Path, config: Config, uid: u64, pid: u32) -> io::Result<ProcessBuffer> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        reserve(&file, 0, format::HEADER_SIZE)?;
        let map = memmap2::MmapOptions::new()
            .len(config.file_len() as usize)
            .map_raw(&file)?;
        let backing = Backing::File {
            file,
            path: path.to_owned(),
        };
        Ok(ProcessBuffer::init(map, backing, config, uid, pid))
    }

    /// A buffer in anonymous memory, as [`ProcessBuffer::create`] makes
    /// one in a file; reserving space past `limit` bytes of it fails like
    /// a full disk (`u64::MAX`: never).
    #[cfg(test)]
    pub fn in_memory(config: Config, uid: u64, pid: u32, limit: u64) -> io::Result<ProcessBuffer> {
        let map = memmap2::MmapOptions::new()
            .len(config.file_len() as usize)
            .map_anon()?;
        let backing = Backing::Memory {
            limit: AtomicU64::new(limit),
            reserved: AtomicU64::new(0),
        };
        let map: MmapRaw = map.into();
        // SAFETY: the whole mapping made above, made read-only; `reserve`
        // makes what it reserves writable.
        unsafe {
            libc::mprotect(
                map.as_mut_ptr() as *mut libc::c_void,
                config.file_len() as usize,
                libc::PROT_READ,
            )
        };
        let buf = ProcessBuffer {
            failed: std::sync::Mutex::new(ArrayVec::new()),
            map,
            backing,
            config,
        };
        buf.reserve(0, format::HEADER_SIZE)?;
        let ProcessBuffer { map, backing, .. } = buf;
        Ok(ProcessBuffer::init(map, backing, config, uid, pid))
    }

    /// Memory only: the bytes reserved so far, what the file would take on
    /// disk.
    #[cfg(test)]
    pub fn memory_reserved(&self) -> u64 {
        match &self.backing {
            // Relaxed: read by the same test thread.
            Backing::Memory { reserved, .. } => reserved.load(Ordering::Relaxed),
            Backing::File { .. } => 0,
        }
    }

    /// The bytes of the buffer as a reader would find them in the file: the
    /// header and the slots claimed so far.
    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<u8> {
        let slots = self.atomic_u32(header::NEXT_CHUNK).load(Ordering::Acquire);
        let len = format::HEADER_SIZE as usize + slots as usize * self.config.chunk_size as usize;
        // SAFETY: the range is inside the mapping; the test that calls this
        // writes nothing meanwhile (it runs its "threads" one at a time).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) }.to_vec()
    }

    /// Memory only: lets reservations reach `limit` bytes (a disk that
    /// filled up, or was freed).
    #[cfg(test)]
    pub fn set_memory_limit(&self, limit: u64) {
        if let Backing::Memory { limit: l, .. } = &self.backing {
            // Relaxed: read by the same test thread.
            l.store(limit, Ordering::Relaxed);
        }
    }

    fn init(map: MmapRaw, backing: Backing, config: Config, uid: u64, pid: u32) -> ProcessBuffer {
        let buf = ProcessBuffer {
            failed: std::sync::Mutex::new(ArrayVec::new()),
            map,
            backing,
            config,
        };
        let h = format::FileHeader::new(
            config.chunk_size,
            config.max_chunks,
            config.policy,
            uid,
            pid,
        )
        .encode();
        // SAFETY: the header page is inside the file (reserved above) and no
        // other thread knows this mapping yet.
        unsafe {
            buf.map
                .as_mut_ptr()
                .copy_from_nonoverlapping(h.as_ptr(), h.len())
        };
        buf
    }

    /// The overflow policy.
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// The budget in chunks.
    pub fn max_chunks(&self) -> u32 {
        self.config.max_chunks
    }

    /// Chunk slots taken so far (at most the budget).
    pub fn slots_taken(&self) -> u32 {
        // Relaxed: a level for a decision that tolerates a stale value.
        self.atomic_u32(header::NEXT_CHUNK)
            .load(Ordering::Relaxed)
            .min(self.config.max_chunks)
    }

    /// Path of the file (for messages; a buffer in memory has none).
    pub fn path(&self) -> &Path {
        match &self.backing {
            Backing::File { path, .. } => path,
            Backing::Memory { .. } => Path::new("(memory)"),
        }
    }

    fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offset is a 4-aligned header field inside the mapped,
        // reserved header page; AtomicU32 has the layout of u32.
        unsafe { &*(self.map.as_mut_ptr().add(offset) as *const AtomicU32) }
    }

    fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in atomic_u32, with an 8-aligned field.
        unsafe { &*(self.map.as_mut_ptr().add(offset) as *const AtomicU64) }
    }

    /// Counts events that could not be recorded.
    pub fn add_lost_events(&self, n: u64) {
        // Relaxed: a statistic; the reader looks at it after the process ends.
        self.atomic_u64(header::LOST_EVENTS)
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts metadata entries that could not be stored.
    pub fn add_lost_meta(&self) {
        // Relaxed: a statistic, as above.
        self.atomic_u32(header::LOST_META)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the file finished (clean exit).
    pub fn set_finished(&self) {
        // Release: everything this thread wrote before (final anchor) is
        // visible to a concurrent reader that sees the flag.
        self.atomic_u32(header::STATE)
            .store(format::STATE_FINISHED, Ordering::Release);
    }

    /// Claims a fresh chunk slot and reserves its disk space: the first
    /// [`FIRST_RESERVE`] bytes of a lane's first chunk (a thread may record
    /// little), the whole of a later one (the thread filled a chunk: it is
    /// busy, and one `pwrite` costs less than six). Event chunks leave
    /// [`META_RESERVE`] slots for metadata.
    pub fn claim(&self, init: &ChunkInit) -> Result<Chunk, ClaimError> {
        let len = if init.kind == format::CHUNK_EVENTS && init.seq > 0 {
            self.config.chunk_size
        } else {
            self.first_reserve()
        };
        let slot = self.reserve_slot(init.kind, len, false)?;
        // SAFETY: the slot is inside the mapping (slot < max_chunks), its
        // first `len` bytes were just reserved, and this thread owns it
        // exclusively.
        unsafe { Ok(self.init_chunk(slot, init, len)) }
    }

    /// Bytes of a chunk reserved when it is claimed: [`FIRST_RESERVE`], or
    /// the whole chunk if smaller.
    fn first_reserve(&self) -> u32 {
        FIRST_RESERVE.min(self.config.chunk_size)
    }

    /// Takes the next free slot and reserves the first `len` bytes of it
    /// on disk, without publishing a chunk there (see
    /// [`ProcessBuffer::publish`]). With `populate`, also maps those pages
    /// into the page tables, so the thread that will write them takes no
    /// page fault.
    pub fn reserve_slot(&self, kind: u16, len: u32, populate: bool) -> Result<u32, ClaimError> {
        let limit = match kind {
            format::CHUNK_META => self.config.max_chunks,
            _ => self.config.max_chunks - META_RESERVE,
        };
        let retry = {
            let mut failed = lock(&self.failed);
            match failed.last() {
                Some(&s) if s < limit => failed.pop(),
                _ => None,
            }
        };
        let slot = match retry {
            Some(s) => s,
            None => self.next_slot(limit)?,
        };
        let offset = self.chunk_offset(slot);
        if let Err(e) = self.reserve_part(offset, len as u64) {
            // Full: the slot is given up (counted in `lost_chunks`).
            let _ = lock(&self.failed).try_push(slot);
            return Err(ClaimError::Io(e));
        }
        if populate {
            const MADV_POPULATE_WRITE: libc::c_int = 23;
            // SAFETY: the range is inside the mapping and backed by the file
            // (just written); populating page tables has no other effect. An
            // old kernel answers EINVAL, which only means no prefaulting.
            unsafe {
                libc::madvise(
                    self.map.as_mut_ptr().add(offset as usize) as *mut libc::c_void,
                    len as usize,
                    MADV_POPULATE_WRITE,
                )
            };
        }
        Ok(slot)
    }

    /// Where chunk `slot` starts in the file.
    fn chunk_offset(&self, slot: u32) -> u64 {
        format::HEADER_SIZE + slot as u64 * self.config.chunk_size as u64
    }

    /// Bytes per unit of a chunk's capacity: a record of an event chunk, a
    /// byte of a metadata chunk.
    fn unit(kind: u16) -> u32 {
        match kind {
            format::CHUNK_META => 1,
            _ => format::RECORD_SIZE,
        }
    }

    /// Bytes per chunk, its header included.
    pub fn chunk_size(&self) -> u32 {
        self.config.chunk_size
    }

    /// Reserves more of chunk `slot` of `kind`, whose first `capacity`
    /// units are reserved, so that it holds at least `at_least` units:
    /// twice the reserved bytes (or more, for a large `at_least`), at most
    /// the whole chunk. Returns the new capacity; `Err(Budget)` when the
    /// chunk is whole, or would not hold `at_least` units even then;
    /// `Err(Io)` when the file could not grow (counted in the header's
    /// `lost_chunks`, like a failed claim).
    ///
    /// Async-signal-safe: a `pwrite` (see [`reserve`]), no lock.
    pub fn grow(
        &self,
        slot: u32,
        kind: u16,
        capacity: u32,
        at_least: u32,
    ) -> Result<u32, ClaimError> {
        let unit = Self::unit(kind) as u64;
        let chunk = self.config.chunk_size as u64;
        let bytes = |units: u32| format::CHUNK_HEADER_SIZE as u64 + units as u64 * unit;
        let (have, must) = (bytes(capacity), bytes(at_least));
        if must > chunk || have >= chunk {
            return Err(ClaimError::Budget);
        }
        let want = (2 * have).max(must).min(chunk);
        self.reserve_part(self.chunk_offset(slot) + have, want - have)
            .map_err(ClaimError::Io)?;
        Ok(((want - format::CHUNK_HEADER_SIZE as u64) / unit) as u32)
    }

    /// Reserves `[offset, offset+len)`, a part of a chunk; a failure (the
    /// file could not grow) counts in the header's `lost_chunks`.
    fn reserve_part(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.reserve(offset, len);
        if r.is_err() {
            // Relaxed: a statistic.
            self.atomic_u64(header::LOST_CHUNKS)
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Reserves `[offset, offset+len)` of the backing (see [`reserve`]).
    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        match &self.backing {
            Backing::File { file, .. } => reserve(file, offset, len),
            Backing::Memory { limit, reserved } => {
                // Relaxed: a test's knob.
                if offset + len > limit.load(Ordering::Relaxed) {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                reserved.fetch_add(len, Ordering::Relaxed);
                let page = 4096;
                let from = offset / page * page;
                let to = (offset + len).div_ceil(page) * page;
                // SAFETY: a range of the mapping (the buffer is a whole
                // number of pages), made writable; then the reserved bytes
                // are zeroed, as the file's reservation writes zeros.
                unsafe {
                    libc::mprotect(
                        self.map.as_mut_ptr().add(from as usize) as *mut libc::c_void,
                        (to - from) as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                    );
                    self.map
                        .as_mut_ptr()
                        .add(offset as usize)
                        .write_bytes(0, len as usize);
                }
                Ok(())
            }
        }
    }

    /// Takes the next never-used slot below `limit`.
    fn next_slot(&self, limit: u32) -> Result<u32, ClaimError> {
        take_slot(self.atomic_u32(header::NEXT_CHUNK), limit)
    }

    /// Publishes a chunk in a slot taken by [`ProcessBuffer::reserve_slot`]
    /// with the whole chunk reserved.
    ///
    /// # Safety
    /// `slot` came from `reserve_slot` (of `chunk_size` bytes) and was
    /// handed to no one else.
    pub unsafe fn publish(&self, slot: u32, init: &ChunkInit) -> Chunk {
        // SAFETY: guaranteed by the caller.
        unsafe { self.init_chunk(slot, init, self.config.chunk_size) }
    }

    /// Flight recorder: starts `slot`, an event chunk, over again with the
    /// header `init` (`committed = 0`). The caller counts what the chunk held.
    ///
    /// # Safety
    /// `slot` was claimed as an event chunk of this file, and no thread
    /// writes it any more or can take it (it is the caller's own, or the
    /// caller took it from the recorder's pool or hand-off list).
    pub unsafe fn reuse(&self, slot: u32, init: &ChunkInit) -> Chunk {
        // What of the chunk is reserved: at least what its claim reserved,
        // and what its writers wrote (they never write past the reserved
        // part). The rest is reserved now; if the disk is full, the
        // chunk's capacity stops at what is known to be reserved.
        let offset = self.chunk_offset(slot);
        // Relaxed: the last writer's stores were ordered before ours by
        // the mutex the chunk came through.
        let written = self
            .atomic_u32(offset as usize + chunk::COMMITTED)
            .load(Ordering::Relaxed);
        let known = (format::CHUNK_HEADER_SIZE as u64
            + written as u64 * format::RECORD_SIZE as u64)
            .max(self.first_reserve() as u64)
            .min(self.config.chunk_size as u64);
        let rest = self.config.chunk_size as u64 - known;
        let reserved = match self.reserve_part(offset + known, rest) {
            Ok(()) => self.config.chunk_size,
            Err(_) => known as u32,
        };
        // SAFETY: guaranteed by the caller; `reserved` bytes are reserved.
        unsafe { self.init_chunk(slot, init, reserved) }
    }

    /// The fields of the header of event chunk `slot` that its reuse must
    /// not lose.
    ///
    /// # Safety
    /// As for [`ProcessBuffer::reuse`]: the chunk's header is published and
    /// no thread changes it while this runs.
    pub unsafe fn chunk_owner(&self, slot: u32) -> OldHeader {
        let offset = self.chunk_offset(slot) as usize;
        let mut h = [0u8; chunk::END];
        // SAFETY: the header is inside the mapping, reserved on disk and
        // written by its last owner, whose writes were ordered before ours by
        // the mutex the chunk came through.
        unsafe {
            h.as_mut_ptr()
                .copy_from_nonoverlapping(self.map.as_mut_ptr().add(offset), chunk::END)
        };
        let h = format::ChunkHeader::decode(&h).expect("chunk::END bytes");
        OldHeader {
            lane: h.lane,
            tid: h.tid,
            overwritten: h.overwritten,
            lost_before: h.lost_before,
        }
    }

    /// Writes a chunk header and publishes it.
    ///
    /// # Safety
    /// `slot` is inside the mapping, its first `reserved` bytes are reserved
    /// on disk, and the caller owns it exclusively.
    unsafe fn init_chunk(&self, slot: u32, init: &ChunkInit, reserved: u32) -> Chunk {
        let offset = self.chunk_offset(slot) as usize;
        // SAFETY: guaranteed by the caller.
        unsafe {
            let c = self.map.as_mut_ptr().add(offset);
            let magic = &*(c.add(chunk::MAGIC) as *const AtomicU32);
            // Relaxed: unpublishing a reused chunk; a reader that looks while
            // the process runs treats a chunk without magic as absent.
            magic.store(0, Ordering::Relaxed);
            let committed = c.add(chunk::COMMITTED) as *const AtomicU32;
            (*committed).store(0, Ordering::Relaxed);
            // The fields between the magic and the count, and after the
            // count, as the format encodes them.
            let h = format::ChunkHeader {
                magic: 0,
                kind: init.kind,
                lane: init.lane,
                tid: init.tid,
                seq: init.seq,
                committed: 0,
                lost_before: init.lost_before,
                overwritten: init.overwritten,
                lost_after: 0,
            }
            .encode();
            c.add(chunk::KIND).copy_from_nonoverlapping(
                h[chunk::KIND..].as_ptr(),
                chunk::COMMITTED - chunk::KIND,
            );
            c.add(chunk::LOST_BEFORE).copy_from_nonoverlapping(
                h[chunk::LOST_BEFORE..].as_ptr(),
                chunk::END - chunk::LOST_BEFORE,
            );
            // Release: the header fields above are visible to anyone who
            // reads the magic with acquire.
            magic.store(format::CHUNK_MAGIC, Ordering::Release);
            let capacity = (reserved - format::CHUNK_HEADER_SIZE) / Self::unit(init.kind);
            Chunk {
                header: c,
                data: c.add(format::CHUNK_HEADER_SIZE as usize),
                committed,
                capacity,
                slot,
            }
        }
    }
}

/// What the header of an event chunk about to be reused says about its
/// lane (see [`ProcessBuffer::chunk_owner`]).
#[derive(Clone, Copy, Debug)]
pub struct OldHeader {
    /// Its lane.
    pub lane: u32,
    /// The lane's OS thread id.
    pub tid: u32,
    /// The lane's events overwritten before the chunk was (re)claimed.
    pub overwritten: u64,
    /// The lane's losses just before the chunk's first record.
    pub lost_before: u64,
}

/// The header fields of a chunk being claimed.
#[derive(Clone, Copy, Debug)]
pub struct ChunkInit {
    /// [`format::CHUNK_EVENTS`] or [`format::CHUNK_META`].
    pub kind: u16,
    /// Lane (0 for metadata).
    pub lane: u32,
    /// OS thread id.
    pub tid: u32,
    /// Sequence number within the lane.
    pub seq: u32,
    /// Events the lane lost just before this chunk.
    pub lost_before: u64,
    /// Events of the lane overwritten so far (keep-last).
    pub overwritten: u64,
}

impl Chunk {
    /// Records, in the chunk header at `header`, how many events the lane
    /// lost after this chunk filled up.
    pub fn set_lost_after_at(header: *mut u8, n: u64) {
        // SAFETY: callers pass the header of a chunk of the current recorder
        // (mapped for the life of the process); the field is 8-aligned.
        let a = unsafe { &*(header.add(chunk::LOST_AFTER) as *const AtomicU64) };
        // Relaxed: a statistic read after the process ends.
        a.store(n, Ordering::Relaxed);
    }
}

/// An atomic slot counter: the file header's `NEXT_CHUNK`, or loom's
/// model of one when `take_slot` is model-checked (`--cfg loom`).
pub(crate) trait SlotCounter {
    /// Relaxed load.
    fn get(&self) -> u32;
    /// Weak compare-and-swap, relaxed.
    fn swap_if(&self, current: u32, new: u32) -> Result<u32, u32>;
}

impl SlotCounter for AtomicU32 {
    fn get(&self) -> u32 {
        // Relaxed: the slot number is the only thing exchanged; a chunk's
        // content is published by its own magic/commit stores.
        self.load(Ordering::Relaxed)
    }
    fn swap_if(&self, current: u32, new: u32) -> Result<u32, u32> {
        // Relaxed: as in `get`.
        self.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed)
    }
}

/// Takes the next slot below `limit` from `next`: a bounded CAS loop, so
/// the counter never passes the budget and every slot goes to one caller.
pub(crate) fn take_slot(next: &impl SlotCounter, limit: u32) -> Result<u32, ClaimError> {
    let mut cur = next.get();
    loop {
        if cur >= limit {
            return Err(ClaimError::Budget);
        }
        match next.swap_if(cur, cur + 1) {
            Ok(_) => return Ok(cur),
            Err(actual) => cur = actual,
        }
    }
}

/// Reserves `[offset, offset+len)` of the file on disk, growing it, by
/// writing zeros there with `pwrite`. The write fails now, with ENOSPC or
/// EFBIG, if the space is not there, instead of a SIGBUS later when the
/// mapping is written; and it leaves the pages in the page cache, so the hot
/// path's first store to each page is a cheap minor fault rather than a page
/// allocation plus an unwritten-extent conversion (measured on ext4 in this
/// VM: about 3 ns per record instead of 11, see docs/PERFORMANCE.md).
fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // Never past the file size limit (`ulimit -f`): the write would get
    // the process a SIGXFSZ, which kills it unless the application handles
    // it. Read now, as the application may change it. Past it is a full
    // disk: EFBIG, a counted loss.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && offset.saturating_add(len) > lim.rlim_cur
    {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    }
    use std::os::unix::fs::FileExt;
    static ZEROS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    // A calloc'd buffer: its pages stay the shared zero page, costing no memory.
    let zeros = ZEROS.get_or_init(|| vec![0u8; 64 * 1024]);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Appends postcard-encoded [`Meta`] entries to metadata chunks. Used under
/// the recorder's metadata lock.
pub struct MetaLog {
    chunk: Option<Chunk>,
    used: u32,
    seq: u32,
    /// The entry being written, framed (no allocation per entry).
    scratch: Box<[u8; format::MAX_META_ENTRY]>,
}

impl MetaLog {
    /// An empty log; the first append claims a chunk.
    pub fn new() -> MetaLog {
        MetaLog {
            chunk: None,
            used: 0,
            seq: 0,
            scratch: Box::new([0; format::MAX_META_ENTRY]),
        }
    }

    /// Appends one entry, framed by [`format::encode_entry`], then
    /// publishes it with a release store of the chunk's byte count.
    /// Returns false (and counts it in the header) when the entry could not
    /// be stored.
    pub fn append(&mut self, buf: &ProcessBuffer, entry: &MetaRef) -> bool {
        let Ok(n) = format::encode_entry(entry, &mut self.scratch) else {
            buf.add_lost_meta();
            return false;
        };
        let need = n as u32;
        let mut fits = matches!(&self.chunk, Some(c) if self.used + need <= c.capacity);
        if let Some(c) = self.chunk.as_mut().filter(|_| !fits) {
            // The chunk's next part, if it has one and the disk has room.
            if let Ok(capacity) = buf.grow(c.slot, format::CHUNK_META, c.capacity, self.used + need)
            {
                c.capacity = capacity;
                fits = true;
            }
        }
        if !fits {
            let init = ChunkInit {
                kind: format::CHUNK_META,
                lane: 0,
                tid: 0,
                seq: self.seq,
                lost_before: 0,
                overwritten: 0,
            };
            match buf.claim(&init) {
                Ok(c) => {
                    self.chunk = Some(c);
                    self.used = 0;
                    self.seq += 1;
                }
                Err(_) => {
                    buf.add_lost_meta();
                    return false;
                }
            }
        }
        let c = self.chunk.as_ref().expect("claimed above");
        // SAFETY: the entry fits in the chunk (checked above), which this
        // log owns; committed points into the chunk header.
        unsafe {
            c.data
                .add(self.used as usize)
                .copy_from_nonoverlapping(self.scratch.as_ptr(), n);
            self.used += need;
            // Release: the entry bytes above are visible before the count.
            (*c.committed).store(self.used, Ordering::Release);
        }
        true
    }
}

impl Default for MetaLog {
    fn default() -> Self {
        MetaLog::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::format::word;

    #[test]
    fn small_budgets_get_smaller_default_chunks() {
        const MIB: u64 = 1 << 20;
        let d = format::DEFAULT_CHUNK_SIZE;
        // The default: 64 MiB of 256 KiB chunks.
        assert_eq!(sizes(64 * MIB, d, false), (d, 256));
        assert_eq!(sizes(4 * MIB, d, false), (d, 16));
        // Smaller budgets: halved until 16 slots fit.
        assert_eq!(sizes(2 * MIB, d, false), (128 * 1024, 16));
        assert_eq!(sizes(MIB, d, false), (64 * 1024, 16));
        // A chunk size the user chose is kept; at least 4 slots.
        assert_eq!(sizes(MIB, d, true), (d, 4));
        assert_eq!(sizes(MIB, 1024 * 1024, true), (1024 * 1024, 4));
        assert_eq!(sizes(MIB, 64 * 1024, true), (64 * 1024, 16));
        // Never below the smallest chunk.
        let (c, n) = sizes(MIB, format::MIN_CHUNK_SIZE * 2, false);
        assert_eq!((c, n), (format::MIN_CHUNK_SIZE * 2, 128));
    }

    /// The test word for record `i`.
    fn test_word(i: u32) -> u64 {
        word::new(
            i as u64 + 1,
            word::site_kind(i & word::MAX_SITE, format::kind::ENTER),
        )
    }

    fn buffer(chunks: u32) -> (tempfile_dir::Dir, ProcessBuffer) {
        let dir = tempfile_dir::Dir::new();
        let config = Config {
            chunk_size: format::MIN_CHUNK_SIZE,
            max_chunks: chunks,
            policy: Policy::KeepFirst,
        };
        let buf = ProcessBuffer::create(&dir.path().join("t.mpb"), config, 7, 1).unwrap();
        (dir, buf)
    }

    /// A throwaway directory (std only: the crate has no tempfile dependency).
    mod tempfile_dir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("mpprof-buffer-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn init(lane: u32, seq: u32) -> ChunkInit {
        ChunkInit {
            kind: format::CHUNK_EVENTS,
            lane,
            tid: lane,
            seq,
            lost_before: 0,
            overwritten: 0,
        }
    }

    /// Real threads racing for slots: every slot goes to exactly one claim,
    /// no claim passes the budget, and metadata keeps its reserve.
    #[test]
    fn concurrent_claims_hand_out_each_slot_once_and_stop_at_the_budget() {
        let chunks = if cfg!(miri) { 12 } else { 200 };
        let (_d, buf) = buffer(chunks);
        let buf = Arc::new(buf);
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let buf = buf.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    let mut seq = 0;
                    loop {
                        match buf.claim(&init(t + 1, seq)) {
                            Ok(c) => {
                                mine.push(c.slot);
                                seq += 1;
                            }
                            Err(ClaimError::Budget) => return mine,
                            Err(ClaimError::Io(e)) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let mut all = HashSet::new();
        let mut n = 0;
        for t in threads {
            for s in t.join().unwrap() {
                assert!(all.insert(s), "slot {s} handed out twice");
                n += 1;
            }
        }
        assert_eq!(
            n,
            chunks - META_RESERVE,
            "event chunks stop META_RESERVE short of the budget"
        );
        // The reserve is still there for metadata.
        let meta = ChunkInit {
            kind: format::CHUNK_META,
            ..init(0, 0)
        };
        for _ in 0..META_RESERVE {
            buf.claim(&meta).unwrap();
        }
        assert!(matches!(buf.claim(&meta), Err(ClaimError::Budget)));
    }

    /// The commit protocol with a reader racing the writer: whatever count
    /// the reader sees (acquire), every record below it is complete.
    #[test]
    fn a_concurrent_reader_never_sees_a_committed_record_half_written() {
        let dir = tempfile_dir::Dir::new();
        let chunk_size = if cfg!(miri) {
            format::MIN_CHUNK_SIZE
        } else {
            4 << 20
        };
        let config = Config {
            chunk_size,
            max_chunks: 4,
            policy: Policy::KeepFirst,
        };
        let buf = ProcessBuffer::create(&dir.path().join("t.mpb"), config, 7, 1).unwrap();
        let c = buf.claim(&init(1, 0)).unwrap();
        let (recs, committed, cap) = (c.data as usize, c.committed as usize, c.capacity);
        let started = Arc::new(AtomicBool::new(false));
        let reader = {
            let started = started.clone();
            std::thread::spawn(move || {
                // SAFETY: the chunk lives in the mapping, kept alive by `buf`
                // until after the join below.
                let count = unsafe { &*(committed as *const AtomicU32) };
                let (mut seen, mut polls) = (0u32, 0u64);
                // Relaxed: only a start signal.
                started.store(true, Ordering::Relaxed);
                while seen < cap {
                    // Acquire: pairs with the writer's release store.
                    let n = count.load(Ordering::Acquire);
                    for i in seen..n {
                        // SAFETY: i < n: the writer wrote record i before it
                        // published a count above i (the protocol under test).
                        let r = unsafe {
                            std::ptr::read_volatile((recs as *const u64).add(i as usize))
                        };
                        assert_eq!(r, test_word(i), "record {i}");
                    }
                    seen = n;
                    polls += 1;
                }
                polls
            })
        };
        // Relaxed: only a start signal.
        while !started.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
        for i in 0..cap {
            // SAFETY: i < cap: inside the chunk, written only by this thread.
            unsafe {
                (c.data as *mut u64).add(i as usize).write(test_word(i));
                // Release: as in the recorder's hot path.
                (*c.committed).store(i + 1, Ordering::Release);
            }
        }
        let polls = reader.join().unwrap();
        assert!(polls > 1, "the reader raced the writer");
        drop(buf);
    }
}

/// Model checking with loom (`RUSTFLAGS="--cfg loom" cargo test -p mpprof
/// --no-default-features --lib loom`): every interleaving of the real
/// `take_slot`, and of the commit protocol the hot path follows (records
/// written, then the count stored with release; the reader loads the count
/// with acquire and reads only below it).
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicU32, Ordering};
    use loom::sync::Arc;

    use super::{take_slot, ClaimError, SlotCounter};

    impl SlotCounter for AtomicU32 {
        fn get(&self) -> u32 {
            self.load(Ordering::Relaxed)
        }
        fn swap_if(&self, current: u32, new: u32) -> Result<u32, u32> {
            self.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed)
        }
    }

    #[test]
    fn loom_slots_are_unique_and_bounded() {
        loom::model(|| {
            let next = Arc::new(AtomicU32::new(0));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let next = next.clone();
                    loom::thread::spawn(move || {
                        (take_slot(&*next, 3).ok(), take_slot(&*next, 3).ok())
                    })
                })
                .collect();
            let mut got: Vec<u32> = Vec::new();
            for h in hs {
                let (a, b) = h.join().unwrap();
                got.extend(a);
                got.extend(b);
            }
            got.sort_unstable();
            assert_eq!(got, vec![0, 1, 2], "each slot once, none past the limit");
            assert!(matches!(take_slot(&*next, 3), Err(ClaimError::Budget)));
        });
    }

    #[test]
    fn loom_committed_records_are_complete() {
        loom::model(|| {
            let recs = Arc::new([UnsafeCell::new(0u64), UnsafeCell::new(0u64)]);
            let count = Arc::new(AtomicU32::new(0));
            let writer = {
                let (recs, count) = (recs.clone(), count.clone());
                loom::thread::spawn(move || {
                    for i in 0..2u32 {
                        recs[i as usize].with_mut(|p| {
                            // SAFETY: only this thread writes, and only
                            // records at or above the published count.
                            unsafe { *p = u64::from(i) + 100 }
                        });
                        count.store(i + 1, Ordering::Release);
                    }
                })
            };
            let n = count.load(Ordering::Acquire);
            for i in 0..n as usize {
                // SAFETY: below the acquired count: written before it was
                // published, and never written again (loom checks this).
                let v = recs[i].with(|p| unsafe { *p });
                assert_eq!(v, i as u64 + 100);
            }
            writer.join().unwrap();
        });
    }
}
