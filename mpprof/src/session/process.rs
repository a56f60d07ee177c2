//! Facts about this process, for its file: its random uid, and what the
//! first metadata entry says (executable, arguments, host, clock domain,
//! the flow that started it).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::buffer::Config;
use crate::clock;
use crate::format::{ClockKind, FlowId, ProcessInfo};

/// Random process uid, also the `process` half of this process's flow ids.
pub(super) static PROCESS_UID: AtomicU64 = AtomicU64::new(0);

/// This process's unique id (64 random bits, drawn on first use).
pub fn process_uid() -> u64 {
    // Relaxed: any thread that draws it stores a valid random value; the
    // compare_exchange keeps the first one.
    let v = PROCESS_UID.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let mut bytes = [0u8; 8];
    let mut fresh = getrandom::fill(&mut bytes)
        .map(|_| u64::from_le_bytes(bytes))
        .unwrap_or(0);
    if fresh == 0 {
        fresh = fallback_random();
    }
    match PROCESS_UID.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(existing) => existing,
    }
}

fn fallback_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(clock::realtime_ns());
    h.write_u32(std::process::id());
    h.finish() | 1
}

pub(super) fn process_info(
    uid: u64,
    clock: ClockKind,
    clock_hz: f64,
    config: Config,
) -> ProcessInfo {
    let parent_flow = parent_flow_from_env();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut argv = Vec::new();
    // Keep the process entry well inside one metadata entry: each argument
    // costs its bytes plus up to 5 bytes of length prefix.
    let mut budget = 2048usize;
    for a in std::env::args_os() {
        let a = a.to_string_lossy().into_owned();
        if a.len() + 5 > budget || argv.len() >= 256 {
            argv.push("…".to_owned());
            break;
        }
        budget -= a.len() + 5;
        argv.push(a);
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let host_id = crate::env::raw("MPPROF_HOST_ID")
        .filter(|s| !s.is_empty())
        .unwrap_or(boot_id);
    ProcessInfo {
        pid: std::process::id(),
        // SAFETY: getppid has no preconditions.
        ppid: unsafe { libc::getppid() } as u32,
        uid,
        parent_flow,
        exe: truncate(exe, 512),
        argv,
        hostname: truncate(hostname(), 128),
        host_id: truncate(host_id, 128),
        time_ns: time_namespace(),
        clock,
        clock_hz,
        policy: config.policy,
    }
}

fn truncate(s: String, max: usize) -> String {
    crate::chunks::truncate(&s, max).to_owned()
}

/// The flow that started this process: `MPPROF_PARENT_FLOW`, trusted only
/// when `MPPROF_PARENT_PID` is our parent (a grandchild started without
/// `mpprof::spawn` inherits the variables but was not started by that flow).
fn parent_flow_from_env() -> Option<FlowId> {
    let flow: FlowId = crate::env::parsed("MPPROF_PARENT_FLOW", "a flow id (32 hex digits)")?;
    let ppid: u32 = crate::env::parsed("MPPROF_PARENT_PID", "a pid")?;
    // SAFETY: getppid has no preconditions.
    (ppid == unsafe { libc::getppid() } as u32).then_some(flow)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Inode of this process's time namespace (`time:[N]`), 0 if unknown.
fn time_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/time")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_prefix("time:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}
