//! Reading one process's buffer file. Every byte is untrusted: the header
//! and every chunk header are validated before their numbers are used, and
//! every problem names the file, the process and the field.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mpprof_format::{
    self as format, header, kind, word, Anchor, EntryError, Lost, Meta, Policy, ProcessInfo,
    SiteKind,
};

/// Errors that make a file unreadable as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// I/O error while reading.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error. (In the message, not the error's `source()`, so that
        /// a report of the whole chain does not say it twice.)
        error: std::io::Error,
    },
    /// The header is invalid.
    #[error("{path}: {what}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        what: String,
    },
    /// A newer writer.
    #[error("{path}: written by a newer mpprof (format {found}); this reader knows formats up to {known}")]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version this reader knows.
        known: u32,
    },
}

/// A callsite as described by the file's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// Kind.
    pub kind: SiteKind,
    /// Display name.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
}

/// [`Meta::Handoff`] (a thread continued another, finished thread's chunk
/// from record `start`) and [`Meta::Reused`] entries, as decoded.
pub use mpprof_format::{Handoff, Reused};

/// The flight recorder gave a chunk that other threads wrote to another
/// thread: a [`Meta::Reused`] entry, and whether it took effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// The entry as decoded.
    pub entry: Reused,
    /// Whether the file shows that the reuse happened: the slot's header is
    /// the new owner's (or a later one's). False for an entry whose writer
    /// was killed before it re-initialised the header: the old content, its
    /// hand-offs and its counts stand.
    pub effective: bool,
}

/// How a file's event records are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Format versions 1-3: 16-byte records with absolute timestamps
    /// ([`format::record_v3`]), a 16-byte payload record after some kinds.
    Records16,
    /// Format version 4: 8-byte words holding the low half of the
    /// timestamp, the high half coming from the last `BASE`
    /// ([`format::word`]); payload words after some kinds.
    Words8,
}

impl Layout {
    /// The layout of a format version.
    pub fn of_version(v: u32) -> Layout {
        if v <= 3 {
            Layout::Records16
        } else {
            Layout::Words8
        }
    }

    /// Bytes of one record (16) or word (8).
    pub fn unit(self) -> u32 {
        match self {
            Layout::Records16 => format::RECORD_SIZE_V3,
            Layout::Words8 => format::RECORD_SIZE,
        }
    }
}

/// A chunk of one lane, located and validated.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRef {
    /// Byte offset of the first record.
    pub offset: u64,
    /// The file's record layout.
    pub layout: Layout,
    /// Sequence number within the lane.
    pub seq: u32,
    /// Records (format 4: words) to read (committed, clamped to what the
    /// file holds).
    pub records: u32,
    /// Events the lane lost just before this chunk.
    pub lost_before: u64,
    /// Events of the lane overwritten (keep-last) before this chunk was claimed.
    pub overwritten: u64,
    /// Events the lane lost after this chunk filled up (last chunk only).
    pub lost_after: u64,
    /// OS thread id written in the chunk header.
    pub tid: u32,
}

/// A thread's stream of chunks.
#[derive(Clone, Debug, Default)]
pub struct Lane {
    /// OS thread id.
    pub tid: u32,
    /// Thread name ("" when unnamed or unknown).
    pub name: String,
    /// Chunks in sequence order.
    pub chunks: Vec<ChunkRef>,
    /// Events of this lane the flight recorder overwrote: the largest
    /// `overwritten` of its chunk headers (its own chunks it reused, kept
    /// also in [`Reused::prev_overwritten`] when another thread took the
    /// chunk) plus its events in chunks other threads took
    /// ([`Reused::overwritten`]). All are older than its first surviving
    /// event.
    pub overwritten: u64,
    /// Process clock of the last reuse that overwrote events of this lane
    /// in a chunk another thread took; for a lane with no surviving chunk,
    /// every event of it is older.
    pub overwritten_until: Option<u64>,
    /// Events this lane lost that only the metadata counts: its
    /// [`Meta::Lost`] entries (a thread that never had a chunk, or the
    /// `lost_before` of a header another thread replaced), and the
    /// `lost_before` of its hand-offs whose content was overwritten.
    pub lost_noted: u64,
    /// Process clock of the last of those entries (or of the reuse that
    /// overwrote the hand-off's content): every event they count is older.
    pub lost_noted_until: Option<u64>,
}

