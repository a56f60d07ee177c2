//! Trying to make the profiler hurt the program or lie about it: signal
//! handlers that record while the thread is half-way through recording,
//! file size limits, thousands of sessions in one process, children in
//! other directories, FIFOs in the session directory, deep recursion,
//! hostile names, bad configuration, failing spawns, pinned threads. Each
//! case runs a real instrumented process; each checks that the program
//! runs on unharmed and that every event it made is recorded or counted
//! as lost where `check` and the summary show it.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{child_role, self_command, session_dir};
use mpprof_merge::{EventKind, Session};

/// Runs `c` to its end, killing it (and failing) if it takes longer than
/// `limit`: a hang is a failure, not a stuck test suite.
fn run_with_deadline(mut c: Command, limit: Duration) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "the child hung for {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `key=` on the child's stdout.
fn stdout_value(out: &Output, key: &str) -> u64 {
    let s = String::from_utf8_lossy(&out.stdout);
    // The test harness may print its own words before ours on the line.
    let pat = format!("{key}=");
    s.lines()
        .find_map(|l| l.find(&pat).map(|at| &l[at + pat.len()..]))
        .unwrap_or_else(|| panic!("no {key}= in the child's stdout: {s}"))
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// 1. Signal handlers that record.

#[mpprof::instrument]
fn busy_call(i: u64) -> u64 {
    mpprof::counter!("busy counter", i);
    std::hint::black_box(i.wrapping_mul(7))
}

#[mpprof::instrument]
fn in_handler() -> u64 {
    std::hint::black_box(HANDLER_CALLS.load(Ordering::Relaxed))
}

static HANDLER_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigprof(_: libc::c_int) {
    HANDLER_CALLS.fetch_add(1, Ordering::Relaxed);
    in_handler();
}

/// A timer interrupts a thread that is itself busy in instrumented calls,
/// every 20 µs, and the handler calls
/// an instrumented function: a signal may arrive anywhere in the
/// recorder, in the middle of a write or of a chunk change. The program
/// must not hang; the trace must nest; and every event made must be
/// recorded or counted as lost.
#[test]
fn recording_in_a_signal_handler_never_hangs_and_accounts_for_every_event() {
    const CALLS: u64 = 400_000;
    child_role("signals", || {
        // SAFETY: installs a handler that only touches an atomic and calls
        // the recorder (which is async-signal-safe), and a timer that
        // sends SIGPROF to this thread every 20 µs (Linux's
        // SIGEV_THREAD_ID, on a high-resolution clock).
        let timer = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigprof as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut());
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = libc::SIGPROF;
            ev.sigev_notify_thread_id = libc::syscall(libc::SYS_gettid) as libc::c_int;
            let mut timer: libc::timer_t = std::mem::zeroed();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer),
                0
            );
            let every = libc::timespec {
                tv_sec: 0,
                tv_nsec: 20_000,
            };
            let spec = libc::itimerspec {
                it_interval: every,
                it_value: every,
            };
            assert_eq!(
                libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()),
                0
            );
            timer
        };
        let mut sum = 0u64;
        for i in 0..CALLS {
            sum = sum.wrapping_add(busy_call(i));
        }
        // SAFETY: the timer made above.
        unsafe { libc::timer_delete(timer) };
        println!("sum={sum}");
        println!("handler_calls={}", HANDLER_CALLS.load(Ordering::Relaxed));
    });
    let dir = session_dir();
    let mut c = self_command(
        "recording_in_a_signal_handler_never_hangs_and_accounts_for_every_event",
        "signals",
        dir.path(),
    );
    // Small chunks: many chunk changes for a signal to land in.
    c.env("MPPROF_CHUNK_KB", "16");
    let out = run_with_deadline(c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let handler_calls = stdout_value(&out, "handler_calls");
    assert!(handler_calls > 100, "the timer fired: {handler_calls}");
    let s = Session::open(&[dir.path()]).unwrap();
    let p = &s.processes[0];
    // Each call is an enter and an exit; each busy call also a counter.
    let made = 3 * CALLS + 2 * handler_calls;
    let mut events = s.events();
    let (mut handler_spans, mut lost_markers) = (0u64, 0u64);
    let mut depth = std::collections::HashMap::<u32, i64>::new();
    for e in events.by_ref() {
        match e.kind {
            EventKind::Enter { site } => {
                *depth.entry(e.lane).or_default() += 1;
                if p.site_name(site) == "in_handler" {
                    handler_spans += 1;
                }
            }
            EventKind::Exit { .. } => *depth.entry(e.lane).or_default() -= 1,
            EventKind::Lost { count, .. } => lost_markers += count,
            _ => {}
        }
    }
    let stats = events.stats();
    assert_eq!(
        (stats.unmatched_exits, stats.closed_spans, stats.bad_records),
        (0, 0, 0),
        "the trace nests: {stats:?}"
    );
    assert!(depth.values().all(|&d| d == 0), "{depth:?}");
    assert_eq!(
        p.file.recorded_events() + p.file.lost_events,
        made,
        "recorded + lost = made ({} handler calls, {handler_spans} recorded)",
        handler_calls
    );
    assert_eq!(lost_markers, p.file.lost_events, "the losses are shown");
    assert!(handler_spans > 0, "handler calls are recorded");
    eprintln!(
        "{handler_calls} handler calls: {handler_spans} recorded, {} events lost",
        p.file.lost_events
    );
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(!h.damaged(), "{:?}", h.processes[0].warnings);
}

