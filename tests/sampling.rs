//! The sampling profiler (`MPPROF_SAMPLE_HZ`) against workloads that know
//! their truth: a child that spends 70 % of its CPU time in one
//! un-instrumented function and 30 % in another, and a child blocked 200
//! ms on a pipe inside an instrumented span. Real `perf_event_open`, real
//! child processes; where the kernel refuses (a seccomp filter here), the
//! program runs on with one warning.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{child_role, pipe, self_command, session_dir};
use mpprof_merge::profile::Profile;
use mpprof_merge::Session;

const TEST: &str = "a_known_profile_and_a_blocked_child_show_in_samples_and_off_cpu_time";

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Burns `ns` of this thread's CPU time in arithmetic; looks at the clock
/// every ~50 µs, so nearly every sample lands in this function itself.
#[inline(never)]
fn spin_a(ns: u64, x: &mut u64) {
    let end = thread_cpu_ns() + ns;
    while thread_cpu_ns() < end {
        for _ in 0..20_000 {
            *x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// [`spin_a`]'s twin, a distinct function.
#[inline(never)]
fn spin_b(ns: u64, x: &mut u64) {
    let end = thread_cpu_ns() + ns;
    while thread_cpu_ns() < end {
        for _ in 0..20_000 {
            *x = std::hint::black_box(x.wrapping_mul(2862933555777941757).wrapping_add(3));
        }
    }
}

/// 70 % of `total_ms` of CPU time in `spin_a`, 30 % in `spin_b`, in slices
/// of 7 and 3 ms.
#[mpprof::instrument]
fn seventy_thirty(total_ms: u64) -> u64 {
    let mut x = 1;
    for _ in 0..total_ms / 10 {
        spin_a(7_000_000, &mut x);
        spin_b(3_000_000, &mut x);
    }
    x
}

/// Reads one byte from `fd`, which a thread writes after 200 ms.
#[mpprof::instrument]
fn wait_for_pipe(r: &mut std::fs::File) -> u8 {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).unwrap();
    b[0]
}

/// Share (0..1) of process `pi`'s samples in `function` (inclusive: with
/// the library code it calls, the range iterator and the clock), and the
/// number of samples.
fn share(s: &Session, prof: &Profile, pi: usize, function: &str) -> (f64, usize) {
    let pp = prof.processes[pi].as_ref().expect("the process sampled");
    let mut hits = 0;
    for smp in &pp.samples {
        let frames = prof.stack(pi, smp.stack);
        let named = frames
            .iter()
            .map(|&f| &prof.frames[f as usize])
            .find(|f| f.function.contains("::spin_"));
        if named.is_some_and(|f| f.function.ends_with(function)) {
            hits += 1;
        }
    }
    let _ = s;
    (
        hits as f64 / pp.samples.len().max(1) as f64,
        pp.samples.len(),
    )
}

fn process_with(s: &Session, func: &str) -> usize {
    s.processes
        .iter()
        .position(|p| p.file.sites.values().any(|site| site.name.ends_with(func)))
        .unwrap_or_else(|| panic!("a process ran {func}"))
}

#[test]
fn a_known_profile_and_a_blocked_child_show_in_samples_and_off_cpu_time() {
    child_role("ab", || {
        println!("{}", seventy_thirty(1000));
    });
    child_role("blocked", || {
        let (mut r, mut w) = pipe();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            w.write_all(b"x").unwrap();
        });
        assert_eq!(wait_for_pipe(&mut r), b'x');
        writer.join().unwrap();
    });
    child_role("parent", || {
        let mut a = common::spawn_role(TEST, "ab", Stdio::inherit());
        let mut b = common::spawn_role(TEST, "blocked", Stdio::inherit());
        assert!(mpprof::wait(&mut a).unwrap().success());
        assert!(mpprof::wait(&mut b).unwrap().success());
    });
    let dir = session_dir();
    let mut c = self_command(TEST, "parent", dir.path());
    c.env("MPPROF_SAMPLE_HZ", "1000");
    let out = common::output_ok(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sampling"), "{stderr}");
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 3);
    let prof = Profile::of(&s);
    assert!(prof.warnings.is_empty(), "{:?}", prof.warnings);

    // 70 / 30 within 10 points, from about a second of CPU time.
    let ab = process_with(&s, "seventy_thirty");
    let (a, n) = share(&s, &prof, ab, "spin_a");
    let (b, _) = share(&s, &prof, ab, "spin_b");
    eprintln!(
        "spin_a {:.1} %, spin_b {:.1} % of {n} samples",
        100.0 * a,
        100.0 * b
    );
    assert!(n >= 300, "{n} samples of about a second at 1 kHz");
    assert!((a - 0.7).abs() <= 0.1, "spin_a {a}");
    assert!((b - 0.3).abs() <= 0.1, "spin_b {b}");

    // The blocked child's 200 ms: off CPU, inside its span.
    let bl = process_with(&s, "wait_for_pipe");
    let pp = prof.processes[bl].as_ref().unwrap();
    let (start, end, tid) = span_of(&s, bl, "wait_for_pipe");
    let (off, preempted) = pp.off_cpu_within(tid, start, end);
    eprintln!(
        "wait_for_pipe {:.1} ms, off CPU {:.1} ms ({:.1} preempted)",
        (end - start) as f64 / 1e6,
        off as f64 / 1e6,
        preempted as f64 / 1e6
    );
    assert!(off >= 180_000_000, "off CPU {off} ns in the span");
    assert!(
        off <= end - start,
        "off CPU {off} ns in a span of {}",
        end - start
    );

    perfetto_shows_the_samples(&s, &prof, ab);
    outputs_show_the_samples(&s, ab, bl);
}