impl Lane {
    /// Events this lane lost without recording them (budget, disk, no
    /// chunk), as the merge shows them on the lane: the gaps before its
    /// chunks, after its last chunk, and those only the metadata counts.
    pub fn not_recorded(&self) -> u64 {
        // Saturating: the counts come from untrusted chunk headers (found
        // by fuzzing: `fuzz/corpus/read_file/crash-lane-losses-overflow`).
        let before = self
            .chunks
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.lost_before));
        let after = self.chunks.last().map_or(0, |c| c.lost_after);
        before.saturating_add(after).saturating_add(self.lost_noted)
    }

    /// All the events this lane lost: not recorded, or overwritten.
    pub fn lost(&self) -> u64 {
        self.not_recorded().saturating_add(self.overwritten)
    }

    /// Counts `events` the metadata says this lane (thread `tid`) lost, up
    /// to the time `until` when known.
    fn note_lost(&mut self, tid: u32, events: u64, until: Option<u64>) {
        if self.tid == 0 {
            self.tid = tid;
        }
        // Saturating: the counts are untrusted.
        self.lost_noted = self.lost_noted.saturating_add(events);
        if let Some(ts) = until {
            self.lost_noted_until = Some(self.lost_noted_until.map_or(ts, |t| t.max(ts)));
        }
    }
}

/// What one thread lost (see [`ProcessFile::losses`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneLoss {
    /// Lane.
    pub lane: u32,
    /// OS thread id.
    pub tid: u32,
    /// Thread name ("" when unnamed or unknown).
    pub name: String,
    /// Events lost without being recorded ([`Lane::not_recorded`]).
    pub not_recorded: u64,
    /// Events the flight recorder overwrote ([`Lane::overwritten`]).
    pub overwritten: u64,
}

impl LaneLoss {
    /// All of them: not recorded, or overwritten.
    pub fn total(&self) -> u64 {
        self.not_recorded.saturating_add(self.overwritten)
    }
}

/// A process's losses by thread (see [`ProcessFile::losses`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// The threads that lost events, most first.
    pub lanes: Vec<LaneLoss>,
    /// Losses of the process that no lane accounts for: `lost_events` less
    /// what the lanes account for (a process killed before a thread without
    /// a chunk wrote its `Lost` entry; a file from before such entries).
    /// The merge shows them at the end of the process's first lane.
    pub unattributed: u64,
}

/// One process's file, decoded up to the event records (which are read
/// lazily, a chunk at a time, by [`crate::merge`]).
#[derive(Debug)]
pub struct ProcessFile {
    /// Path of the file.
    pub path: PathBuf,
    /// Open file for reading records.
    pub file: File,
    /// Process facts (None if the metadata was lost).
    pub info: Option<ProcessInfo>,
    /// Pid (from the header; also in `info`).
    pub pid: u32,
    /// Format version of the writer.
    pub version: u32,
    /// Process uid.
    pub uid: u64,
    /// Whether the process finished the file (clean exit).
    pub clean: bool,
    /// Overflow policy.
    pub policy: Option<Policy>,
    /// Events the process could not record.
    pub lost_events: u64,
    /// Chunk claims that failed for lack of disk space or file size.
    pub lost_chunks: u64,
    /// Metadata entries the process could not store.
    pub lost_meta: u32,
    /// Callsites by id.
    pub sites: BTreeMap<u32, Site>,
    /// Lanes by lane number.
    pub lanes: BTreeMap<u32, Lane>,
    /// Clock anchors in file order.
    pub anchors: Vec<Anchor>,
    /// Problems found while reading (the file is still usable).
    pub warnings: Vec<String>,
    /// Chunks continued by another thread, in file order (already applied
    /// to `lanes`), including those a later effective reuse of their chunk
    /// retired (see [`Reuse::effective`]).
    pub handoffs: Vec<Handoff>,
    /// Chunks the flight recorder gave to another thread, in file order
    /// (already applied to `lanes`).
    pub reuses: Vec<Reuse>,
    /// Records after a chunk's commit count that hold data: writes that were
    /// under way when the process died (torn or uncommitted), skipped.
    pub torn_records: u64,
}

impl ProcessFile {
    /// The process's display name: executable file name and pid.
    pub fn display_name(&self) -> String {
        let exe = self.info.as_ref().map(|i| i.exe.as_str()).unwrap_or("");
        let short = exe
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("?");
        format!("{short} (pid {})", self.pid)
    }

    /// Total records committed in all lanes: 16-byte records in format 1-3
    /// files, 8-byte words (events, payload words, time bases) in format 4.
    /// Events are what [`crate::Session::events`] yields.
    pub fn committed_records(&self) -> u64 {
        self.lanes
            .values()
            .flat_map(|l| &l.chunks)
            .map(|c| c.records as u64)
            .sum()
    }