// ---------------------------------------------------------------------------
// 2. A file size limit is a full disk, not a crash.

#[mpprof::instrument]
fn limited_call(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(13))
}

/// Under `ulimit -f` smaller than the buffer file, with SIGXFSZ at its
/// default disposition (the kernel would kill the process at the first
/// write past the limit), the recorder never writes past the limit: the
/// application runs to its normal end with its result intact, one warning
/// says what happened, and every event is recorded or counted as lost.
#[test]
fn a_file_size_limit_costs_events_not_the_application() {
    const CALLS: u64 = 300_000;
    child_role("rlimit", || {
        // SAFETY: sets a resource limit of this process; the signal
        // dispositions stay as they are (SIGXFSZ: terminate).
        unsafe {
            let lim = libc::rlimit {
                rlim_cur: 300 << 10,
                rlim_max: 300 << 10,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let sum = (0..CALLS).fold(0u64, |a, i| a.wrapping_add(limited_call(i)));
        println!("sum={sum}");
    });
    let dir = session_dir();
    let mut c = self_command(
        "a_file_size_limit_costs_events_not_the_application",
        "rlimit",
        dir.path(),
    );
    c.env("MPPROF_CHUNK_KB", "64");
    let out = run_with_deadline(c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "the application ran to its end: {:?}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = (0..CALLS).fold(0u64, |a, i| a.wrapping_add(i.wrapping_mul(13)));
    assert_eq!(stdout_value(&out, "sum"), expected);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot grow"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {stderr}");
    assert!(
        warnings[0].contains("File too large") && warnings[0].contains("(pid "),
        "{}",
        warnings[0]
    );
    let s = Session::open(&[dir.path()]).unwrap();
    let f = &s.processes[0].file;
    assert_eq!(f.recorded_events() + f.lost_events, 2 * CALLS);
    assert!(f.lost_events > 0 && f.lost_chunks > 0);
    let size = std::fs::metadata(&f.path).unwrap().len();
    assert!(
        size <= 300 << 10,
        "the file stayed within the limit: {size}"
    );
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(h.processes[0].clean, "the process finished its file");
    assert!(h.processes[0]
        .lost_reason
        .as_deref()
        .is_some_and(|r| r.contains("could not grow")));
}

// ---------------------------------------------------------------------------
// 8. Configuration mistakes are said, once.

#[mpprof::instrument]
fn configured_call(i: u64) -> u64 {
    std::hint::black_box(i + 1)
}

/// `MPPROF=OFF` in any case disables; a value mpprof does not accept, or a
/// misspelt variable, gets one warning naming the variable, the value and
/// what is accepted, in one whole line prefixed with the process name and
/// pid, however many sessions and processes there are.
#[test]
fn configuration_mistakes_are_said_once_per_process() {
    child_role("config", || {
        for i in 0..1000 {
            configured_call(i);
        }
        // Finish the session this child joined, then start a second one,
        // which reads the settings again.
        drop(mpprof::init().unwrap());
        let s = mpprof::init().unwrap();
        configured_call(1);
        drop(s);
        println!("done=1");
    });
    // Disabled, whatever the case: no file at all.
    for off in ["OFF", "Off", "FALSE", "no", "0"] {
        let dir = session_dir();
        let mut c = self_command(
            "configuration_mistakes_are_said_once_per_process",
            "config",
            dir.path(),
        );
        c.env("MPPROF", off);
        let out = run_with_deadline(c, Duration::from_secs(60));
        assert!(out.status.success());
        let files = mpprof_merge::read::list_session(dir.path()).unwrap();
        assert!(files.is_empty(), "MPPROF={off} records nothing: {files:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Mistakes: several processes at once, each warning once per variable.
    let dir = session_dir();
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut c = self_command(
                "configuration_mistakes_are_said_once_per_process",
                "config",
                dir.path(),
            );
            c.env("MPPROF", "sometimes")
                .env("MPPROF_CLOCK", "sundial")
                .env("MPPROF_OVERFLOW", "KEEP-LAST")
                .env("MPPROF_PREPARE", "maybe")
                .env("MPPROF_BUFFER_MB", "lots")
                .env("MPPROF_BUFER_MB", "3")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("mpprof: warning"))
            .collect();
        for (var, value, accepted) in [
            ("MPPROF", "sometimes", "off"),
            ("MPPROF_CLOCK", "sundial", "monotonic"),
            ("MPPROF_PREPARE", "maybe", "0"),
            ("MPPROF_BUFFER_MB", "lots", "1..="),
            ("MPPROF_BUFER_MB", "", "not an mpprof setting"),
        ] {
            let lines: Vec<&&str> = warnings
                .iter()
                .filter(|l| l.contains(&format!(" {var}=")) || l.contains(&format!(" {var} ")))
                .collect();
            assert_eq!(lines.len(), 1, "one warning about {var}: {stderr}");
            let l = lines[0];
            assert!(l.contains(value) && l.contains(accepted), "{l}");
            assert!(
                l.starts_with("mpprof: warning: ") && l.contains(" (pid "),
                "a whole line naming the process: {l}"
            );
        }
        assert_eq!(warnings.len(), 5, "nothing else: {stderr}");
        assert!(!stderr.contains("KEEP-LAST"), "case is ignored: {stderr}");
    }
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 8, "4 processes, 2 sessions each");
    assert!(s
        .processes
        .iter()
        .all(|p| p.file.policy == Some(mpprof::format::Policy::KeepLast)));
}

// ---------------------------------------------------------------------------
// 3. Nothing leaks across sessions; two guards share one session.

#[mpprof::instrument]
fn cycle_call(i: u64) -> u64 {
    std::hint::black_box(i ^ 5)
}

/// File descriptors and memory mappings of this process.
fn fds_and_maps() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count();
    (fds, maps)
}