/// The summary, check, folded stacks and Chrome JSON of the same session.
fn outputs_show_the_samples(s: &Session, ab: usize, bl: usize) {
    use mpprof_merge::analysis::summary;
    let sum = summary::compute(s);
    // Top functions by samples: spin_a first, with about 70 % of the A/B
    // child's samples on the stack; seventy_thirty on every one.
    let t = sum.processes[ab]
        .samples
        .as_ref()
        .expect("the A/B child sampled");
    let total = |name: &str| {
        let f = t.funcs.iter().find(|f| f.function == name).unwrap();
        f.total_samples as f64 / t.samples as f64
    };
    assert!(
        (total("sampling::spin_a") - 0.7).abs() <= 0.1,
        "{:?}",
        &t.funcs[..5]
    );
    assert!(
        total("sampling::seventy_thirty") > 0.95,
        "{:?}",
        &t.funcs[..5]
    );
    assert!(sum.tree_samples.as_ref().unwrap().samples >= t.samples);
    // The function table: wait_for_pipe was off CPU nearly all its time,
    // seventy_thirty hardly.
    let func = |pi: usize, name: &str| {
        sum.processes[pi]
            .funcs
            .iter()
            .find(|(k, _)| k.label.ends_with(name))
            .unwrap()
            .1
    };
    let w = func(bl, "wait_for_pipe");
    assert!(
        w.profiled_ns > 0 && w.off_cpu_ns as f64 > 0.9 * w.profiled_ns as f64,
        "{w:?}"
    );
    // seventy_thirty never blocks: whatever time it spent off CPU, it was
    // preempted (a loaded machine gives a spinning thread less than a core),
    // which the intervals say.
    let st = func(ab, "seventy_thirty");
    assert!(st.profiled_ns > 0, "{st:?}");
    let prof = mpprof_merge::profile::Profile::read(s);
    let pp = prof.processes[ab].as_ref().unwrap();
    let (start, end, tid) = span_of(s, ab, "seventy_thirty");
    let (off, preempted) = pp.off_cpu_within(tid, start, end);
    assert!(
        ((off - preempted) as f64) < 0.1 * (end - start) as f64,
        "blocked {} ns of {} ns ({st:?})",
        off - preempted,
        end - start
    );
    let mut text = Vec::new();
    mpprof_merge::write::summary::write_text(&sum, &mut text, 10).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("Top functions by stack samples (this process)"),
        "{text}"
    );
    assert!(text.contains("offcpu%"), "{text}");

    // check: a profiler line per process.
    let (_, check) = common::check_text(s);
    assert_eq!(check.matches("  profiler: 1000 Hz, ").count(), 3, "{check}");
    assert!(!check.contains("NO SAMPLES"), "{check}");

    // Folded stacks from the samples: spin_a under the span that called it.
    let opts = mpprof_merge::write::folded::Options {
        samples: true,
        ..Default::default()
    };
    let (stacks, _) = mpprof_merge::write::folded::collect_with(s, opts);
    let under_span: u64 = stacks
        .iter()
        .filter(|(k, _)| k.contains(";seventy_thirty;sampling::spin_a"))
        .map(|(_, ns)| ns)
        .sum();
    let all: u64 = stacks
        .iter()
        .filter(|(k, _)| k.contains("spin_"))
        .map(|(_, ns)| ns)
        .sum();
    // Each sample stands for 1 ms; spin_a takes about 70 % of them.
    let share = under_span as f64 / all as f64;
    assert!((share - 0.7).abs() <= 0.1, "{share}: {stacks:?}");

    // The Firefox Profiler's format: the A/B child's thread has its
    // samples, with spin_a among their functions, and seventy_thirty as a
    // marker; the blocked child's thread has its off-CPU marker.
    let mut fx = Vec::new();
    mpprof_merge::write::firefox::write(s, &mut fx).unwrap();
    let fx: serde_json::Value = serde_json::from_slice(&fx).unwrap();
    let threads = fx["threads"].as_array().unwrap();
    let names = |t: &serde_json::Value, table: &str| -> Vec<String> {
        let strings = t["stringArray"].as_array().unwrap();
        t[table]["name"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                strings[i.as_u64().unwrap() as usize]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let pid = |pi: usize| s.processes[pi].file.pid.to_string();
    let sampled = threads
        .iter()
        .filter(|t| t["pid"].as_str() == Some(&pid(ab)))
        .find(|t| t["samples"]["length"].as_u64() > Some(300))
        .expect("the A/B child's thread with its samples");
    assert!(names(sampled, "funcTable")
        .iter()
        .any(|n| n == "sampling::spin_a"));
    assert!(names(sampled, "markers")
        .iter()
        .any(|n| n.ends_with("seventy_thirty")));
    assert!(threads
        .iter()
        .filter(|t| t["pid"].as_str() == Some(&pid(bl)))
        .any(|t| names(t, "markers").iter().any(|n| n == "off CPU (blocked)")));

    // Chrome JSON: the blocked child's wait as an off-CPU slice.
    let long_off_cpu = common::chrome_events(s).into_iter().any(|e| {
        e["ph"] == "X"
            && e["name"] == "off CPU (blocked)"
            && e["dur"].as_f64().is_some_and(|d| d > 150_000.0)
    });
    assert!(long_off_cpu, "the 200 ms wait as an off-CPU slice");
}

/// The Perfetto output, decoded by protoc against Perfetto's own protos:
/// a `PerfSample` packet per sample, with a callstack whose frames and
/// function names the trace defines (outermost first, as the trace
/// processor reads them), and the off-CPU slices on a track of their own.
fn perfetto_shows_the_samples(s: &Session, prof: &Profile, ab: usize) {
    let mut bytes = Vec::new();
    mpprof_merge::write::perfetto::write(s, &mut bytes).unwrap();
    let Some(text) = mpprof_testkit::perfetto::protoc_decode(&bytes) else {
        return;
    };
    mpprof_testkit::perfetto::assert_known_fields(&text);
    let samples: usize = prof
        .processes
        .iter()
        .flatten()
        .map(|p| p.samples.len())
        .sum();
    let t = ProtoText::parse(&text);
    assert_eq!(t.blocks("perf_sample").count(), samples);
    let pid = s.processes[ab].file.pid.to_string();
    let mut in_a = 0;
    for smp in t.blocks("perf_sample") {
        assert_eq!(smp.get("cpu_mode").map(String::as_str), Some("MODE_USER"));
        let cs = smp.get("callstack_iid").expect("a callstack");
        let names: Vec<&str> = t.callstacks[cs]
            .iter()
            .map(|f| t.function_names[&t.frames[f]].as_str())
            .collect();
        if smp.get("pid") == Some(&pid) {
            let a = names.iter().position(|n| *n == "sampling::spin_a");
            let outer = names.iter().position(|n| n.ends_with("seventy_thirty"));
            if let (Some(a), Some(outer)) = (a, outer) {
                assert!(outer < a, "outermost frame first: {names:?}");
                in_a += 1;
            }
        }
    }
    assert!(in_a > 100, "{in_a} samples in spin_a under seventy_thirty");
    let tracks: Vec<_> = t.blocks("track_descriptor").collect();
    assert!(tracks
        .iter()
        .any(|d| d.get("name").map(String::as_str) == Some("\"off CPU\"")));
    let slices: Vec<_> = t
        .blocks("track_event")
        .filter(|e| e.get("name").map(String::as_str) == Some("\"off CPU (blocked)\""))
        .collect();
    assert!(!slices.is_empty(), "blocked slices");
}

/// What protoc's text output defines: interned function names, frames (to
/// their function name) and callstacks (frame iids, outermost first), and
/// every message with its scalar fields.
struct ProtoText {
    function_names: std::collections::HashMap<String, String>,
    frames: std::collections::HashMap<String, String>,
    callstacks: std::collections::HashMap<String, Vec<String>>,
    /// (message name, its scalar fields).
    messages: Vec<(String, Vec<(String, String)>)>,
}

struct Fields<'a>(&'a [(String, String)]);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&String> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
}

