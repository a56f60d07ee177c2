//! A trace: the processes of one or more session directories, each file
//! read and its clock fitted, the clock domains aligned and the processes
//! in start order. [`crate::merge`] streams its events in one time order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mpprof_format::FlowId;

use crate::align::{domains, ClockMap, Correction};
use crate::read::{self, ProcessFile, RecordReader, Site};

/// A process of the session, with its clock mapping.
#[derive(Debug)]
pub struct Process {
    /// The decoded file.
    pub file: ProcessFile,
    /// Record timestamps to CLOCK_MONOTONIC.
    pub clock: ClockMap,
    /// What aligning the clock domains does to this process's times
    /// (nothing within one domain).
    pub correction: Correction,
    /// First timestamp (ns, aligned).
    pub start_ns: i64,
    /// Last timestamp (ns, aligned): last event or final anchor.
    pub end_ns: i64,
    /// Lane of the process's last event (its first lane when it has no
    /// event): where a thing that starts at the process's end, such as the
    /// arrow of a parent's `mpprof::wait`, is drawn.
    pub end_lane: u32,
    /// The parent this process was linked to by its parent pid, when it was
    /// started without `mpprof::spawn` (a plain `std::process::Command` in
    /// a recorded process): see [`ParentLink`].
    pub parent_link: Option<ParentLink>,
}

/// A spawn edge the merge adds between a process that no recorded flow
/// started (its `parent_flow` is empty) and the session's process whose
/// pid is its parent pid. [`crate::merge`] yields it as a flow named
/// `spawn` with callsite [`LINK_SITE`]: out of the parent's first thread
/// and into the child's first thread, both at the child's start (the
/// recorder does not know when the parent called `fork`/`exec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentLink {
    /// Index of the parent in [`Session::processes`].
    pub parent: usize,
    /// The edge's flow id: the child's uid, sequence [`LINK_SEQ`] (the
    /// recorder's sequence numbers count up from 1 and never reach it).
    pub flow: FlowId,
}

/// Callsite id of the merge's spawn edges ([`ParentLink`]); the recorder
/// numbers its callsites from 1 up.
pub const LINK_SITE: u32 = u32::MAX;

/// Sequence number of a [`ParentLink`]'s flow id (bit 61).
pub const LINK_SEQ: u64 = 1 << 61;

impl Process {
    /// Callsite by id.
    pub fn site(&self, id: u32) -> Option<&Site> {
        self.file.sites.get(&id)
    }

    /// Display name of a callsite (`#<id>` if its metadata is missing).
    pub fn site_name(&self, id: u32) -> std::borrow::Cow<'_, str> {
        match self.file.sites.get(&id) {
            Some(s) => std::borrow::Cow::Borrowed(&s.name),
            None => std::borrow::Cow::Owned(format!("#{id}")),
        }
    }

    /// Aligned ns of a record timestamp.
    pub fn ns(&self, ts: u64) -> i64 {
        self.correction.apply(self.clock.to_ns(ts))
    }
}

/// Errors of [`Session::open`].
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A session directory could not be listed.
    #[error("cannot read session directory {path}: {error}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why. (In the message, not the error's `source()`, so that a
        /// report of the whole chain does not say it twice.)
        error: std::io::Error,
    },
    /// No usable buffer file.
    #[error("no readable mpprof buffer files (*.mpb) in {0}")]
    Empty(String),
}

/// A process that recorded nothing because its buffer file could not grow
/// (see [`Session::no_space`]). An empty file may also be a process killed
/// between creating its file and writing the header: nothing was recorded
/// either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoSpace {
    /// Its file.
    pub path: PathBuf,
    /// Its pid: from the header, or (an empty file) from the file's name.
    pub pid: Option<u32>,
    /// The file's length: 0, or its header.
    pub len: u64,
    /// The events it could not record (0 when the file is empty: no header
    /// to count them in).
    pub lost_events: u64,
}

impl std::fmt::Display for NoSpace {
    /// What happened, in a sentence: `process 12 recorded nothing: ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "process {pid} recorded nothing: ")?,
            None => write!(f, "{} recorded nothing: ", self.path.display())?,
        }
        if self.len == 0 {
            write!(
                f,
                "no space for its buffer file (it is empty: disk full or a file size limit; or the process was killed as it created it)"
            )
        } else {
            write!(
                f,
                "no space for its buffer file (it could not grow past its {}-byte header: disk full or a file size limit); {} events lost",
                self.len, self.lost_events
            )
        }
    }
}

/// Smallest one-way message latency assumed when aligning clock domains, ns.
pub const DEFAULT_MIN_LATENCY_NS: i64 = 1_000;