/// A program that starts and ends recording 1,000 times ends with the
/// file descriptors and mappings it started with (each session's file is
/// released once its last guard is dropped and no thread uses it), and
/// wrote 1,000 complete files.
#[test]
fn a_thousand_sessions_leak_no_descriptor_and_no_mapping() {
    const CYCLES: u64 = 1000;
    child_role("cycles", || {
        let cycle = |n: u64| {
            let s = mpprof::init().unwrap();
            for i in 0..100 {
                cycle_call(i + n);
            }
            // Threads come and go with the sessions too.
            std::thread::spawn(move || cycle_call(n)).join().unwrap();
            drop(s);
        };
        // One cycle first: what stays for good (the preparer's cached
        // thread stack, the exit hook) is there before we count.
        cycle(0);
        let before = fds_and_maps();
        for n in 1..=CYCLES {
            cycle(n);
        }
        let after = fds_and_maps();
        println!("fds_before={} fds_after={}", before.0, after.0);
        println!("maps_before={} maps_after={}", before.1, after.1);
    });
    let dir = session_dir();
    let mut c = self_command(
        "a_thousand_sessions_leak_no_descriptor_and_no_mapping",
        "cycles",
        dir.path(),
    );
    // Small buffers, so the test stays quick.
    c.env("MPPROF_BUFFER_MB", "1");
    // One malloc arena: glibc makes a new 64 MiB arena (two mappings, kept
    // for good) when threads happen to allocate at the same moment, which
    // a loaded machine makes likely and would count as a leak here.
    c.env("MALLOC_ARENA_MAX", "1");
    let out = run_with_deadline(c, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_value(&out, "fds_after"),
        stdout_value(&out, "fds_before"),
        "file descriptors"
    );
    assert_eq!(
        stdout_value(&out, "maps_after"),
        stdout_value(&out, "maps_before"),
        "mappings"
    );
    let files = mpprof_merge::read::list_session(dir.path()).unwrap();
    assert_eq!(files.len() as u64, CYCLES + 1);
    let s = Session::open(&[dir.path()]).unwrap();
    for p in &s.processes {
        assert!(p.file.clean, "{} finished", p.file.display_name());
        assert_eq!(p.file.recorded_events(), 202, "{}", p.file.display_name());
    }
}