impl ProtoText {
    fn parse(text: &str) -> ProtoText {
        let mut t = ProtoText {
            function_names: Default::default(),
            frames: Default::default(),
            callstacks: Default::default(),
            messages: Vec::new(),
        };
        let mut stack: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_suffix(" {") {
                stack.push((name.to_owned(), Vec::new()));
            } else if line == "}" {
                let (name, fields) = stack.pop().expect("balanced braces");
                let f = Fields(&fields);
                let iid = || f.get("iid").expect("an iid").clone();
                match name.as_str() {
                    "function_names" => {
                        let s = f.get("str").expect("a string");
                        t.function_names
                            .insert(iid(), s.trim_matches('"').to_owned());
                    }
                    "frames" => {
                        let name = f.get("function_name_id").expect("a name");
                        t.frames.insert(iid(), name.clone());
                    }
                    "callstacks" => {
                        let ids = fields
                            .iter()
                            .filter(|(n, _)| n == "frame_ids")
                            .map(|(_, v)| v.clone())
                            .collect();
                        t.callstacks.insert(iid(), ids);
                    }
                    _ => {}
                }
                t.messages.push((name, fields));
            } else if let Some((k, v)) = line.split_once(": ") {
                if let Some(top) = stack.last_mut() {
                    top.1.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        t
    }

    fn blocks<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Fields<'a>> + 'a {
        self.messages
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, f)| Fields(f))
    }
}

