//! Output formats. Each writer consumes the merged event stream once.

pub mod chrome;
pub mod folded;
pub mod perfetto;
pub mod summary;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::merge::Session;

/// A multiply-rotate hasher for the small integer keys looked up once or
/// twice per event (SipHash showed in profiles); the keys come from the
/// session's own files.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

/// The flows that `mpprof::wait` received, whose start no one recorded:
/// `FlowId::child_exit` of each child's spawn flow -> (the child's process
/// index, the lane of its last event, its end). A writer draws the start
/// there when it reaches the receive.
pub(crate) fn child_exits(session: &Session) -> HashMap<mpprof_format::FlowId, (usize, u32, i64)> {
    session
        .processes
        .iter()
        .enumerate()
        .filter_map(|(pi, p)| {
            let flow = p.file.info.as_ref()?.parent_flow?.child_exit();
            Some((flow, (pi, p.end_lane, p.end_ns)))
        })
        .collect()
}

/// Process and thread ids as shown in the output: the real pid and tid when
/// they are unique in the session, else synthetic ones (pid reuse, several
/// hosts, thread ids reused by short-lived threads).
pub struct Tracks {
    pids: Vec<u32>,
    tids: FastMap<(usize, u32), u32>,
}

impl Tracks {
    /// Assigns the ids.
    pub fn new(s: &Session) -> Tracks {
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
        Tracks { pids, tids }
    }

    /// Output pid of process `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.pids[i]
    }

    /// Output tid of a lane.
    pub fn tid(&self, i: usize, lane: u32) -> u32 {
        self.tids.get(&(i, lane)).copied().unwrap_or(self.pids[i])
    }
}
