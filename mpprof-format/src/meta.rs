//! The metadata log: the entries ([`Meta`] and the structs of its
//! variants) and their framing in a metadata chunk, `[len: u32][postcard
//! bytes]` per entry, written by [`encode_entry`] and read by [`Entries`].

use serde::{Deserialize, Serialize};

use crate::{Channel, FlowId, Module, Policy, ProfilerInfo, Resource, SamplerInfo};

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
    /// The resource sampler of this file (added to format 4 in December
    /// 2026; see [`crate::resource`]). Readers before it skip it.
    Sampler(SamplerInfo),
    /// Counter callsites that hold resource samples (added to format 4 in
    /// December 2026; see [`crate::resource`]). Readers before it skip it
    /// and show the samples as plain counters.
    Resources(Vec<Resource>),
    /// The sampling profiler of this file (format 5; see
    /// [`crate::profile`]).
    Profiler(ProfilerInfo),
    /// A loaded object's executable mapping, for symbolizing samples
    /// (format 5).
    Module(Module),
    /// An interned stack: the instruction addresses of `SAMPLE` records
    /// whose stack id is `id`, leaf first (format 5).
    Stack {
        /// Id used in `SAMPLE` records (from 1).
        id: u32,
        /// Addresses, leaf first; at most [`crate::profile::MAX_FRAMES`].
        frames: Vec<u64>,
    },
    /// A traced I/O channel (format 5; see [`crate::io`]).
    Channel(Channel),
}

impl Meta {
    /// Number of variants this version knows: an entry whose first byte
    /// (postcard's variant index) is at least this was written by a newer
    /// writer.
    pub const VARIANTS: u32 = 13;
}

/// Largest encoded metadata entry (bytes), so an entry always fits one
/// metadata chunk. The writer truncates the process entry's strings to stay
/// under it; any other entry over it is not stored and counted in the
/// header's `LOST_META`.
pub const MAX_META_ENTRY: usize = 3 * 1024;

/// Longest name or path the writer stores whole in a metadata entry
/// (bytes); a longer one is [`Clipped`] to it, with a marker. Three such
/// strings and their markers fit one [`MAX_META_ENTRY`].
pub const MAX_NAME: usize = 960;

/// A string of a metadata entry as the writer stores it: whole when it is
/// at most `max` bytes long; else its first bytes up to `max` (cut at a
/// character boundary) followed by a marker, `…[+N bytes]`, that says how
/// much was cut (at most [`Clipped::MARKER_MAX`] bytes more). So a name too
/// long for an entry is still recorded, visibly shortened, instead of the
/// entry being lost. Encoded as a string without allocating (postcard
/// formats it in place); a reader decodes a `String`.
#[derive(Clone, Copy, Debug)]
pub struct Clipped<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Clipped<'a> {
    /// Longest marker: `…` (3 bytes), `[+`, 20 digits, ` bytes]`.
    pub const MARKER_MAX: usize = 3 + 2 + 20 + 7;

    /// `text`, cut to `max` bytes if longer.
    pub const fn new(text: &'a str, max: usize) -> Clipped<'a> {
        Clipped { text, max }
    }

    /// `text` whole, however long.
    pub const fn whole(text: &'a str) -> Clipped<'a> {
        Clipped {
            text,
            max: usize::MAX,
        }
    }

    /// The kept part, and the bytes cut (0: whole).
    fn parts(&self) -> (&'a str, usize) {
        if self.text.len() <= self.max {
            return (self.text, 0);
        }
        let mut cut = self.max;
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        (&self.text[..cut], self.text.len() - cut)
    }
}

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.parts() {
            (text, 0) => f.write_str(text),
            (head, cut) => write!(f, "{head}…[+{cut} bytes]"),
        }
    }
}

impl Serialize for Clipped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.parts() {
            (text, 0) => s.serialize_str(text),
            _ => s.collect_str(self),
        }
    }
}

/// Bytes of the length prefix of a metadata entry (`u32`).
pub const META_LEN_SIZE: usize = 4;