/// All processes of one or more session directories.
#[derive(Debug)]
pub struct Session {
    /// Processes, ordered by start time.
    pub processes: Vec<Process>,
    /// Files that could not be read at all, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Processes that recorded nothing for lack of space: their file is
    /// empty, or holds its header only. Not damage: what they lost is
    /// counted where their header could say it.
    pub no_space: Vec<NoSpace>,
    /// Paths named like buffer files that are not regular files (a FIFO,
    /// a socket, a device): not opened, with what they are.
    pub ignored: Vec<(PathBuf, String)>,
    /// How the clock domains were aligned.
    pub alignment: crate::align::domains::Alignment,
    /// Events yielded so far by this session's [`crate::merge::Events`]
    /// iterators, for progress reporting (see [`Session::events_merged`]).
    pub(crate) merged: AtomicU64,
}

impl Session {
    /// Reads every buffer file of the given session directories (or single
    /// `.mpb` files). A file that cannot be read is reported in
    /// [`Session::unreadable`] and the rest is merged.
    pub fn open<P: AsRef<Path>>(inputs: &[P]) -> Result<Session, OpenError> {
        let mut paths = Vec::new();
        for d in inputs {
            let d = d.as_ref();
            if !d.is_dir() {
                // A file (whatever it is: `read::open` opens regular files
                // only).
                paths.push(d.to_owned());
                continue;
            }
            paths.extend(read::list_session(d).map_err(|error| OpenError::Dir {
                path: d.to_owned(),
                error,
            })?);
        }
        let mut files = Vec::new();
        let mut unreadable = Vec::new();
        let mut no_space = Vec::new();
        let mut ignored = Vec::new();
        for p in paths {
            match read::open(&p) {
                Ok(f) if f.recorded_nothing() => no_space.push(NoSpace {
                    pid: Some(f.pid),
                    len: f.file.len().unwrap_or(0),
                    lost_events: f.lost_events,
                    path: p,
                }),
                Ok(f) => files.push(f),
                Err(read::ReadError::Empty { .. }) => no_space.push(NoSpace {
                    pid: pid_of_name(&p),
                    len: 0,
                    lost_events: 0,
                    path: p,
                }),
                Err(e @ read::ReadError::NotRegular { .. }) => ignored.push((p, e.to_string())),
                Err(e) => unreadable.push((p, e.to_string())),
            }
        }
        if files.is_empty() && no_space.is_empty() {
            let names: Vec<String> = inputs
                .iter()
                .map(|p| p.as_ref().display().to_string())
                .collect();
            let mut msg = names.join(", ");
            for (p, e) in unreadable.iter().chain(&ignored) {
                msg.push_str(&format!("\n  {}: {e}", p.display()));
            }
            return Err(OpenError::Empty(msg));
        }
        let mut s = Session::from_files(files);
        s.unreadable = unreadable;
        s.no_space = no_space;
        s.ignored = ignored;
        Ok(s)
    }

    /// A session of process files already read (from disk or from memory,
    /// see [`read::from_bytes`]): fits each process's clock, aligns the
    /// clock domains and orders the processes by start time.
    pub fn from_files(files: Vec<ProcessFile>) -> Session {
        let mut processes: Vec<Process> = files.into_iter().map(Process::new).collect();
        let inputs: Vec<(&ProcessFile, &ClockMap)> =
            processes.iter().map(|p| (&p.file, &p.clock)).collect();
        let (alignment, corrections) = domains::align(&inputs, DEFAULT_MIN_LATENCY_NS);
        for (p, c) in processes.iter_mut().zip(corrections) {
            p.start_ns = c.apply(p.start_ns);
            p.end_ns = c.apply(p.end_ns);
            p.correction = c;
        }
        processes.sort_by_key(|p| (p.start_ns, p.file.pid));
        link_parents(&mut processes);
        Session {
            alignment,
            processes,
            unreadable: Vec::new(),
            no_space: Vec::new(),
            ignored: Vec::new(),
            merged: AtomicU64::new(0),
        }
    }

    /// Earliest timestamp of the session (ns, aligned).
    pub fn start_ns(&self) -> i64 {
        self.processes.iter().map(|p| p.start_ns).min().unwrap_or(0)
    }

    /// Latest timestamp of the session (ns, aligned).
    pub fn end_ns(&self) -> i64 {
        self.processes.iter().map(|p| p.end_ns).max().unwrap_or(0)
    }

    /// The flows that `mpprof::wait` received, whose start no one
    /// recorded: `FlowId::child_exit` of each child's spawn flow -> (the
    /// child's process index, the lane of its last event, its end). A
    /// writer draws the start there when it reaches the receive.
    pub fn child_exits(&self) -> HashMap<FlowId, (usize, u32, i64)> {
        self.processes
            .iter()
            .enumerate()
            .filter_map(|(pi, p)| {
                let flow = p.file.info.as_ref()?.parent_flow?.child_exit();
                Some((flow, (pi, p.end_lane, p.end_ns)))
            })
            .collect()
    }