/// Two guards of one session: dropping the first keeps recording on,
/// dropping the second finishes the file; a guard of an earlier session
/// dropped late does not finish a later one.
#[test]
fn two_guards_share_one_session() {
    child_role("guards", || {
        let a = mpprof::init().unwrap();
        let b = mpprof::init().unwrap();
        assert_eq!(a.dir(), b.dir());
        cycle_call(1);
        drop(a);
        cycle_call(2); // still recorded: `b` keeps the session
        drop(b);
        cycle_call(3); // not recorded: the session is over
        let c = mpprof::init().unwrap();
        let d = mpprof::init().unwrap();
        drop(d);
        cycle_call(4);
        drop(c);
    });
    let dir = session_dir();
    let c = self_command("two_guards_share_one_session", "guards", dir.path());
    let out = run_with_deadline(c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 2, "two sessions, two files");
    let calls: Vec<u64> = s
        .processes
        .iter()
        .map(|p| {
            assert!(p.file.clean);
            p.file.recorded_events() / 2
        })
        .collect();
    assert_eq!(
        calls,
        [2, 1],
        "calls 1 and 2 in the first file, 4 in the second"
    );
}

// ---------------------------------------------------------------------------
// 4. Children find the session wherever they run.

#[mpprof::instrument]
fn family_step(generation: u32) -> u32 {
    std::hint::black_box(generation + 1)
}

/// The test binary again, in `role`, run in `cwd`, with no session
/// directory of its own: what it records comes from what it inherits.
fn relative_command(test: &str, role: &str, cwd: &std::path::Path) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(common::ROLE, role)
        .env_remove("MPPROF")
        .current_dir(cwd)
        .stdin(Stdio::null());
    c
}