/// Why [`encode_entry`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The encoded entry, with its length prefix, is over
    /// [`MAX_META_ENTRY`] bytes.
    TooLarge,
    /// postcard could not encode it (a value serde refuses).
    Unencodable,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::TooLarge => write!(
                f,
                "the metadata entry is over {MAX_META_ENTRY} bytes encoded"
            ),
            EncodeError::Unencodable => write!(f, "the metadata entry cannot be encoded"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The writer's side of a metadata entry: [`Meta`]'s variants and fields,
/// in the same order, borrowing its strings and lists, so that a writer
/// builds and encodes an entry without allocating (the recorder may be
/// called from a signal handler). postcard encodes a `MetaRef` exactly as
/// the `Meta` it borrows from (`str` and `String`, slices and `Vec`s are
/// the same to serde), which `tests/roundtrip.rs` checks; a reader decodes
/// [`Meta`].
#[derive(Clone, Copy, Debug, Serialize)]
pub enum MetaRef<'a> {
    /// [`Meta::Process`].
    Process(&'a ProcessInfo),
    /// [`Meta::Callsite`].
    Callsite {
        /// Id used in records.
        id: u32,
        /// Kind.
        kind: SiteKind,
        /// Display name.
        name: Clipped<'a>,
        /// Full path.
        path: Clipped<'a>,
        /// Source file.
        file: Clipped<'a>,
        /// Source line.
        line: u32,
    },
    /// [`Meta::Thread`].
    Thread {
        /// Lane as in chunk headers.
        lane: u32,
        /// OS thread id.
        tid: u32,
        /// Thread name (may be empty).
        name: Clipped<'a>,
    },
    /// [`Meta::Anchor`].
    Anchor(Anchor),
    /// [`Meta::Handoff`].
    Handoff(Handoff),
    /// [`Meta::Reused`].
    Reused(ReusedRef<'a>),
    /// [`Meta::Lost`].
    Lost(LostRef<'a>),
    /// [`Meta::Sampler`] (written in ordinary context: it may borrow an
    /// allocated value).
    Sampler(&'a SamplerInfo),
    /// [`Meta::Resources`].
    Resources(&'a [Resource]),
    /// [`Meta::Profiler`].
    Profiler(&'a ProfilerInfo),
    /// [`Meta::Module`].
    Module(&'a Module),
    /// [`Meta::Stack`].
    Stack {
        /// Stack id.
        id: u32,
        /// Addresses, leaf first.
        frames: &'a [u64],
    },
    /// [`Meta::Channel`].
    Channel(&'a Channel),
}

/// [`Reused`], borrowing its list (see [`MetaRef`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReusedRef<'a> {
    /// [`Reused::slot`].
    pub slot: u32,
    /// [`Reused::lane`].
    pub lane: u32,
    /// [`Reused::seq`].
    pub seq: u32,
    /// [`Reused::ts`].
    pub ts: u64,
    /// [`Reused::prev_lane`].
    pub prev_lane: u32,
    /// [`Reused::prev_overwritten`].
    pub prev_overwritten: u64,
    /// [`Reused::overwritten`].
    pub overwritten: &'a [(u32, u64)],
}

/// [`Lost`], borrowing its name (see [`MetaRef`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LostRef<'a> {
    /// [`Lost::lane`].
    pub lane: u32,
    /// [`Lost::tid`].
    pub tid: u32,
    /// [`Lost::name`].
    pub name: Clipped<'a>,
    /// [`Lost::ts`].
    pub ts: u64,
    /// [`Lost::events`].
    pub events: u64,
}

impl Meta {
    /// This entry as the writer's [`MetaRef`], which encodes alike.
    pub fn as_ref(&self) -> MetaRef<'_> {
        match self {
            Meta::Process(p) => MetaRef::Process(p),
            Meta::Callsite {
                id,
                kind,
                name,
                path,
                file,
                line,
            } => MetaRef::Callsite {
                id: *id,
                kind: *kind,
                name: Clipped::whole(name),
                path: Clipped::whole(path),
                file: Clipped::whole(file),
                line: *line,
            },
            Meta::Thread { lane, tid, name } => MetaRef::Thread {
                lane: *lane,
                tid: *tid,
                name: Clipped::whole(name),
            },
            Meta::Anchor(a) => MetaRef::Anchor(*a),
            Meta::Handoff(h) => MetaRef::Handoff(*h),
            Meta::Reused(r) => MetaRef::Reused(ReusedRef {
                slot: r.slot,
                lane: r.lane,
                seq: r.seq,
                ts: r.ts,
                prev_lane: r.prev_lane,
                prev_overwritten: r.prev_overwritten,
                overwritten: &r.overwritten,
            }),
            Meta::Lost(l) => MetaRef::Lost(LostRef {
                lane: l.lane,
                tid: l.tid,
                name: Clipped::whole(&l.name),
                ts: l.ts,
                events: l.events,
            }),
            Meta::Sampler(s) => MetaRef::Sampler(s),
            Meta::Resources(r) => MetaRef::Resources(r),
            Meta::Profiler(p) => MetaRef::Profiler(p),
            Meta::Module(m) => MetaRef::Module(m),
            Meta::Stack { id, frames } => MetaRef::Stack { id: *id, frames },
            Meta::Channel(c) => MetaRef::Channel(c),
        }
    }
}

/// Encodes `entry` as one framed entry of a metadata chunk, `[len: u32
/// little-endian][postcard bytes]`, into the start of `buf`, and returns
/// the bytes used. No allocation. An entry whose frame would be over
/// [`MAX_META_ENTRY`] bytes is refused (the writer counts it in the
/// header's `LOST_META`), so an entry always fits one metadata chunk.
pub fn encode_entry(entry: &MetaRef, buf: &mut [u8; MAX_META_ENTRY]) -> Result<usize, EncodeError> {
    let (len_bytes, body) = buf.split_at_mut(META_LEN_SIZE);
    let len = match postcard::to_slice(entry, body) {
        Ok(b) => b.len(),
        Err(postcard::Error::SerializeBufferFull) => return Err(EncodeError::TooLarge),
        Err(_) => return Err(EncodeError::Unencodable),
    };
    len_bytes.copy_from_slice(&(len as u32).to_le_bytes());
    Ok(META_LEN_SIZE + len)
}

/// What is wrong with an entry of a metadata chunk (see [`Entries`]).
#[derive(Clone, Debug, PartialEq)]
pub enum EntryError {
    /// Fewer bytes than a length prefix are left at the end: the rest of
    /// the chunk is skipped.
    Stray {
        /// How many.
        bytes: usize,
    },
    /// The length prefix runs past the committed bytes: the rest of the
    /// chunk is skipped.
    Overrun {
        /// The length prefix.
        len: usize,
    },
    /// The entry's variant is past the last one this version knows
    /// ([`Meta::VARIANTS`]): written by a newer writer. Skipped.
    Unknown {
        /// postcard's variant index (the entry's first byte).
        variant: u8,
    },
    /// The entry does not decode. Skipped.
    Undecodable(postcard::Error),
}

/// The entries of the committed bytes of a metadata chunk, in order: each
/// a [`Meta`] or why it cannot be read. After [`EntryError::Stray`] or
/// [`EntryError::Overrun`] nothing more is yielded (the framing is lost);
/// after the others, the next entry follows.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    /// The entries of `committed`, the committed bytes of a metadata chunk.
    pub fn new(committed: &'a [u8]) -> Entries<'a> {
        Entries { rest: committed }
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Meta, EntryError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        if b.is_empty() {
            return None;
        }
        if b.len() < META_LEN_SIZE {
            self.rest = &[];
            return Some(Err(EntryError::Stray { bytes: b.len() }));
        }
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let Some(entry) = b.get(META_LEN_SIZE..).and_then(|r| r.get(..len)) else {
            self.rest = &[];
            return Some(Err(EntryError::Overrun { len }));
        };
        self.rest = &b[META_LEN_SIZE + len..];
        Some(postcard::from_bytes::<Meta>(entry).map_err(|e| {
            // postcard starts an enum with its variant index (a varint: one
            // byte below 128).
            match entry.first() {
                Some(&v) if (v as u32) >= Meta::VARIANTS => EntryError::Unknown { variant: v },
                _ => EntryError::Undecodable(e),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn profile_entries_are_variants_9_to_11() {
        let p = Meta::Profiler(crate::ProfilerInfo {
            hz: 1000,
            switches: true,
            tid: 7,
            error: String::new(),
            lost_records: 2,
            dropped: 0,
            syscalls: true,
            syscalls_error: String::new(),
        });
        let bytes = postcard::to_stdvec(&p).unwrap();
        assert_eq!(bytes, [9, 0xE8, 0x07, 1, 7, 0, 2, 0, 1, 0]);
        let m = Meta::Module(crate::Module {
            start: 0x1000,
            end: 0x2000,
            offset: 0x10,
            path: "/a".into(),
            build_id: vec![0xAB],
        });
        let bytes = postcard::to_stdvec(&m).unwrap();
        assert_eq!(
            bytes,
            [10, 0x80, 0x20, 0x80, 0x40, 0x10, 2, b'/', b'a', 1, 0xAB]
        );
        let st = Meta::Stack {
            id: 3,
            frames: vec![0x10, 0x20],
        };
        let bytes = postcard::to_stdvec(&st).unwrap();
        assert_eq!(bytes, [11, 3, 2, 0x10, 0x20]);
        for m in [p, m, st] {
            let mut buf = [0u8; MAX_META_ENTRY];
            let n = encode_entry(&m.as_ref(), &mut buf).unwrap();
            let read: Vec<Meta> = Entries::new(&buf[..n]).map(Result::unwrap).collect();
            assert_eq!(read, [m]);
        }
        assert_eq!(Meta::VARIANTS, 13);
    }

    #[test]
    fn lost_is_meta_variant_6() {
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
    }

    /// A reader from before the resource entries: the seven variants it
    /// knew, with the same types. It must skip the new entries as
    /// `Unknown` (their first byte is past its variant count) and go on
    /// with the next entry.
    #[derive(Debug, PartialEq, Deserialize)]
    #[allow(dead_code)]
    enum MetaBeforeResources {
        Process(ProcessInfo),
        Callsite {
            id: u32,
            kind: SiteKind,
            name: String,
            path: String,
            file: String,
            line: u32,
        },
        Thread {
            lane: u32,
            tid: u32,
            name: String,
        },
        Anchor(Anchor),
        Handoff(Handoff),
        Reused(Reused),
        Lost(Lost),
    }

    #[test]
    fn sampler_and_resources_are_variants_7_and_8_which_older_readers_skip() {
        let sampler = Meta::Sampler(SamplerInfo {
            interval_ns: 10_000_000,
            tid: 42,
            unavailable: vec!["/proc/self/io: Permission denied".into()],
        });
        let resources = Meta::Resources(vec![crate::Resource {
            site: 9,
            scope: crate::Scope::Thread { tid: 42 },
            key: crate::resource::key::ON_CPU.into(),
            instance: String::new(),
            unit: "ns".into(),
            cumulative: true,
        }]);
        let thread = Meta::Thread {
            lane: 1,
            tid: 42,
            name: "mpprof-sample".into(),
        };
        let mut log = Vec::new();
        let mut buf = [0u8; MAX_META_ENTRY];
        for m in [&sampler, &resources, &thread] {
            let n = encode_entry(&m.as_ref(), &mut buf).unwrap();
            log.extend_from_slice(&buf[..n]);
        }
        // This reader decodes all three.
        let read: Vec<Meta> = Entries::new(&log).map(Result::unwrap).collect();
        assert_eq!(read, [sampler, resources, thread.clone()]);
        const { assert!(Meta::VARIANTS >= 9) };
        // The older reader: the same framing, its own enum and count.
        let mut rest = &log[..];
        let mut old = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let entry = &rest[4..4 + len];
            rest = &rest[4 + len..];
            old.push(match postcard::from_bytes::<MetaBeforeResources>(entry) {
                Ok(m) => Ok(m),
                Err(_) if entry[0] >= 7 => Err(entry[0]),
                Err(e) => panic!("undecodable, not unknown: {e}"),
            });
        }
        assert_eq!(
            old,
            [
                Err(7),
                Err(8),
                Ok(MetaBeforeResources::Thread {
                    lane: 1,
                    tid: 42,
                    name: "mpprof-sample".into()
                })
            ]
        );
        assert!(postcard::from_bytes::<Meta>(&[9]).is_err());
    }
}