    /// The process's losses by thread, as the merge shows them.
    pub fn losses(&self) -> Losses {
        let mut lanes: Vec<LaneLoss> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.lost() > 0)
            .map(|(&lane, l)| LaneLoss {
                lane,
                tid: l.tid,
                name: l.name.clone(),
                not_recorded: l.not_recorded(),
                overwritten: l.overwritten,
            })
            .collect();
        lanes.sort_by_key(|l| (std::cmp::Reverse(l.total()), l.lane));
        Losses {
            lanes,
            unattributed: self.unattributed_losses(),
        }
    }

    /// `lost_events` less what the lanes account for (see
    /// [`Losses::unattributed`]).
    pub fn unattributed_losses(&self) -> u64 {
        let attributed = self
            .lanes
            .values()
            .fold(0u64, |a, l| a.saturating_add(l.lost()));
        self.lost_events.saturating_sub(attributed)
    }

    /// Events recorded in all lanes (enters, exits, instants, counters, flow
    /// ends, async ends; not time bases or payloads), read from the file:
    /// one pass over every chunk.
    pub fn recorded_events(&self) -> u64 {
        self.lanes.keys().map(|&lane| self.lane_events(lane)).sum()
    }

    /// Events recorded in one lane (as [`ProcessFile::recorded_events`]);
    /// 0 for a lane the file does not have.
    pub fn lane_events(&self, lane: u32) -> u64 {
        let mut n = 0;
        for c in self.lanes.get(&lane).map_or(&[][..], |l| &l.chunks) {
            let mut r = RecordReader::new(*c);
            while r.next_event(&self.file).is_some() {
                n += 1;
            }
        }
        n
    }
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Reads exactly `buf.len()` bytes at `offset`, or fewer if the file ends.
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Opens and validates a buffer file; decodes its metadata and locates its chunks.
pub fn open(path: &Path) -> Result<ProcessFile, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_owned(),
        error,
    };
    let bad = |what: String| ReadError::Header {
        path: path.to_owned(),
        what,
    };
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut h = vec![0u8; format::HEADER_SIZE as usize];
    let got = read_at(&file, &mut h, 0).map_err(io)?;
    let Some(fh) = format::FileHeader::decode(&h[..got]) else {
        return Err(bad(format!(
            "file is {file_len} bytes, shorter than the {}-byte header: truncated or not an mpprof buffer",
            header::END
        )));
    };
    if fh.magic != format::MAGIC {
        return Err(bad("field `magic`: not an mpprof buffer file".into()));
    }
    let version = fh.version;
    if version > format::FORMAT_VERSION {
        return Err(ReadError::NewerFormat {
            path: path.to_owned(),
            found: version,
            known: format::FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(bad("field `version` is 0".into()));
    }
    let pid = fh.pid;
    let bad_field = |field: &str, v: u64, want: String| {
        bad(format!(
            "process {pid}: field `{field}` is {v}, expected {want}"
        ))
    };
    let header_size = fh.header_size as u64;
    if header_size != format::HEADER_SIZE {
        return Err(bad_field(
            "header_size",
            header_size,
            format::HEADER_SIZE.to_string(),
        ));
    }
    let layout = Layout::of_version(version);
    let unit = layout.unit();
    let rec_size = fh.record_size as u32;
    if rec_size != unit {
        return Err(bad_field(
            "record_size",
            rec_size as u64,
            format!("{unit} in a format {version} file"),
        ));
    }
    let ch_size = fh.chunk_header_size as u32;
    if ch_size != format::CHUNK_HEADER_SIZE {
        return Err(bad_field(
            "chunk_header_size",
            ch_size as u64,
            format::CHUNK_HEADER_SIZE.to_string(),
        ));
    }
    let chunk_size = fh.chunk_size;
    if !(format::MIN_CHUNK_SIZE..=format::MAX_CHUNK_SIZE).contains(&chunk_size)
        || chunk_size % 16 != 0
    {
        return Err(bad_field(
            "chunk_size",
            chunk_size as u64,
            format!(
                "a multiple of 16 in {}..={}",
                format::MIN_CHUNK_SIZE,
                format::MAX_CHUNK_SIZE
            ),
        ));
    }
    let max_chunks = fh.max_chunks;
    let next_chunk = fh.next_chunk;
    let mut pf = ProcessFile {
        path: path.to_owned(),
        file,
        info: None,
        pid,
        version,
        uid: fh.process_uid,
        clean: fh.state == format::STATE_FINISHED,
        policy: Policy::from_u32(fh.policy),
        lost_events: fh.lost_events,
        lost_chunks: fh.lost_chunks,
        lost_meta: fh.lost_meta,
        sites: BTreeMap::new(),
        lanes: BTreeMap::new(),
        anchors: Vec::new(),
        warnings: Vec::new(),
        torn_records: 0,
        handoffs: Vec::new(),
        reuses: Vec::new(),
    };
    let name = format!("{} (process {pid})", path.display());
    if pf.policy.is_none() {
        pf.warnings.push(format!(
            "{name}: field `policy` has unknown value {}",
            fh.policy
        ));
    }
    // Slots that can hold a chunk: claimed, within the budget, and (at least
    // partly) inside the file.
    let in_file = file_len
        .saturating_sub(format::HEADER_SIZE)
        .div_ceil(chunk_size as u64);
    let slots = (next_chunk.min(max_chunks) as u64).min(in_file);
    // Claims that failed to grow the file (disk full) leave slots at the end
    // that were never written: not a truncation.
    let missing = (next_chunk.min(max_chunks) as u64).saturating_sub(in_file);
    if missing > pf.lost_chunks {
        pf.warnings.push(format!(
            "{name}: field `next_chunk` says {} chunks were claimed but the file ({file_len} bytes) holds {in_file}: truncated file, reading what is there",
            next_chunk.min(max_chunks)
        ));
    }
    let cap_records = (chunk_size - format::CHUNK_HEADER_SIZE) / unit;
    let cap_bytes = chunk_size - format::CHUNK_HEADER_SIZE;
    let mut meta_chunks: Vec<(u32, u64, u32)> = Vec::new();
    let mut event_chunks: Vec<(u32, u32, ChunkRef)> = Vec::new();
    // Event chunks to inspect for a torn record once the metadata says
    // which were reused: (index in event_chunks, header `overwritten` > 0).
    let mut torn_candidates: Vec<(usize, bool)> = Vec::new();
    let mut ch = [0u8; format::CHUNK_HEADER_SIZE as usize];
    for slot in 0..slots {
        let off = format::HEADER_SIZE + slot * chunk_size as u64;
        let got = read_at(&pf.file, &mut ch, off).map_err(io)?;
        let Some(hd) = format::ChunkHeader::decode(&ch[..got]) else {
            continue; // cut off by the end of the file
        };
        if hd.magic != format::CHUNK_MAGIC {
            continue; // never claimed, or its disk reservation failed
        }
        let data = off + format::CHUNK_HEADER_SIZE as u64;
        // Bytes of this chunk actually present in the file.
        let present = file_len.saturating_sub(data).min(cap_bytes as u64) as u32;
        let committed = hd.committed;
        let lane = hd.lane;
        let seq = hd.seq;
        match hd.kind {
            format::CHUNK_META => {
                let mut bytes = committed;
                if bytes > cap_bytes {
                    pf.warnings.push(format!(
                        "{name}: metadata chunk {slot}: field `committed` is {committed}, more than the chunk's {cap_bytes} bytes; ignoring the chunk"
                    ));
                    continue;
                }
                if bytes > present {
                    pf.warnings.push(format!(
                        "{name}: metadata chunk {slot} is cut short by the end of the file"
                    ));
                    bytes = present;
                }
                meta_chunks.push((seq, data, bytes));
            }
            format::CHUNK_EVENTS => {
                let mut records = committed;
                if records > cap_records {
                    pf.warnings.push(format!(
                        "{name}: lane {lane} chunk {slot}: field `committed` is {committed}, more than the chunk's {cap_records} records; reading none of it"
                    ));
                    continue;
                }
                if records as u64 * unit as u64 > present as u64 {
                    pf.warnings.push(format!(
                        "{name}: lane {lane} chunk {slot} is cut short by the end of the file; {} committed records are missing",
                        records - present / unit
                    ));
                    records = present / unit;
                }
                if records < cap_records && !pf.clean {
                    let reused = hd.overwritten > 0;
                    torn_candidates.push((event_chunks.len(), reused));
                }
                let tid = hd.tid;
                let lost_before = hd.lost_before;
                let overwritten = hd.overwritten;
                let lost_after = hd.lost_after;
                event_chunks.push((
                    slot as u32,
                    lane,
                    ChunkRef {
                        offset: data,
                        layout,
                        seq,
                        records,
                        lost_before,
                        overwritten,
                        lost_after,
                        tid,
                    },
                ));
            }
            other => pf.warnings.push(format!(
                "{name}: chunk {slot}: field `kind` has unknown value {other}; skipped"
            )),
        }
    }
    meta_chunks.sort_by_key(|m| m.0);
    let mut buf = Vec::new();
    // For each reuse entry: how many hand-offs were decoded before it.
    let mut reuse_at = Vec::new();
    for (seq, data, bytes) in meta_chunks {
        buf.resize(bytes as usize, 0);
        let n = read_at(&pf.file, &mut buf, data).map_err(io)?;
        buf.truncate(n);
        decode_meta(&mut pf, &buf, seq, &name, &mut reuse_at);
    }
    let current_from = apply_reuses(&mut pf, &event_chunks, &reuse_at);
    for (i, header_says_reused) in torn_candidates {
        let (slot, _, c) = &event_chunks[i];
        let reused = header_says_reused || current_from.get(slot).is_some_and(|&(_, any)| any);
        if looks_torn(&pf.file, layout, c.offset, c.records, reused).map_err(io)? {
            pf.torn_records += 1;
        }
    }
    split_handoffs(&mut pf, event_chunks, &current_from, cap_records, &name);
    lane_overwritten(&mut pf);
    for l in pf.lanes.values_mut() {
        l.chunks.sort_by_key(|c| c.seq);
    }
    if pf.info.is_none() {
        pf.warnings.push(format!(
            "{name}: no process information in the metadata (executable and parent unknown)"
        ));
    }
    Ok(pf)
}

/// Whether the record after a chunk's commit count looks like one its
/// writer was storing when the process stopped (torn or uncommitted): a
/// valid kind and, for 16-byte records, zero padding and a timestamp not
/// older than the chunk's first record. Older data there is a flight-recorder
/// leftover from the chunk's previous use. In format 4 a word holds only the
/// low half of its timestamp, which does not tell a leftover from a new
/// word: a chunk the flight recorder reused is not looked at.
fn looks_torn(
    file: &File,
    layout: Layout,
    data: u64,
    records: u32,
    reused: bool,
) -> std::io::Result<bool> {
    let unit = layout.unit() as u64;
    let mut first = [0u8; 16];
    let mut next = [0u8; 16];
    let n = unit as usize;
    let ok = read_at(file, &mut first[..n], data)? == n
        && read_at(file, &mut next[..n], data + records as u64 * unit)? == n;
    if !ok {
        return Ok(false);
    }
    Ok(match layout {
        Layout::Records16 => {
            let plausible = (kind::ENTER..=kind::LAST_V3).contains(&next[format::record_v3::KIND])
                && next[13..] == [0, 0, 0]
                && le_u64(&next, 0) != 0;
            let recent = if records > 0 {
                le_u64(&next, 0) >= le_u64(&first, 0)
            } else {
                !reused
            };
            plausible && recent
        }
        Layout::Words8 => {
            let w = le_u64(&next, 0);
            !reused && w != 0 && (kind::ENTER..=kind::LAST).contains(&word::kind(w))
        }
    })
}

/// Decides which [`Meta::Reused`] entries took effect and returns, per
/// slot that has any, the index of the first hand-off that describes the
/// slot's current content (hand-offs of the slot before it describe
/// overwritten content) and whether the slot was reused at all.
///
/// The entries of a slot, in file order, took effect up to the last one
/// whose lane is the lane in the slot's header with a `seq` no larger than
/// the header's (the new owner may have reused the chunk as its own since,
/// which raises the seq). An entry after it was written by a thread killed
/// before it re-initialised the header: the old content stands. When the
/// slot has no published header (killed while re-initialising it), all but
/// the last entry took effect.
fn apply_reuses(
    pf: &mut ProcessFile,
    event_chunks: &[(u32, u32, ChunkRef)],
    reuse_at: &[usize],
) -> BTreeMap<u32, (usize, bool)> {
    let mut by_slot: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in pf.reuses.iter().enumerate() {
        by_slot.entry(r.entry.slot).or_default().push(i);
    }
    let headers: BTreeMap<u32, (u32, u32)> = event_chunks
        .iter()
        .map(|(slot, lane, c)| (*slot, (*lane, c.seq)))
        .collect();
    let mut current_from = BTreeMap::new();
    for (slot, entries) in by_slot {
        let took_effect = match headers.get(&slot) {
            Some(&(lane, seq)) => entries
                .iter()
                .rposition(|&i| {
                    let e = &pf.reuses[i].entry;
                    e.lane == lane && e.seq <= seq
                })
                .map_or(0, |k| k + 1),
            None => entries.len() - 1,
        };
        for &i in &entries[..took_effect] {
            pf.reuses[i].effective = true;
        }
        let from = match took_effect {
            0 => 0,
            k => reuse_at.get(entries[k - 1]).copied().unwrap_or(0),
        };
        current_from.insert(slot, (from, took_effect > 0));
    }
    current_from
}

/// Adds what the flight recorder overwrote to each lane: the largest
/// header count (of surviving chunks, and of replaced headers) plus the
/// events in chunks other threads took.
fn lane_overwritten(pf: &mut ProcessFile) {
    for l in pf.lanes.values_mut() {
        l.overwritten = l.chunks.iter().map(|c| c.overwritten).max().unwrap_or(0);
    }
    for r in pf.reuses.iter().filter(|r| r.effective).map(|r| &r.entry) {
        if r.prev_overwritten > 0 {
            let l = pf.lanes.entry(r.prev_lane).or_default();
            l.overwritten = l.overwritten.max(r.prev_overwritten);
        }
    }
    for r in pf.reuses.iter().filter(|r| r.effective).map(|r| &r.entry) {
        for &(lane, events) in &r.overwritten {
            if events == 0 {
                continue;
            }
            let l = pf.lanes.entry(lane).or_default();
            // Saturating: the counts are untrusted.
            l.overwritten = l.overwritten.saturating_add(events);
            l.overwritten_until = Some(l.overwritten_until.map_or(r.ts, |t| t.max(r.ts)));
        }
    }
}

/// Assigns event chunks to lanes. A chunk continued by other threads
/// ([`Meta::Handoff`]) is split: records before the first hand-off belong
/// to the lane in its header, each later run to the lane that took it over.
/// Only the hand-offs after the slot's last effective reuse count
/// (`current_from`, see [`apply_reuses`]).
fn split_handoffs(
    pf: &mut ProcessFile,
    chunks: Vec<(u32, u32, ChunkRef)>,
    current_from: &BTreeMap<u32, (usize, bool)>,
    cap: u32,
    name: &str,
) {
    // When each slot was last taken over (effective `Reused`).
    let mut reused_at: BTreeMap<u32, u64> = BTreeMap::new();
    for r in pf.reuses.iter().filter(|r| r.effective).map(|r| &r.entry) {
        let t = reused_at.entry(r.slot).or_insert(r.ts);
        *t = (*t).max(r.ts);
    }
    let (current, retired): (Vec<_>, Vec<_>) =
        pf.handoffs.iter().copied().enumerate().partition(|(i, h)| {
            current_from
                .get(&h.slot)
                .is_none_or(|&(from, _)| *i >= from)
        });
    // A hand-off of overwritten content no longer splits the chunk, but
    // what its lane lost before the segment is still that lane's: the
    // entry is the only place that counts it.
    for (_, h) in retired {
        if h.lost_before == 0 {
            continue;
        }
        pf.lanes.entry(h.lane).or_default().note_lost(
            h.tid,
            h.lost_before,
            reused_at.get(&h.slot).copied(),
        );
    }
    let mut handoffs: Vec<Handoff> = current.into_iter().map(|(_, h)| h).collect();
    handoffs.sort_by_key(|h| (h.slot, h.start));
    for (slot, lane, c) in chunks {
        let mine: Vec<&Handoff> = handoffs.iter().filter(|h| h.slot == slot).collect();
        let first_end = mine.first().map_or(c.records, |h| h.start.min(c.records));
        // Losses after the chunk filled belong to its last owner.
        let lost_after = if mine.is_empty() { c.lost_after } else { 0 };
        let l = pf.lanes.entry(lane).or_default();
        if l.tid == 0 {
            l.tid = c.tid;
        }
        l.chunks.push(ChunkRef {
            records: first_end,
            lost_after,
            ..c
        });
        for (i, h) in mine.iter().enumerate() {
            if h.start > cap {
                pf.warnings.push(format!("{name}: hand-off of chunk {slot}: field `start` is {}, past the chunk's {cap} records; skipped", h.start));
                continue;
            }
            let end = mine
                .get(i + 1)
                .map_or(c.records, |n| n.start)
                .min(c.records);
            let l = pf.lanes.entry(h.lane).or_default();
            if l.tid == 0 {
                l.tid = h.tid;
            }
            l.chunks.push(ChunkRef {
                offset: c.offset + h.start as u64 * c.layout.unit() as u64,
                layout: c.layout,
                seq: h.seq,
                records: end.saturating_sub(h.start),
                lost_before: h.lost_before,
                overwritten: 0,
                lost_after: if i + 1 == mine.len() { c.lost_after } else { 0 },
                tid: h.tid,
            });
        }
    }
}

fn decode_meta(pf: &mut ProcessFile, b: &[u8], seq: u32, name: &str, reuse_at: &mut Vec<usize>) {
    for entry in format::Entries::new(b) {
        match entry {
            Ok(Meta::Process(info)) => pf.info = Some(info),
            Ok(Meta::Callsite {
                id,
                kind,
                name,
                path,
                file,
                line,
            }) => {
                pf.sites.insert(
                    id,
                    Site {
                        kind,
                        name,
                        path,
                        file,
                        line,
                    },
                );
            }
            Ok(Meta::Thread { lane, tid, name }) => {
                let l = pf.lanes.entry(lane).or_default();
                l.tid = tid;
                l.name = name;
            }
            Ok(Meta::Anchor(a)) => pf.anchors.push(a),
            Ok(Meta::Handoff(h)) => pf.handoffs.push(h),
            Ok(Meta::Reused(entry)) => {
                reuse_at.push(pf.handoffs.len());
                pf.reuses.push(Reuse {
                    entry,
                    effective: false,
                });
            }
            Ok(Meta::Lost(Lost {
                lane,
                tid,
                name: thread,
                ts,
                events,
            })) => {
                if lane == 0 {
                    pf.warnings.push(format!(
                        "{name}: metadata chunk {seq}: a `Lost` entry of {events} events names lane 0, which no thread has; they count for the process only"
                    ));
                } else {
                    let l = pf.lanes.entry(lane).or_default();
                    if l.name.is_empty() {
                        l.name = thread;
                    }
                    l.note_lost(tid, events, Some(ts));
                }
            }
            Err(EntryError::Stray { bytes }) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: {bytes} stray bytes at the end"
            )),
            Err(EntryError::Overrun { len }) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: entry length {len} runs past the committed bytes; rest of the chunk skipped"
            )),
            Err(EntryError::Unknown { variant }) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: entry of unknown kind {variant} (this reader knows {}; a newer writer?); skipped",
                Meta::VARIANTS
            )),
            Err(EntryError::Undecodable(e)) => pf.warnings.push(format!(
                "{name}: metadata chunk {seq}: undecodable entry ({e}); skipped"
            )),
        }
    }
}

