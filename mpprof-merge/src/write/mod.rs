//! Renderers: each output format, and the text of the analyses. A trace
//! writer consumes the merged event stream once; the text writers render
//! what [`crate::analysis`] computed.

pub mod check;
pub mod chrome;
pub mod critical_path;
pub mod escape;
pub mod firefox;
pub mod folded;
pub mod openmetrics;
pub mod otlp;
pub mod perfetto;
pub mod summary;

use std::collections::HashSet;
use std::io::{self, Write};

use mpprof_format::FlowId;

use crate::hash::FastMap;
use crate::read::Losses;
use crate::trace::Session;

/// Process and thread ids as shown in the output: the real pid and tid when
/// they are unique in the session, else synthetic ones (pid reuse, several
/// hosts, thread ids reused by short-lived threads).
pub struct Tracks {
    pids: Vec<u32>,
    tids: FastMap<(usize, u32), u32>,
    /// Pids of the hosts' "system" processes (see [`Tracks::host_pid`]).
    host_pids: Vec<u32>,
}

impl Tracks {
    /// Assigns the ids, for the processes of `s` and `hosts` "system"
    /// processes (see [`crate::resources::Resources::hosts`]).
    pub fn new(s: &Session, hosts: usize) -> Tracks {
        let mut used_pids = HashSet::new();
        let mut pids = Vec::new();
        let mut synthetic = 0x4000_0000u32;
        for p in &s.processes {
            let mut pid = p.file.pid;
            if pid == 0 || !used_pids.insert(pid) {
                while !used_pids.insert(synthetic) {
                    synthetic += 1;
                }
                pid = synthetic;
            }
            pids.push(pid);
        }
        let mut used_tids: HashSet<u32> = pids.iter().copied().collect();
        let mut assigned = HashSet::new();
        let mut tids = FastMap::default();
        for (pi, p) in s.processes.iter().enumerate() {
            for (&lane, l) in &p.file.lanes {
                let mut tid = l.tid;
                // The main thread's tid equals its pid, which is taken already.
                let is_main = tid == p.file.pid && pids[pi] == tid;
                let fresh = tid != 0 && (is_main || used_tids.insert(tid)) && assigned.insert(tid);
                if !fresh {
                    while !used_tids.insert(synthetic) {
                        synthetic += 1;
                    }
                    tid = synthetic;
                    assigned.insert(tid);
                }
                tids.insert((pi, lane), tid);
            }
        }
        let host_pids = (0..hosts)
            .map(|_| {
                while !used_tids.insert(synthetic) {
                    synthetic += 1;
                }
                synthetic
            })
            .collect();
        Tracks {
            pids,
            tids,
            host_pids,
        }
    }

    /// Output pid of the "system" process of host `h` of
    /// [`crate::resources::Resources::hosts`]: a synthetic one.
    pub fn host_pid(&self, h: usize) -> u32 {
        self.host_pids[h]
    }

    /// Output pid of process `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.pids[i]
    }

    /// Output tid of a lane.
    pub fn tid(&self, i: usize, lane: u32) -> u32 {
        self.tids.get(&(i, lane)).copied().unwrap_or(self.pids[i])
    }

    /// Output tid of OS thread `tid` of process `i` (`p`): its lane's, or
    /// the OS thread id for a thread that recorded no event (sampled only).
    pub fn thread_tid(&self, i: usize, p: &crate::trace::Process, tid: u32) -> u32 {
        match p.file.lane_of_tid(tid) {
            Some(lane) => self.tid(i, lane),
            None => tid,
        }
    }
}

/// The label of thread `tid` of process `p` in resource track names: its
/// lane's name when it recorded, else its name when sampled (`comm`),
/// else its tid.
pub(crate) fn thread_label(p: &crate::trace::Process, tid: u32, comm: &str) -> String {
    match p.file.lanes.values().find(|l| l.tid == tid) {
        Some(l) if !l.name.is_empty() => format!("{} ({tid})", l.name),
        _ if !comm.is_empty() => format!("{comm} ({tid})"),
        _ => format!("thread {tid}"),
    }
}

/// Writes who lost events, a line per thread (at most `limit`, most
/// first), each line starting with `indent`.
pub(crate) fn losses(
    out: &mut dyn Write,
    indent: &str,
    losses: &Losses,
    limit: usize,
) -> io::Result<()> {
    for l in losses.lanes.iter().take(limit) {
        let name = if l.name.is_empty() {
            "(unnamed)".to_owned()
        } else {
            format!("{:?}", l.name)
        };
        let mut what = Vec::new();
        if l.not_recorded > 0 {
            what.push(format!("{} not recorded", l.not_recorded));
        }
        if l.overwritten > 0 {
            what.push(format!("{} overwritten", l.overwritten));
        }
        writeln!(
            out,
            "{indent}thread {name} (lane {}, tid {}): {}",
            l.lane,
            l.tid,
            what.join(", ")
        )?;
    }
    if losses.lanes.len() > limit {
        let rest = &losses.lanes[limit..];
        let events = rest.iter().fold(0u64, |a, l| a.saturating_add(l.total()));
        writeln!(
            out,
            "{indent}... {} more threads: {events} events",
            rest.len()
        )?;
    }
    if losses.unattributed > 0 {
        writeln!(
            out,
            "{indent}no thread named: {} (shown on the process's first thread; a thread without a chunk that did not get to write its losses, e.g. killed)",
            losses.unattributed
        )?;
    }
    Ok(())
}

/// The 64-bit id a flow gets in both trace formats (Perfetto keys flows
/// by a u64). A
/// mix of both halves; a collision needs ~2^32 flows in one trace.
pub fn flow_key(f: FlowId) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(f.process() ^ mix(f.seq()))
}

/// The slice name of a traced I/O call: `read pipe worker stdout`.
pub(crate) fn io_name(
    p: &crate::trace::Process,
    channel: u32,
    call: mpprof_format::io::Call,
) -> String {
    let op = match call.op {
        mpprof_format::io::Op::Read => "read",
        mpprof_format::io::Op::Write => "write",
    };
    match p.file.channels.get(&channel) {
        Some(c) => format!("{op} {} {}", c.kind.name(), c.label),
        None => format!("{op} channel #{channel}"),
    }
}

/// An I/O call's error as the OS says it (`Broken pipe (os error 32)`).
pub(crate) fn io_error(errno: u16) -> String {
    if errno == u16::MAX {
        "error (no OS error number)".to_owned()
    } else {
        std::io::Error::from_raw_os_error(i32::from(errno)).to_string()
    }
}