    /// Records committed in all files: about the number of events a merge
    /// yields (payload records make it a little more; repairs and loss
    /// markers add a few events). The denominator of a progress bar.
    pub fn total_records(&self) -> u64 {
        self.processes
            .iter()
            .fold(0u64, |a, p| a.saturating_add(p.file.committed_records()))
    }

    /// Events yielded so far by all iterators from [`Session::events`]
    /// (in steps of 65536, and exactly when an iterator ends). It may be
    /// read from another thread while a writer runs, to show progress.
    pub fn events_merged(&self) -> u64 {
        self.merged.load(Ordering::Relaxed)
    }
}

impl Process {
    fn new(file: ProcessFile) -> Process {
        let clock = ClockMap::fit(file.info.as_ref(), &file.anchors);
        let mut p = Process {
            file,
            clock,
            correction: Correction::default(),
            start_ns: 0,
            end_ns: 0,
            end_lane: 0,
            parent_link: None,
        };
        let (start, end, end_lane) = p.time_span();
        p.start_ns = start;
        p.end_ns = end;
        p.end_lane = end_lane;
        p
    }

    /// First and last timestamps: the first records and last records of all
    /// lanes and the anchors; and the lane of the last event.
    fn time_span(&self) -> (i64, i64, u32) {
        let mut start = i64::MAX;
        let mut end = i64::MIN;
        let mut end_lane = self.file.lanes.keys().next().copied().unwrap_or(0);
        let mut last_event = i64::MIN;
        for a in &self.file.anchors {
            let t = self.ns(a.ts);
            start = start.min(t);
            end = end.max(t);
        }
        let sampler = self.file.sampler.as_ref().map(|s| s.tid);
        for (&lane, l) in &self.file.lanes {
            // The sampler's final sample is not where the process ended its
            // work: its lane is never the end lane.
            let only_samples = sampler == Some(l.tid);
            if let Some(f) = l
                .chunks
                .first()
                .and_then(|c| RecordReader::new(*c).next_event(&self.file.file))
            {
                start = start.min(self.ns(f.ts));
            }
            if let Some(c) = l.chunks.last() {
                let mut r = RecordReader::new(*c);
                let mut last = None;
                while let Some(e) = r.next_event(&self.file.file) {
                    last = Some(e);
                }
                if let Some(e) = last {
                    let t = self.ns(e.ts);
                    end = end.max(t);
                    if t > last_event && !only_samples {
                        last_event = t;
                        end_lane = lane;
                    }
                }
            }
        }
        if start > end {
            (0, 0, end_lane)
        } else {
            (start, end, end_lane)
        }
    }
}

/// Links each process that no recorded flow started to its parent, found
/// by pid: the process of the same host whose pid is the child's parent
/// pid and that started before it (the latest such, should the pid have
/// been reused). Both need a thread with records to carry the edge.
/// `processes` is in start order.
fn link_parents(processes: &mut [Process]) {
    let mut by_pid: HashMap<(&str, u32), Vec<usize>> = HashMap::new();
    for (i, p) in processes.iter().enumerate() {
        if let Some(info) = &p.file.info {
            if !p.file.lanes.is_empty() {
                by_pid.entry((&info.host_id, info.pid)).or_default().push(i);
            }
        }
    }
    let mut links = Vec::new();
    for (i, p) in processes.iter().enumerate() {
        let Some(info) = &p.file.info else { continue };
        if info.parent_flow.is_some() || p.file.lanes.is_empty() {
            continue;
        }
        let parent = by_pid
            .get(&(info.host_id.as_str(), info.ppid))
            .and_then(|c| c.iter().rev().find(|&&q| q < i))
            .copied();
        if let Some(parent) = parent {
            let flow = FlowId::from_parts(info.uid, LINK_SEQ);
            links.push((i, ParentLink { parent, flow }));
        }
    }
    for (i, link) in links {
        for pi in [i, link.parent] {
            processes[pi].file.sites.entry(LINK_SITE).or_insert(Site {
                kind: mpprof_format::SiteKind::Flow,
                name: mpprof_format::flow_name::SPAWN.to_owned(),
                path: mpprof_format::flow_name::SPAWN.to_owned(),
                file: String::new(),
                line: 0,
            });
        }
        processes[i].parent_link = Some(link);
    }
}

/// The pid a buffer file's name starts with (`<pid>-<uid>.mpb`).
fn pid_of_name(p: &Path) -> Option<u32> {
    p.file_name()?.to_str()?.split('-').next()?.parse().ok()
}