/// A decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// Timestamp in the process clock.
    pub ts: u64,
    /// Callsite id.
    pub site: u32,
    /// Record kind.
    pub kind: u8,
    /// Payload record (flows, counters).
    pub payload: Option<[u64; 2]>,
}

/// Decodes records from `bytes` into `out`. Returns how many records were
/// malformed (unknown kind, payload missing at the end of the chunk, format
/// 4 events before the segment's first time base) and how many records
/// (format 4: words) were consumed: when `at_end` is false, an event whose
/// payload lies past `bytes` is left for the next call. `base` carries the
/// format 4 time base from one call to the next.
pub fn decode_records(
    layout: Layout,
    bytes: &[u8],
    base: &mut Option<u64>,
    out: &mut Vec<RawEvent>,
    at_end: bool,
) -> (u64, usize) {
    match layout {
        Layout::Records16 => decode_records16(bytes, out, at_end),
        Layout::Words8 => decode_words8(bytes, base, out, at_end),
    }
}

fn decode_records16(bytes: &[u8], out: &mut Vec<RawEvent>, at_end: bool) -> (u64, usize) {
    let mut bad = 0;
    let mut i = 0;
    let n = bytes.len() / 16;
    while i < n {
        let r = &bytes[i * 16..i * 16 + 16];
        let k = r[format::record_v3::KIND];
        if !(kind::ENTER..=kind::LAST_V3).contains(&k) {
            bad += 1;
            i += 1;
            continue;
        }
        let payload = if kind::has_payload(k) {
            if i + 1 >= n {
                if at_end {
                    bad += 1;
                    i = n;
                }
                break;
            }
            let p = &bytes[(i + 1) * 16..(i + 1) * 16 + 16];
            Some([le_u64(p, 0), le_u64(p, 8)])
        } else {
            None
        };
        out.push(RawEvent {
            ts: le_u64(r, format::record_v3::TS),
            site: le_u32(r, format::record_v3::SITE),
            kind: k,
            payload,
        });
        i += if payload.is_some() { 2 } else { 1 };
    }
    (bad, i)
}