/// Burns CPU in `spin_a` inside a span until killed, saying "spinning" on
/// stdout once it has for `ready_ms`.
#[mpprof::instrument]
fn spin_until_killed(ready_ms: u64) {
    let mut x = 1;
    spin_a(ready_ms * 1_000_000, &mut x);
    println!("spinning");
    loop {
        spin_a(10_000_000, &mut x);
    }
}

/// A process killed with SIGKILL keeps the samples its profiler copied out
/// before the kill (all but the last tick's, at most 10 ms).
#[test]
fn a_killed_process_keeps_its_samples() {
    const T: &str = "a_killed_process_keeps_its_samples";
    child_role("spinner", || spin_until_killed(300));
    let dir = session_dir();
    let mut child = self_command(T, "spinner", dir.path())
        .env("MPPROF_SAMPLE_HZ", "1000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // A child that never says it spins is killed after a minute anyway.
    let pid = child.id() as i32;
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    // The test harness prints its own words first, on the same line.
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let ready = std::io::BufRead::lines(out).any(|l| l.is_ok_and(|l| l.ends_with("spinning")));
    assert!(ready, "the child said it spins");
    child.kill().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    child.wait().unwrap();
    let s = Session::open(&[dir.path()]).unwrap();
    assert!(!s.processes[0].file.clean, "killed, not finished");
    let prof = Profile::of(&s);
    let pp = prof.processes[0].as_ref().unwrap();
    let in_a = samples_in(&prof, 0, "sampling::spin_a");
    eprintln!("{} samples, {in_a} in spin_a", pp.samples.len());
    // 300 ms of CPU time at 1 kHz before "spinning", on a machine that may
    // give it less than a core.
    assert!(in_a >= 150, "{in_a} of {} samples", pp.samples.len());
}

/// The forked child's first span starts its recording.
#[mpprof::instrument]
fn forked_work(x: &mut u64) {
    spin_a(100_000_000, x);
}

/// A child forked without exec samples itself, into its own file, and the
/// parent's samples stay the parent's.
#[test]
fn a_forked_child_samples_itself() {
    const T: &str = "a_forked_child_samples_itself";
    child_role("forker", || {
        let session = mpprof::init().unwrap();
        let mut x = 1;
        spin_b(50_000_000, &mut x);
        // SAFETY: fork(2); the child runs Rust code the atfork handlers
        // prepared for, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            forked_work(&mut x);
            drop(session);
            std::process::exit(0);
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
        drop(session);
    });
    let dir = session_dir();
    let mut c = self_command(T, "forker", dir.path());
    c.env("MPPROF_SAMPLE_HZ", "1000").stdout(Stdio::null());
    let out = common::output_ok(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sampling"), "{stderr}");
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 2);
    let prof = Profile::of(&s);
    let in_fn = |pi: usize, name: &str| samples_in(&prof, pi, name);
    let child = s
        .processes
        .iter()
        .position(|p| {
            p.file
                .info
                .as_ref()
                .is_some_and(|i| i.ppid != 0 && i.parent_flow.is_some())
        })
        .expect("the forked child");
    let parent = 1 - child;
    let (ca, cb) = (
        in_fn(child, "sampling::spin_a"),
        in_fn(child, "sampling::spin_b"),
    );
    let (pa, pb) = (
        in_fn(parent, "sampling::spin_a"),
        in_fn(parent, "sampling::spin_b"),
    );
    eprintln!("child: spin_a {ca}, spin_b {cb}; parent: spin_a {pa}, spin_b {pb}");
    assert!(ca >= 50 && cb == 0, "the child's own samples: {ca} {cb}");
    assert!(pb >= 25 && pa == 0, "the parent's own samples: {pa} {pb}");
}

/// Where the kernel refuses `perf_event_open` (here a seccomp filter that
/// fails it with EACCES, as container runtimes do), the program runs on
/// and records its spans, with one warning, and the file and `check` say
/// why there are no samples.
#[test]
fn a_refused_perf_event_open_costs_the_samples_only() {
    const T: &str = "a_refused_perf_event_open_costs_the_samples_only";
    child_role("refused", || {
        let mut x = 1;
        println!("{}", seventy_thirty(50));
        spin_a(1_000_000, &mut x);
    });
    let dir = session_dir();
    let mut c = self_command(T, "refused", dir.path());
    c.env("MPPROF_SAMPLE_HZ", "1000")
        .env("MPPROF_SYSCALLS", "1")
        .stdout(Stdio::null());
    // SAFETY: the hook only makes async-signal-safe system calls (prctl)
    // between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, deny_perf_event_open);
    }
    let out = common::output_ok(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One warning for the samples, one for the system calls.
    assert_eq!(stderr.matches("mpprof").count(), 2, "{stderr}");
    assert!(
        stderr.contains("sampling (MPPROF_SAMPLE_HZ=1000) is off"),
        "{stderr}"
    );
    assert!(
        stderr.contains("system call tracing (MPPROF_SYSCALLS=1) is off"),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let s = Session::open(&[dir.path()]).unwrap();
    assert!(s.processes[0].file.clean);
    let prof = Profile::of(&s);
    let pp = prof.processes[0].as_ref().expect("the profiler's entry");
    assert!(pp.samples.is_empty() && pp.info.error.contains("perf_event_open"));
    let (_, check) = common::check_text(&s);
    assert!(check.contains("NO SAMPLES: perf_event_open"), "{check}");
    // The spans are all there.
    assert!(common::events(&s)
        .iter()
        .any(|e| common::site_name(&s, e).is_some_and(|n| n.ends_with("seventy_thirty"))));
}

/// Installs a seccomp filter that fails `perf_event_open` with EACCES and
/// allows everything else.
fn deny_perf_event_open() -> std::io::Result<()> {
    // struct sock_filter: code, jt, jf, k.
    #[repr(C)]
    struct Filter(u16, u8, u8, u32);
    #[repr(C)]
    struct Prog {
        len: u16,
        filter: *const Filter,
    }
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let filter = [
        // The architecture (offset 4 of seccomp_data): anything but
        // x86_64 is allowed through untouched.
        Filter(LD_W_ABS, 0, 0, 4),
        Filter(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        // The system call number (offset 0).
        Filter(LD_W_ABS, 0, 0, 0),
        Filter(JEQ_K, 0, 1, libc::SYS_perf_event_open as u32),
        Filter(RET_K, 0, 0, ERRNO | libc::EACCES as u32),
        Filter(RET_K, 0, 0, ALLOW),
    ];
    let prog = Prog {
        len: filter.len() as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: prctl with the documented arguments; the filter outlives the
    // call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const Prog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Exactly 100 `write`s, to /dev/null.
#[mpprof::instrument]
fn hundred_writes(fd: i32) {
    for _ in 0..100 {
        // SAFETY: a write of one byte from a valid buffer to an open
        // descriptor.
        let n = unsafe { libc::write(fd, b"x".as_ptr() as *const libc::c_void, 1) };
        assert_eq!(n, 1);
    }
}

/// As root, mounts tracefs where the kernel's tracepoints are read, if it
/// is not mounted (a fresh machine's `/sys/kernel/tracing` is empty until
/// then); false when it is not there and cannot be.
fn ensure_tracefs() -> bool {
    let dir = "/sys/kernel/tracing";
    if std::path::Path::new(dir).join("events").exists() {
        return true;
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    // SAFETY: mount(2) with NUL-terminated strings and no data.
    let r = unsafe {
        libc::mount(
            c("nodev").as_ptr(),
            c(dir).as_ptr(),
            c("tracefs").as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    r == 0
}

/// `MPPROF_SYSCALLS=1`: as root (or with a permissive
/// `perf_event_paranoid`) every system call of the process is counted,
/// here exactly the 100 `write`s of a span; elsewhere the run goes on with
/// one warning that says why.
#[test]
fn system_calls_are_counted_exactly_where_the_kernel_allows_it() {
    const T: &str = "system_calls_are_counted_exactly_where_the_kernel_allows_it";
    child_role("hundred", || {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        hundred_writes(std::os::fd::AsRawFd::as_raw_fd(&f));
    });
    let mounted = ensure_tracefs();
    let dir = session_dir();
    let mut c = self_command(T, "hundred", dir.path());
    c.env("MPPROF_SYSCALLS", "1").stdout(Stdio::null());
    let out = common::output_ok(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let s = Session::open(&[dir.path()]).unwrap();
    let prof = Profile::read(&s);
    let pp = prof.processes[0].as_ref().expect("the profiler's entry");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !pp.info.syscalls {
        assert!(
            !root || !mounted,
            "refused as root: {}",
            pp.info.syscalls_error
        );
        assert_eq!(
            stderr
                .matches("system call tracing (MPPROF_SYSCALLS=1) is off")
                .count(),
            1,
            "{stderr}"
        );
        let (_, check) = common::check_text(&s);
        assert!(check.contains("system calls NOT traced"), "{check}");
        println!("SKIPPED the counts: {}", pp.info.syscalls_error);
        return;
    }
    assert!(!stderr.contains("system call tracing"), "{stderr}");
    // The span's bounds on its thread.
    let events = common::events(&s);
    let span = |enter: bool| {
        events
            .iter()
            .find(|e| {
                matches!(
                    (enter, e.kind),
                    (true, mpprof_merge::EventKind::Enter { .. })
                        | (false, mpprof_merge::EventKind::Exit { .. })
                ) && common::site_name(&s, e).is_some_and(|n| n.ends_with("hundred_writes"))
            })
            .map(|e| (e.ts, e.lane))
            .unwrap()
    };
    let ((start, lane), (end, _)) = (span(true), span(false));
    let tid = s.processes[0].file.lanes[&lane].tid;
    let in_span: Vec<_> = pp
        .syscalls
        .iter()
        .filter(|c| c.tid == tid && c.start >= start && c.end <= end)
        .collect();
    let writes = in_span
        .iter()
        .filter(|c| mpprof_merge::profile::syscall_name(c.nr) == "write")
        .count();
    eprintln!(
        "{} system calls in the span, {writes} writes",
        in_span.len()
    );
    assert_eq!(writes, 100);
    assert!(in_span.iter().all(|c| c.errno == 0));
    // The summary's table and check's line.
    let sum = mpprof_merge::analysis::summary::compute(&s);
    let rows = sum.processes[0].syscalls.as_ref().expect("traced");
    let w = rows.iter().find(|r| r.name == "write").unwrap();
    assert!(w.calls >= 100, "{w:?}");
    let (_, check) = common::check_text(&s);
    assert!(check.contains("system calls traced"), "{check}");
}

/// A thread started after the profiler is sampled from its start, once:
/// its events are inherited from its creator's, never opened a second
/// time. Its samples match its CPU time at 1 kHz.
#[test]
fn a_thread_started_later_is_sampled_once() {
    const T: &str = "a_thread_started_later_is_sampled_once";
    child_role("late", || {
        let session = mpprof::init().unwrap();
        let t = std::thread::Builder::new()
            .name("late".into())
            .spawn(|| {
                let mut x = 1;
                let start = thread_cpu_ns();
                spin_a(900_000_000, &mut x);
                println!("cpu_ms {}", (thread_cpu_ns() - start) / 1_000_000);
            })
            .unwrap();
        t.join().unwrap();
        drop(session);
    });
    let dir = session_dir();
    let mut c = self_command(T, "late", dir.path());
    c.env("MPPROF_SAMPLE_HZ", "1000");
    let out = common::output_ok(&mut c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cpu_ms: f64 = stdout
        .split("cpu_ms ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the thread's CPU time");
    let s = Session::open(&[dir.path()]).unwrap();
    let prof = Profile::of(&s);
    let in_a = samples_in(&prof, 0, "sampling::spin_a") as f64;
    eprintln!("{in_a} samples in spin_a for {cpu_ms} ms of CPU");
    assert!(
        in_a > 0.8 * cpu_ms && in_a < 1.1 * cpu_ms,
        "{in_a} samples for {cpu_ms} ms"
    );
}

/// The first span named `name` of process `pi`: its start, end and thread.
fn span_of(s: &Session, pi: usize, name: &str) -> (i64, i64, u32) {
    let events = common::events(s);
    let find = |enter: bool| {
        events
            .iter()
            .find(|e| {
                e.proc == pi
                    && matches!(
                        (enter, e.kind),
                        (true, mpprof_merge::EventKind::Enter { .. })
                            | (false, mpprof_merge::EventKind::Exit { .. })
                    )
                    && common::site_name(s, e).is_some_and(|n| n.ends_with(name))
            })
            .map(|e| (e.ts, e.lane))
            .expect("the span")
    };
    let ((start, lane), (end, _)) = (find(true), find(false));
    (start, end, s.processes[pi].file.lanes[&lane].tid)
}

/// Samples of process `pi` with function `name` anywhere on their stack.
fn samples_in(prof: &Profile, pi: usize, name: &str) -> usize {
    let pp = prof.processes[pi].as_ref().expect("sampled");
    pp.samples
        .iter()
        .filter(|x| {
            prof.stack(pi, x.stack)
                .iter()
                .any(|&f| prof.frames[f as usize].function == name)
        })
        .count()
}
