//! What reading a process file yields: the file's facts, its lanes and
//! their chunks, and what each thread lost.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use mpprof_format::{
    Anchor, Channel, Handoff, Module, Policy, ProcessInfo, ProfilerInfo, Resource, Reused,
    SamplerInfo, SiteKind,
};

use super::records::{ChunkRef, RecordReader};
use super::source::Source;

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
    /// The file is empty: its process created it but could not write its
    /// header (no space on the device, or a file size limit), or was killed
    /// in between, so it recorded nothing.
    #[error("{path}: the file is empty: its process recorded nothing (no space for the file's header: disk full or a file size limit; or it was killed as it created the file)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Not a regular file (a FIFO, socket, device or directory named like a
    /// buffer file): not opened, or not read.
    #[error("{path}: not a buffer file: it is a {kind}, not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
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
    pub(super) fn note_lost(&mut self, tid: u32, events: u64, until: Option<u64>) {
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
    /// Its bytes, for reading records.
    pub file: Source,
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
    /// The resource sampler's facts (the last `Meta::Sampler` entry); `None`
    /// for a file without (a writer from before resource sampling).
    pub sampler: Option<SamplerInfo>,
    /// Counter callsites that hold resource samples, by callsite id (see
    /// `mpprof_format::resource`).
    pub resources: BTreeMap<u32, Resource>,
    /// The sampling profiler's facts (the last `Meta::Profiler` entry);
    /// `None` when the process did not sample (see
    /// `mpprof_format::profile`).
    pub profiler: Option<ProfilerInfo>,
    /// Executable mappings of the loaded objects (`Meta::Module`), in
    /// file order.
    pub modules: Vec<Module>,
    /// Interned stacks by id (`Meta::Stack`), leaf first.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// Traced I/O channels by id (`Meta::Channel`, see
    /// `mpprof_format::io`).
    pub channels: BTreeMap<u32, Channel>,
}

impl ProcessFile {
    /// Whether the process recorded nothing because its file could not
    /// grow past the header (no space, or a file size limit): no process
    /// information, no anchor, no thread, and failed reservations.
    pub fn recorded_nothing(&self) -> bool {
        self.info.is_none()
            && self.anchors.is_empty()
            && self.lanes.is_empty()
            && self.lost_chunks > 0
    }

    /// The lane of the resource sampler's thread, which holds only resource
    /// samples (see [`crate::resources`]).
    pub fn sampler_lane(&self) -> Option<u32> {
        self.lane_of_tid(self.sampler.as_ref()?.tid)
    }

    /// The lane of the profiler's thread, which holds the stack samples and
    /// off-CPU intervals (see [`crate::profile`]).
    pub fn profiler_lane(&self) -> Option<u32> {
        self.lane_of_tid(self.profiler.as_ref()?.tid)
    }

    /// The lane of OS thread `tid` (the first, if its id was reused), if
    /// it recorded any event.
    pub fn lane_of_tid(&self, tid: u32) -> Option<u32> {
        self.lanes
            .iter()
            .find(|(_, l)| l.tid == tid && tid != 0)
            .map(|(&lane, _)| lane)
    }

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