/// With a relative `MPPROF_DIR`, a child started by `mpprof::spawn` in
/// another directory records into the same session (the recorder resolves
/// the directory once, at its start, and gives children the absolute
/// path), and a grandchild the child starts with a plain
/// `std::process::Command`, in a third directory, records there too and is
/// linked to the child in the merged trace by its parent pid.
#[test]
fn children_in_other_directories_record_into_the_session_and_are_linked() {
    const TEST: &str = "children_in_other_directories_record_into_the_session_and_are_linked";
    child_role("family_parent", || {
        family_step(0);
        let elsewhere = std::env::current_dir().unwrap().join("elsewhere");
        let mut child = mpprof::spawn(&mut relative_command(TEST, "family_child", &elsewhere))
            .expect("spawn the child");
        assert!(mpprof::wait(&mut child).unwrap().success());
        family_step(0);
    });
    child_role("family_child", || {
        family_step(1);
        let third = std::env::current_dir().unwrap().join("../third");
        let status = relative_command(TEST, "family_grandchild", &third)
            .status()
            .unwrap();
        assert!(status.success());
    });
    child_role("family_grandchild", || {
        family_step(2);
    });
    let root = session_dir();
    for d in ["sess", "elsewhere", "elsewhere/sess", "third", "third/sess"] {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(root.path().join(d))
            .unwrap();
    }
    let mut c = relative_command(TEST, "family_parent", root.path());
    c.env("MPPROF_DIR", "sess");
    let out = run_with_deadline(c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for stray in ["elsewhere/sess", "third/sess"] {
        let n = std::fs::read_dir(root.path().join(stray)).unwrap().count();
        assert_eq!(n, 0, "nothing recorded into {stray}");
    }
    let s = Session::open(&[root.path().join("sess")]).unwrap();
    assert_eq!(s.processes.len(), 3, "parent, child and grandchild");
    let (parent, child, grandchild) = (0, 1, 2);
    let pid = |i: usize| s.processes[i].file.pid;
    let info = |i: usize| s.processes[i].file.info.as_ref().unwrap();
    assert_eq!(info(child).ppid, pid(parent));
    assert_eq!(info(grandchild).ppid, pid(child));
    assert!(info(child).parent_flow.is_some(), "spawned with a flow");
    assert_eq!(s.processes[child].parent_link, None);
    let link = s.processes[grandchild]
        .parent_link
        .expect("the grandchild is linked to its parent");
    assert_eq!(link.parent, child);
    // The edge is a flow out of the child and into the grandchild's first
    // thread, at the grandchild's start.
    let ends: Vec<(usize, bool, i64)> = s
        .events()
        .filter_map(|e| match e.kind {
            EventKind::FlowOut { flow, .. } if flow == link.flow => Some((e.proc, true, e.ts)),
            EventKind::FlowIn { flow, .. } if flow == link.flow => Some((e.proc, false, e.ts)),
            _ => None,
        })
        .collect();
    let start = s.processes[grandchild].start_ns;
    assert_eq!(ends, [(child, true, start), (grandchild, false, start)]);
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(
        (
            h.flows_unmatched_in,
            h.flows_unmatched_out,
            h.causality_violations
        ),
        (0, 0, 0),
        "every flow matched"
    );
    assert_eq!(
        h.processes[grandchild].linked_by_ppid,
        Some(s.processes[child].file.display_name())
    );
    let mut text = Vec::new();
    mpprof_merge::write::check::write_text(&h, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("without mpprof::spawn: linked to it by parent pid"),
        "{text}"
    );
    // In the Chrome trace, the edge is a flow start and end with one id,
    // in the two processes.
    let chrome = common::chrome_events(&s);
    let flow_pids = |ph: &str| -> Vec<u64> {
        chrome
            .iter()
            .filter(|e| e["ph"] == ph && e["args"]["flow_id"] == link.flow.to_string())
            .map(|e| e["pid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(flow_pids("s").len(), 1);
    assert_eq!(flow_pids("f").len(), 1);
    assert_ne!(flow_pids("s"), flow_pids("f"));
    // And in Perfetto, an outgoing and a terminating flow with its key.
    let mut buf = Vec::new();
    mpprof_merge::write::perfetto::write(&s, &mut buf).unwrap();
    let t = common::perfetto::trace(&buf).unwrap();
    let key = mpprof_merge::write::flow_key(link.flow);
    let count = |f: fn(&common::perfetto::TrackEvent) -> &Vec<u64>| {
        t.events.iter().filter(|e| f(e).contains(&key)).count()
    };
    assert_eq!(count(|e| &e.flow_ids), 1);
    assert_eq!(count(|e| &e.terminating_flow_ids), 1);
}
