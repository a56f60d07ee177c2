//! System call tracing (`MPPROF_SYSCALLS=1`), run by the profiler: the
//! kernel's `raw_syscalls:sys_enter` and `sys_exit` tracepoints on the
//! process's own threads (`perf_event_open`, like the samples; see
//! `crate::perf`), each enter paired with its exit into a `SYSCALL` record
//! (number, error, start and duration) on the sampler's lane. Never ptrace.
//!
//! The kernel allows it to root (or `CAP_PERFMON`), or with
//! `perf_event_paranoid` at -1; tracefs must be mounted (the tracepoints'
//! ids are read from `events/raw_syscalls/*/id`). Otherwise one warning
//! says why, and the rest of the recording goes on.

use std::collections::HashMap;

use crate::format::kind;
use crate::format::profile::Syscall;
use crate::perf::{self, Perf, Record};
use crate::record;

/// Where tracefs is looked for.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The two tracepoints' events and the calls under way.
pub(crate) struct Syscalls {
    enter: Perf,
    exit: Perf,
    /// Threads inside a call: when it began, and its number.
    open: HashMap<u32, (u64, u16)>,
    /// This drain's hits: (time, tid, enter, number or return value).
    batch: Vec<(u64, u32, bool, i64)>,
}

impl Syscalls {
    /// Opens the tracepoints for every thread but `skip`; the error says
    /// why they cannot be.
    pub(crate) fn open(skip: u32) -> Result<Syscalls, String> {
        let id = |name: &str| -> Result<u64, String> {
            for root in TRACEFS {
                let p = format!("{root}/events/raw_syscalls/{name}/id");
                if let Ok(s) = std::fs::read_to_string(&p) {
                    return s.trim().parse().map_err(|_| format!("{p}: not a number"));
                }
            }
            Err("tracefs is not mounted at /sys/kernel/tracing (mount -t tracefs nodev /sys/kernel/tracing), or raw_syscalls is not there".into())
        };
        let cfg = |tp| perf::Config {
            hz: 0,
            switches: false,
            stack: 0,
            ring: 256 << 10,
            tracepoint: Some(tp),
        };
        let why = |e: std::io::Error| {
            let hint = match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    " (tracepoints need root, CAP_PERFMON or kernel.perf_event_paranoid -1)"
                }
                _ => "",
            };
            format!("perf_event_open of raw_syscalls: {e}{hint}")
        };
        let enter = Perf::open(cfg(id("sys_enter")?), skip).map_err(why)?;
        let exit = Perf::open(cfg(id("sys_exit")?), skip).map_err(why)?;
        Ok(Syscalls {
            enter,
            exit,
            open: HashMap::new(),
            batch: Vec::new(),
        })
    }

    /// Pairs what the kernel wrote since the last call into `SYSCALL`
    /// records (when `room`; else counted in the returned drops); returns
    /// (kernel records lost, calls dropped).
    pub(crate) fn drain(&mut self, room: bool) -> (u64, u64) {
        let mut lost = 0;
        let batch = &mut self.batch;
        // Both events' raw data: common fields (8 bytes), then `long id`;
        // sys_exit's `long ret` after it.
        for (enter, p) in [(true, &mut self.enter), (false, &mut self.exit)] {
            p.drain(|r| match r {
                Record::Raw { tid, time, data } => {
                    let field = |at: usize| {
                        data.get(at..at + 8)
                            .map(|b| i64::from_ne_bytes(b.try_into().unwrap_or_default()))
                    };
                    let v = if enter { field(8) } else { field(16) };
                    if let Some(v) = v {
                        batch.push((time, tid, enter, v));
                    }
                }
                Record::Lost(n) => lost += n,
                _ => {}
            });
        }
        self.batch.sort_by_key(|x| (x.0, !x.2));
        let mut dropped = 0;
        for (time, tid, enter, v) in std::mem::take(&mut self.batch) {
            if enter {
                self.open.insert(tid, (time, v.clamp(0, 4095) as u16));
                continue;
            }
            let Some((start, nr)) = self.open.remove(&tid) else {
                continue; // entered before the tracing began
            };
            if !room {
                dropped += 1;
                continue;
            }
            let call = Syscall {
                nr,
                errno: if (-4095..0).contains(&v) {
                    (-v) as u16
                } else {
                    0
                },
                dur_ns: time.saturating_sub(start),
            };
            record::record_with_payload(tid, kind::SYSCALL, [start, call.pack()]);
        }
        (lost, dropped)
    }
}
