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

/// Runs `c` to its end (see [`run_with_deadline`], 120 s) and checks that
/// it succeeded.
/// The events of the application in `f` (every lane but the resource
/// sampler's): (recorded, lost).
fn app_events(f: &mpprof_merge::read::ProcessFile) -> (u64, u64) {
    match f.sampler_lane() {
        Some(l) => (
            f.recorded_events() - f.lane_events(l),
            f.lost_events - f.lanes[&l].lost(),
        ),
        None => (f.recorded_events(), f.lost_events),
    }
}

fn run_ok(c: Command) -> Output {
    let out = run_with_deadline(c, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
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
    let out = run_ok(c);
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
    let (recorded, lost) = app_events(&p.file);
    assert_eq!(
        recorded + lost,
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
    let (recorded, lost) = app_events(f);
    assert_eq!(recorded + lost, 2 * CALLS);
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
    let out = run_ok(c);
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
        if app_events(&p.file) != (202, 0) {
            let h = mpprof_merge::analysis::check::check(&Session::from_files(vec![
                mpprof_merge::read::open(&p.file.path).unwrap(),
            ]));
            let mut t = Vec::new();
            mpprof_merge::write::check::write_text(&h, &mut t).unwrap();
            eprintln!("{}", String::from_utf8_lossy(&t));
        }
        assert_eq!(app_events(&p.file), (202, 0), "{}", p.file.display_name());
        assert!(p.file.sampler_lane().is_some(), "sampled");
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
    let mut c = self_command("two_guards_share_one_session", "guards", dir.path());
    // Only the application's events.
    c.env("MPPROF_SAMPLE_MS", "0");
    run_ok(c);
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
    run_ok(c);
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

// ---------------------------------------------------------------------------
// 5. Disk cost proportional to what was recorded.

#[mpprof::instrument]
fn small_call(i: u64) -> u64 {
    std::hint::black_box(i + 1)
}

/// Bytes the files of a session directory take on disk (allocated blocks,
/// not their sparse length).
fn disk_use(dir: &std::path::Path) -> (u64, usize) {
    use std::os::unix::fs::MetadataExt;
    let files = mpprof_merge::read::list_session(dir).unwrap();
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().blocks() * 512)
        .sum();
    (bytes, files.len())
}

/// A process that records 100 events costs a few pages of disk, not a
/// chunk per thread and a metadata chunk (0.5-1.5 MB before); a session
/// of many short children costs in proportion.
#[test]
fn disk_cost_follows_what_was_recorded() {
    const TEST: &str = "disk_cost_follows_what_was_recorded";
    const CHILDREN: usize = 100;
    child_role("small", || {
        for i in 0..50 {
            small_call(i);
        }
    });
    child_role("many", || {
        for _ in 0..CHILDREN {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args([TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(common::ROLE, "small")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = mpprof::spawn(&mut c).unwrap();
            assert!(mpprof::wait(&mut child).unwrap().success());
        }
    });
    let one = session_dir();
    let out = run_with_deadline(
        self_command(TEST, "small", one.path()),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let (bytes, files) = disk_use(one.path());
    assert_eq!(files, 1);
    let s = Session::open(&[one.path()]).unwrap();
    // (and the resource sampler's few samples: its lane, its callsites)
    assert_eq!(app_events(&s.processes[0].file), (100, 0));
    eprintln!("100 events: {bytes} bytes on disk");
    assert!(bytes <= 32 << 10, "100 events took {bytes} bytes of disk");

    let many = session_dir();
    let out = run_with_deadline(
        self_command(TEST, "many", many.path()),
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    let (bytes, files) = disk_use(many.path());
    assert_eq!(files, CHILDREN + 1);
    let per = bytes / files as u64;
    eprintln!(
        "{files} processes: {bytes} bytes on disk, {per} per process; 10,000 would take {} MiB",
        (per * 10_000) >> 20
    );
    assert!(per <= 48 << 10, "{per} bytes per process");
    let s = Session::open(&[many.path()]).unwrap();
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(!h.imperfect(), "every process recorded all its events");
}

/// A process whose file could not be written at all (the disk was full,
/// here a file size limit of 0, 4 KiB or 8 KiB: the file is created and
/// stays empty, holds the header only, or the header and the metadata
/// chunk's first part) runs on, and `check` says it recorded nothing for
/// lack of space, without calling the session damaged.
#[test]
fn a_process_with_no_space_shows_as_having_recorded_nothing() {
    const TEST: &str = "a_process_with_no_space_shows_as_having_recorded_nothing";
    child_role("small_ok", || {
        small_call(1);
    });
    child_role("nospace", || {
        let limit: u64 = std::env::var("MPPROF_TEST_FSIZE").unwrap().parse().unwrap();
        // SAFETY: sets a resource limit of this process.
        unsafe {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let sum = (0..1000).fold(0u64, |a, i| a.wrapping_add(small_call(i)));
        println!("sum={sum} pid={}", std::process::id());
    });
    for limit in [0u64, 4096, 8192] {
        let dir = session_dir();
        // A process that records normally, so that the session has one.
        let out = run_with_deadline(
            self_command(TEST, "small_ok", dir.path()),
            Duration::from_secs(60),
        );
        assert!(out.status.success());
        let mut c = self_command(TEST, "nospace", dir.path());
        c.env("MPPROF_TEST_FSIZE", limit.to_string());
        // The header's count is of the application's events only.
        c.env("MPPROF_SAMPLE_MS", "0");
        let out = run_with_deadline(c, Duration::from_secs(60));
        assert!(out.status.success(), "limit {limit}: {:?}", out.status);
        assert_eq!(stdout_value(&out, "sum"), (1..=1000).sum::<u64>());
        let pid = stdout_value(&out, "pid") as u32;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one warning: {stderr}");
        assert!(stderr.contains("File too large"), "{stderr}");
        let s = Session::open(&[dir.path()]).unwrap();
        let (h, text) = common::check_text(&s);
        assert!(!h.damaged(), "limit {limit}: {text}");
        assert!(h.imperfect(), "limit {limit}: {text}");
        assert!(s.unreadable.is_empty() && s.ignored.is_empty());
        if limit < 8192 {
            // No metadata: the process is not on the timeline, and `check`
            // says why.
            assert_eq!(s.processes.len(), 1, "only the other process");
            assert_eq!(s.no_space.len(), 1);
            let n = &s.no_space[0];
            assert_eq!((n.pid, n.len), (Some(pid), limit));
            // The header, when there is one, counts every event.
            assert_eq!(n.lost_events, if limit == 0 { 0 } else { 2000 });
            let said = format!("process {pid} recorded nothing: no space for its buffer file");
            assert!(text.contains(&said), "limit {limit}: {text}");
        } else {
            // The metadata's first part: a process that lost every event.
            assert!(s.no_space.is_empty());
            let p = h.processes.iter().find(|p| p.pid == pid).unwrap();
            assert_eq!((p.events, p.lost_events), (0, 2000));
            assert!(p.lost_reason.as_deref().unwrap().contains("could not grow"));
            assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        }
    }
}

// ---------------------------------------------------------------------------
// 6. The merge never grows without bound.

#[mpprof::instrument]
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    1 + std::hint::black_box(recurse(depth - 1))
}

/// A recursion 100,000 calls deep (on a thread with a large stack): the
/// folded stacks stop at the default max stack with a marker frame that
/// holds the time below it, so output and memory stay linear in the
/// events, not quadratic in the depth (24 GB were not enough before).
#[test]
fn a_deep_recursion_folds_into_a_bounded_output() {
    const DEPTH: u64 = 100_000;
    child_role("deep", || {
        let t = std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn(|| recurse(DEPTH))
            .unwrap();
        println!("depth={}", t.join().unwrap());
    });
    let dir = session_dir();
    let out = run_ok(self_command(
        "a_deep_recursion_folds_into_a_bounded_output",
        "deep",
        dir.path(),
    ));
    assert_eq!(stdout_value(&out, "depth"), DEPTH);
    let s = Session::open(&[dir.path()]).unwrap();
    let (stacks, stats) = mpprof_merge::write::folded::collect(&s);
    assert_eq!(stats.unmatched_exits + stats.closed_spans, 0);
    let max = mpprof_merge::write::folded::DEFAULT_MAX_STACK;
    let marker = mpprof_merge::write::folded::marker(max);
    // One stack per depth up to the cap, and the marker's.
    assert_eq!(stacks.len(), max + 1);
    let deepest = stacks
        .iter()
        .map(|(s, _)| s.split(';').count())
        .max()
        .unwrap();
    assert_eq!(deepest, 1 + max + 1, "root, {max} frames, the marker");
    let folded: Vec<&(String, u64)> = stacks
        .iter()
        .filter(|(s, _)| s.ends_with(&marker))
        .collect();
    assert_eq!(folded.len(), 1);
    // The marker holds the self time of every frame below the cap: most
    // of the total.
    let total: u64 = stacks.iter().map(|s| s.1).sum();
    assert!(folded[0].1 > total / 2, "{} of {total}", folded[0].1);
    let mut text = Vec::new();
    mpprof_merge::write::folded::write(&s, &mut text).unwrap();
    assert!(
        text.len() < 20 << 20,
        "{} bytes of folded stacks",
        text.len()
    );
    let mut svg = Vec::new();
    mpprof_merge::write::folded::write_svg(&s, &mut svg).unwrap();
    assert!(svg.len() < 20 << 20, "{} bytes of SVG", svg.len());
    // The other outputs take the depth in their stride too.
    let mut summary = Vec::new();
    mpprof_merge::write::summary::write(&s, &mut summary, 10).unwrap();
    assert!(String::from_utf8_lossy(&summary).contains("recurse"));
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(!h.imperfect(), "{:?}", h.processes[0]);
}

// ---------------------------------------------------------------------------
// 7. Every name survives every output.

/// A span name with a newline, a tab, the folded separator, a terminal
/// escape sequence, a bell and XML's special characters.
const EVIL: &str = "evil\nname;with\ttabs \u{1b}[31mred\u{7} <svg> & \"quotes\"";

macro_rules! times16 {
    ($s:expr) => {
        concat!($s, $s, $s, $s, $s, $s, $s, $s, $s, $s, $s, $s, $s, $s, $s, $s)
    };
}

/// A span name of 40 KiB (a name made from data, say).
const LONG: &str = times16!(times16!(times16!("long name ")));

/// Hostile names (control characters, separators, 40 KiB) come out of
/// every output intact or visibly escaped: folded stacks keep one stack per
/// line, the SVG is well-formed XML, the terminal sees no control
/// character, the JSON holds the name as it was; a long name is recorded,
/// shortened with a marker, and no metadata is lost.
#[test]
fn hostile_names_survive_every_output() {
    child_role("names", || {
        {
            let _a = mpprof::scope!(EVIL);
            let _b = mpprof::scope!(LONG);
            std::hint::black_box(1);
        }
        std::thread::Builder::new()
            .name("bad\nthread\u{7}".into())
            .spawn(|| {
                let _c = mpprof::scope!(EVIL);
            })
            .unwrap()
            .join()
            .unwrap();
    });
    let dir = session_dir();
    run_ok(self_command(
        "hostile_names_survive_every_output",
        "names",
        dir.path(),
    ));
    let s = Session::open(&[dir.path()]).unwrap();
    let p = &s.processes[0];
    assert_eq!(p.file.lost_meta, 0, "no metadata lost");
    let long = p
        .file
        .sites
        .values()
        .find(|site| site.name.starts_with("long name long name"))
        .expect("the long name is recorded");
    let cut = LONG.len() - long.name.find('…').unwrap();
    assert!(
        long.name.ends_with(&format!("…[+{cut} bytes]")),
        "{}",
        &long.name[900..]
    );
    assert!(p.file.sites.values().any(|site| site.name == EVIL));
    let no_control = |what: &str, text: &str| {
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(bad.is_empty(), "{what}: control characters {bad:?}");
    };
    // Folded: one stack per line, `stack count`.
    let mut folded = Vec::new();
    mpprof_merge::write::folded::write(&s, &mut folded).unwrap();
    let folded = String::from_utf8(folded).unwrap();
    no_control("folded", &folded);
    let (stacks, _) = mpprof_merge::write::folded::collect(&s);
    assert_eq!(folded.lines().count(), stacks.len(), "{folded}");
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        assert!(count.parse::<u64>().is_ok(), "{line}");
        assert!(
            stack.split(';').count() <= 3,
            "root and at most two frames: {line}"
        );
    }
    let escaped = "evil\\nname:with\\ttabs \\e[31mred\\x07 <svg> & \"quotes\"";
    assert!(folded.contains(escaped), "{folded}");
    // SVG: well-formed XML, the name in it.
    let mut svg = Vec::new();
    mpprof_merge::write::folded::write_svg(&s, &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &svg,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the SVG is well-formed XML");
    assert!(doc
        .descendants()
        .any(|n| n.text().is_some_and(|t| t.contains(escaped))));
    // The terminal: summary and check, visible escapes.
    let mut summary = Vec::new();
    mpprof_merge::write::summary::write(&s, &mut summary, 30).unwrap();
    let summary = String::from_utf8(summary).unwrap();
    no_control("summary", &summary);
    assert!(
        summary.contains("evil\\nname;with\\ttabs \\e[31mred\\x07"),
        "{summary}"
    );
    let (h, check) = common::check_text(&s);
    no_control("check", &check);
    assert!(!h.imperfect(), "{check}");
    // JSON: the names as they were.
    let chrome = common::chrome_events(&s);
    assert!(chrome.iter().any(|e| e["name"] == EVIL));
    assert!(chrome
        .iter()
        .any(|e| e["name"] == "thread_name" && e["args"]["name"] == "bad\nthread\u{7}"));
}

// ---------------------------------------------------------------------------
// 8. Counter values as recorded.

/// Integers past 2^53 and at the ends of `i64` and `u64` come out exactly
/// (not through an `f64`); NaN and the infinities are kept, in the merged
/// events and Perfetto, and shown as instants with their value in JSON
/// (which cannot hold them), with a count in `check` — never turned into 0.
#[test]
fn counter_values_come_out_as_recorded() {
    const BIG: i64 = (1 << 53) + 1;
    child_role("counters", || {
        mpprof::counter!("big", BIG);
        mpprof::counter!("min", i64::MIN);
        mpprof::counter!("max", i64::MAX);
        mpprof::counter!("umax", u64::MAX);
        mpprof::counter!("nan", f64::NAN);
        mpprof::counter!("inf", f64::INFINITY);
        mpprof::counter!("-inf", f64::NEG_INFINITY);
        mpprof::counter!("half", 0.5f32);
    });
    let dir = session_dir();
    let mut c = self_command(
        "counter_values_come_out_as_recorded",
        "counters",
        dir.path(),
    );
    // Only the application's counters.
    c.env("MPPROF_SAMPLE_MS", "0");
    run_ok(c);
    let s = Session::open(&[dir.path()]).unwrap();
    use mpprof_merge::CounterValue::{Float, Int, UInt};
    let mut values = std::collections::BTreeMap::new();
    for e in s.events() {
        if let EventKind::Counter { site, value } = e.kind {
            values.insert(s.processes[e.proc].site_name(site).into_owned(), value);
        }
    }
    assert_eq!(values["big"], Int(BIG));
    assert_eq!(values["min"], Int(i64::MIN));
    assert_eq!(values["max"], Int(i64::MAX));
    assert_eq!(values["umax"], UInt(u64::MAX));
    assert!(matches!(values["nan"], Float(v) if v.is_nan()));
    assert_eq!(values["inf"], Float(f64::INFINITY));
    assert_eq!(values["-inf"], Float(f64::NEG_INFINITY));
    assert_eq!(values["half"], Float(0.5));
    // JSON: integers exact, the others instants that say their value.
    let chrome = common::chrome_events(&s);
    let sample = |name: &str| {
        chrome
            .iter()
            .find(|e| e["name"] == name && (e["ph"] == "C" || e["ph"] == "i"))
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(sample("big")["args"]["value"].as_i64(), Some(BIG));
    assert_eq!(sample("min")["args"]["value"].as_i64(), Some(i64::MIN));
    assert_eq!(sample("umax")["args"]["value"].as_u64(), Some(u64::MAX));
    for (name, text) in [("nan", "NaN"), ("inf", "inf"), ("-inf", "-inf")] {
        let e = sample(name);
        assert_eq!(e["ph"], "i", "{e}");
        assert_eq!(e["args"]["counter value"], text);
    }
    // Perfetto keeps NaN and the infinities as doubles.
    let mut buf = Vec::new();
    mpprof_merge::write::perfetto::write(&s, &mut buf).unwrap();
    let t = common::perfetto::trace(&buf).unwrap();
    let counters: Vec<f64> = t.events.iter().filter_map(|e| e.counter).collect();
    assert_eq!(counters.len(), 8);
    assert_eq!(counters.iter().filter(|v| v.is_nan()).count(), 1);
    assert_eq!(counters.iter().filter(|v| v.is_infinite()).count(), 2);
    // `check` counts them.
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(h.stats.non_finite_counters, 3);
    let mut text = Vec::new();
    mpprof_merge::write::check::write_text(&h, &mut text).unwrap();
    assert!(String::from_utf8(text)
        .unwrap()
        .contains("3 samples are NaN or infinite"));
}

// ---------------------------------------------------------------------------
// 9. Spawning and the preparer are honest too.

/// `Cpus_allowed_list` of a thread of this process (`task` = tid), or of
/// the process (`None`).
fn cpus_allowed(task: Option<u32>) -> String {
    let path = match task {
        Some(t) => format!("/proc/self/task/{t}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// In a program whose thread that records first is pinned to one CPU, the
/// chunk preparer (which that thread starts) runs on every allowed CPU,
/// not on the pinned worker's.
#[test]
fn the_preparer_does_not_inherit_a_pinned_threads_cpu() {
    child_role("pinned", || {
        // SAFETY: pins the calling thread to CPU 0.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                0
            );
        }
        // The first instrumented call starts recording, and the preparer.
        for i in 0..100_000 {
            small_call(i);
        }
        let mut preparer = None;
        for _ in 0..100 {
            for t in std::fs::read_dir("/proc/self/task").unwrap() {
                let t = t
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap();
                let comm = std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                    .unwrap_or_default();
                if comm.trim() == "mpprof-prepare" {
                    preparer = Some(t);
                }
            }
            if preparer.is_some_and(|t| cpus_allowed(Some(t)) != "0") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let tid = preparer.expect("a preparer thread");
        // SAFETY: gettid has no preconditions.
        println!(
            "main_cpus= {}",
            cpus_allowed(Some(unsafe { libc::gettid() } as u32))
        );
        println!("preparer_cpus= {}", cpus_allowed(Some(tid)));
    });
    let all = cpus_allowed(None);
    if all == "0" {
        eprintln!("one CPU only: nothing to tell apart");
        return;
    }
    let dir = session_dir();
    let out = run_ok(self_command(
        "the_preparer_does_not_inherit_a_pinned_threads_cpu",
        "pinned",
        dir.path(),
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("{key} in {text}"))
    };
    assert_eq!(value("main_cpus="), "0");
    assert_eq!(
        value("preparer_cpus="),
        all,
        "the preparer may run on every CPU"
    );
}

/// A spawn that fails (no such program; permission denied) leaves no arrow
/// to nowhere: the flow ends on the spawning thread as `spawn failed`, and
/// an instant names the program and the error. `check` finds nothing
/// unmatched.
#[test]
fn a_failed_spawn_says_so_in_the_trace() {
    child_role("spawn_fail", || {
        small_call(1);
        let missing = mpprof::spawn(&mut Command::new("/nonexistent/mpprof-no-such-program"));
        assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
        let not_exec = std::env::temp_dir().join(format!("mpprof-not-exec-{}", std::process::id()));
        std::fs::write(&not_exec, b"not a program").unwrap();
        let denied = mpprof::spawn(&mut Command::new(&not_exec));
        std::fs::remove_file(&not_exec).unwrap();
        assert_eq!(
            denied.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
        small_call(2);
        println!("pid={}", std::process::id());
    });
    let dir = session_dir();
    let out = run_ok(self_command(
        "a_failed_spawn_says_so_in_the_trace",
        "spawn_fail",
        dir.path(),
    ));
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 1);
    let p = &s.processes[0];
    let mut instants = Vec::new();
    let (mut outs, mut failed) = (Vec::new(), Vec::new());
    for e in s.events() {
        match e.kind {
            EventKind::Instant { site } => instants.push(p.site_name(site).into_owned()),
            EventKind::FlowOut { flow, .. } => outs.push(flow),
            EventKind::FlowIn { flow, site } => {
                assert_eq!(p.site_name(site), mpprof::format::flow_name::SPAWN_FAILED);
                failed.push(flow);
            }
            _ => {}
        }
    }
    assert_eq!(
        instants,
        [
            "spawn failed: mpprof-no-such-program: NotFound".to_owned(),
            format!(
                "spawn failed: mpprof-not-exec-{}: PermissionDenied",
                stdout_value(&out, "pid")
            ),
        ]
    );
    assert_eq!(outs.len(), 2);
    assert_eq!(outs, failed, "each spawn's flow ends as failed");
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(
        (h.flows_matched, h.flows_unmatched_out, h.flows_unmatched_in),
        (2, 0, 0)
    );
    assert!(!h.imperfect());
}