fn decode_words8(
    bytes: &[u8],
    base: &mut Option<u64>,
    out: &mut Vec<RawEvent>,
    at_end: bool,
) -> (u64, usize) {
    let mut bad = 0;
    let mut i = 0;
    let n = bytes.len() / 8;
    while i < n {
        let w = le_u64(bytes, i * 8);
        let k = word::kind(w);
        if !(kind::ENTER..=kind::LAST).contains(&k) {
            bad += 1;
            i += 1;
            continue;
        }
        let pw = kind::payload_words(k) as usize;
        if i + pw >= n {
            if at_end {
                bad += 1;
                i = n;
            }
            break;
        }
        if k == kind::BASE {
            *base = Some(le_u64(bytes, (i + 1) * 8));
            i += 2;
            continue;
        }
        i += 1 + pw;
        let Some(b) = *base else {
            bad += 1;
            continue;
        };
        let payload = (pw == 2).then(|| [le_u64(bytes, (i - 2) * 8), le_u64(bytes, (i - 1) * 8)]);
        out.push(RawEvent {
            ts: word::ts(w, b),
            site: word::site(w),
            kind: k,
            payload,
        });
    }
    (bad, i)
}

/// Records read per block: the merge keeps one block per thread in memory,
/// so its memory is bounded by the number of threads, not by chunk size.
pub const BLOCK_RECORDS: u32 = 1024;

/// Streams the events of one chunk, a block at a time.
#[derive(Debug)]
pub struct RecordReader {
    chunk: ChunkRef,
    next: u32,
    /// Format 4: the time base in force.
    base: Option<u64>,
    bytes: Vec<u8>,
    buf: Vec<RawEvent>,
    pos: usize,
    /// Malformed records skipped so far.
    pub bad: u64,
    /// Blocks that could not be read.
    pub io_errors: u64,
}

impl RecordReader {
    /// A reader positioned at the chunk's first record.
    pub fn new(chunk: ChunkRef) -> RecordReader {
        RecordReader {
            chunk,
            next: 0,
            base: None,
            bytes: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            bad: 0,
            io_errors: 0,
        }
    }

    /// The chunk being read.
    pub fn chunk(&self) -> &ChunkRef {
        &self.chunk
    }

    /// The next event, or `None` at the end of the chunk.
    pub fn next_event(&mut self, file: &File) -> Option<RawEvent> {
        loop {
            if let Some(e) = self.buf.get(self.pos) {
                self.pos += 1;
                return Some(*e);
            }
            if self.next >= self.chunk.records {
                return None;
            }
            let want = (self.chunk.records - self.next).min(BLOCK_RECORDS);
            let at_end = self.next + want == self.chunk.records;
            let unit = self.chunk.layout.unit();
            self.bytes.resize(want as usize * unit as usize, 0);
            let off = self.chunk.offset + self.next as u64 * unit as u64;
            self.buf.clear();
            self.pos = 0;
            match read_at(file, &mut self.bytes, off) {
                Ok(n) if n == self.bytes.len() => {
                    let (bad, used) = decode_records(
                        self.chunk.layout,
                        &self.bytes,
                        &mut self.base,
                        &mut self.buf,
                        at_end,
                    );
                    self.bad += bad;
                    // Always advance, even past a lone trailing event.
                    self.next += (used as u32).max(1).min(want);
                }
                _ => {
                    self.io_errors += 1;
                    self.next = self.chunk.records;
                }
            }
        }
    }
}

/// Lists the buffer files (`*.mpb`) of a session directory, sorted.
pub fn list_session(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mpb"))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn ev(lo: u64, site: u32, k: u8) -> u64 {
        word::new(lo, word::site_kind(site, k))
    }

    /// Format 4 words: a timestamp's high half comes from the last BASE, a
    /// payload follows its event, an event before any BASE or a payload cut
    /// off by the chunk's end is malformed, and an unknown kind is skipped.
    #[test]
    fn words_decode_against_their_time_base() {
        let base1 = 0x0000_0007_FFFF_FFF0u64;
        let base2 = 0x0000_0008_0000_0005u64;
        let words = [
            ev(1, 3, kind::ENTER), // before any BASE: malformed
            word::site_kind(0, kind::BASE),
            base1,
            ev(0xFFFF_FFF1, 3, kind::ENTER),
            ev(0xFFFF_FFF2, 4, kind::COUNTER),
            42,
            0,
            word::site_kind(0, kind::BASE),
            base2,
            ev(6, 3, kind::EXIT),
            ev(7, 5, 15), // unknown kind: skipped
            ev(8, 4, kind::COUNTER),
            9, // its second payload word is missing
        ];
        let mut out = Vec::new();
        let mut base = None;
        let (bad, used) = decode_records(Layout::Words8, &bytes(&words), &mut base, &mut out, true);
        assert_eq!(bad, 3);
        assert_eq!(used, words.len());
        assert_eq!(base, Some(base2));
        let got: Vec<(u64, u32, u8, Option<[u64; 2]>)> = out
            .iter()
            .map(|e| (e.ts, e.site, e.kind, e.payload))
            .collect();
        assert_eq!(
            got,
            [
                (0x7_FFFF_FFF1, 3, kind::ENTER, None),
                (0x7_FFFF_FFF2, 4, kind::COUNTER, Some([42, 0])),
                (0x8_0000_0006, 3, kind::EXIT, None),
            ]
        );
    }

    /// In the middle of a chunk, an event whose payload lies past the block
    /// is left for the next block, and the time base carries over.
    #[test]
    fn an_event_split_across_blocks_waits_for_the_next_one() {
        let words = [
            word::site_kind(0, kind::BASE),
            0x5_0000_0000,
            ev(1, 2, kind::FLOW_OUT),
            7,
        ];
        let (mut out, mut base) = (Vec::new(), None);
        let (bad, used) =
            decode_records(Layout::Words8, &bytes(&words), &mut base, &mut out, false);
        assert_eq!((bad, used, out.len()), (0, 2, 0));
        let rest = [ev(1, 2, kind::FLOW_OUT), 7, 8];
        let (bad, used) = decode_records(Layout::Words8, &bytes(&rest), &mut base, &mut out, true);
        assert_eq!((bad, used), (0, 3));
        assert_eq!(out[0].ts, 0x5_0000_0001);
        assert_eq!(out[0].payload, Some([7, 8]));
    }
}
