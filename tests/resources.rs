//! Resource samples against a workload that knows its truth: one child
//! burns a CPU, one sleeps, one allocates and frees 200 MiB, one writes 50
//! MiB with fsync. The tracks, the process table, the function table's
//! on-CPU split and the host's disk track must say so, within tolerances a
//! loaded 2-core machine keeps (no assertion on absolute speed). And a
//! process that cannot read the host's `/proc` files (a container's
//! `/proc`) records what it can, says what it lacks, and runs on.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{child_role, self_command, session_dir};
use mpprof_merge::analysis::summary;
use mpprof_merge::Session;

const TEST: &str = "a_workload_that_knows_its_truth_shows_it_in_tracks_and_tables";

#[mpprof::instrument]
fn burn(for_ms: u64) -> u64 {
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < Duration::from_millis(for_ms) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

#[mpprof::instrument]
fn tiny(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(3))
}

#[mpprof::instrument]
fn nap(for_ms: u64) {
    std::thread::sleep(Duration::from_millis(for_ms));
}

#[mpprof::instrument]
fn allocate(mib: usize, hold_ms: u64) -> u64 {
    // Every page written: resident, not just reserved.
    let v = vec![1u8; mib << 20];
    std::thread::sleep(Duration::from_millis(hold_ms));
    let s = v.iter().step_by(4096).map(|&b| b as u64).sum();
    drop(v);
    s
}

#[mpprof::instrument]
fn write_synced(path: &Path, mib: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![7u8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    std::fs::remove_file(path).unwrap();
}

fn wait_all(children: Vec<std::process::Child>) {
    for mut c in children {
        assert!(mpprof::wait(&mut c).unwrap().success());
    }
}

/// The CPU % of one process in the summary's table, by its role's
/// function.
fn row_of<'a>(
    s: &'a summary::Summary,
    func: &str,
) -> (&'a summary::ProcessSummary, &'a summary::ProcessRow) {
    let p = s
        .processes
        .iter()
        .find(|p| p.funcs.iter().any(|(k, _)| k.label.ends_with(func)))
        .unwrap_or_else(|| panic!("a process ran {func}"));
    (p, p.resources.as_ref().expect("sampled"))
}

fn func<'a>(p: &'a summary::ProcessSummary, name: &str) -> &'a summary::FuncStats {
    &p.funcs
        .iter()
        .find(|(k, _)| k.label.ends_with(name))
        .unwrap()
        .1
}

#[test]
fn a_workload_that_knows_its_truth_shows_it_in_tracks_and_tables() {
    child_role("burn", || {
        // The burner's own measure of its CPU share (its thread's CPU
        // clock over the wall time), for the test to compare: a loaded
        // machine gives it less than a core, truly.
        let cpu = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the timespec it is given.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
        };
        let (c0, t0) = (cpu(), Instant::now());
        println!("{}", burn(600));
        let share = 100.0 * (cpu() - c0) / t0.elapsed().as_nanos() as f64;
        let dir = std::env::var("RESOURCES_TEST_SCRATCH").unwrap();
        std::fs::write(Path::new(&dir).join("burn.txt"), share.to_string()).unwrap();
    });
    child_role("sleep", || nap(600));
    child_role("alloc", || {
        println!("{}", allocate(200, 150));
    });
    child_role("write", || {
        let dir = std::env::var("RESOURCES_TEST_SCRATCH").unwrap();
        write_synced(&Path::new(&dir).join("fifty.bin"), 50);
    });
    child_role("parent", || {
        // The burner and the sleeper together (one core each at most),
        // then the allocator and the writer.
        wait_all(vec![
            common::spawn_role(TEST, "burn", Stdio::inherit()),
            common::spawn_role(TEST, "sleep", Stdio::inherit()),
        ]);
        wait_all(vec![
            common::spawn_role(TEST, "alloc", Stdio::inherit()),
            common::spawn_role(TEST, "write", Stdio::inherit()),
        ]);
    });
    let dir = session_dir();
    // On the disk of the build, not a tmpfs: its writes reach a device.
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut c = self_command(TEST, "parent", dir.path());
    c.env("RESOURCES_TEST_SCRATCH", scratch.path());
    common::output_ok(&mut c);
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 5);
    let sum = summary::compute(&s);

    // The process table.
    let (_, burner) = row_of(&sum, "burn");
    let (_, sleeper) = row_of(&sum, "nap");
    let burn_cpu = burner.cpu_pct.expect("two samples or more");
    let sleep_cpu = sleeper.cpu_pct.expect("two samples or more");
    let own: f64 = std::fs::read_to_string(scratch.path().join("burn.txt"))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("burner {burn_cpu:.1} % CPU (its own measure {own:.1} %), sleeper {sleep_cpu:.1} %");
    // About 100 % on an idle machine; on a loaded one the burner truly
    // gets less, and the samples must say what it got.
    assert!(
        (burn_cpu - own).abs() < 15.0 && burn_cpu < 115.0,
        "burner {burn_cpu} %, by its own clock {own} %"
    );
    assert!(burn_cpu > 20.0, "burner {burn_cpu} %");
    assert!(sleep_cpu < 10.0, "sleeper {sleep_cpu} %");
    assert!(burner.user_ns.unwrap() > 0.15e9, "{burner:?}");
    assert!(
        sleeper.user_ns.unwrap() + sleeper.system_ns.unwrap() < 0.1e9,
        "{sleeper:?}"
    );
    assert!(
        burner.samples >= 15,
        "a sample every 20 ms: {}",
        burner.samples
    );
    let (_, alloc) = row_of(&sum, "allocate");
    let peak = alloc.peak_rss.unwrap();
    assert!(peak >= (200 << 20) as f64, "peak RSS {peak}");
    let (_, writer) = row_of(&sum, "write_synced");
    let written = writer.storage.unwrap().1;
    assert!(written >= (50 << 20) as f64, "write_bytes {written}");
    assert!(writer.calls.unwrap().1 >= (50 << 20) as f64, "wchar");

    // The function table's on-CPU split: the burner on a CPU, the sleeper
    // off it.
    let (bp, _) = row_of(&sum, "burn");
    let b = func(bp, "burn");
    assert!(b.sampled_ns > 0, "{b:?}");
    let on = b.on_cpu_ns as f64 / b.sampled_ns as f64;
    assert!(
        (100.0 * on - own).abs() < 20.0,
        "burn on CPU {on}, by its own clock {own} %"
    );
    let (sp, _) = row_of(&sum, "nap");
    let n = func(sp, "nap");
    assert!(
        n.sampled_ns > 0 && (n.on_cpu_ns as f64) < 0.1 * n.sampled_ns as f64,
        "{n:?}"
    );

    // The RSS track of the allocator saw the 200 MiB while it was held.
    let res = &mpprof_merge::resources::Resources::of(&s);
    let tracks = |pi: usize| {
        let p = &s.processes[pi];
        mpprof_merge::resources::process_tracks(res.processes[pi].as_ref().unwrap(), |t, c| {
            format!("{t}{c}{}", p.file.pid)
        })
    };
    let alloc_pi = s
        .processes
        .iter()
        .position(|p| p.file.pid == alloc.pid)
        .unwrap();
    let rss = tracks(alloc_pi)
        .into_iter()
        .find(|t| t.name == "RSS (MiB)")
        .unwrap();
    let rss_peak = rss.points.iter().map(|p| p.1).fold(0.0, f64::max);
    assert!(rss_peak >= 190.0, "RSS track peak {rss_peak} MiB");

    // The host's disk tracks add up to the 50 MiB written (and more: the
    // machine's other writes).
    assert_eq!(res.hosts.len(), 1, "one host");
    let disk_mib: f64 = res.hosts[0]
        .tracks
        .iter()
        .filter(|t| t.name.ends_with(" write (MiB/s)"))
        .map(|t| {
            t.points
                .windows(2)
                .map(|w| w[0].1 * (w[1].0 - w[0].0) as f64 / 1e9)
                .sum::<f64>()
        })
        .sum();
    assert!(disk_mib >= 45.0, "disk tracks show {disk_mib} MiB written");
    assert!(res.hosts[0].tracks.iter().any(|t| t.name == "CPU %"));
    assert!(res.hosts[0]
        .tracks
        .iter()
        .any(|t| t.name == "memory used (MiB)"));

    // The text: the process table, the host section, the split columns.
    let mut text = Vec::new();
    mpprof_merge::write::summary::write_text(&sum, &mut text, 20).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("== processes (like top"), "{text}");
    assert!(text.contains("== system ("), "{text}");
    assert!(text.contains("cpu%  runq%"), "{text}");
    assert!(text.contains("on_cpu_ms"), "{text}");

    // Both trace formats: CPU % and RSS per process, a system process.
    let chrome = common::chrome_events(&s);
    for p in &s.processes {
        for name in ["CPU %", "RSS (MiB)"] {
            assert!(
                chrome
                    .iter()
                    .any(|e| e["ph"] == "C" && e["pid"] == p.file.pid && e["name"] == name),
                "{name} of {}",
                p.file.pid
            );
        }
    }
    let system_pid = chrome
        .iter()
        .find(|e| {
            e["name"] == "process_name"
                && e["args"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("system"))
        })
        .expect("a system process")["pid"]
        .clone();
    assert!(chrome
        .iter()
        .any(|e| e["ph"] == "C" && e["pid"] == system_pid && e["name"] == "CPU %"));
    let mut buf = Vec::new();
    mpprof_merge::write::perfetto::write(&s, &mut buf).unwrap();
    let t = common::perfetto::trace(&buf).unwrap();
    let system = t
        .tracks
        .iter()
        .find(|k| {
            k.process_name
                .as_deref()
                .is_some_and(|n| n.starts_with("system"))
        })
        .expect("a system process track");
    let counter = |name: &str, parent: u64| {
        t.tracks
            .iter()
            .find(|k| k.counter && k.name.as_deref() == Some(name) && k.parent_uuid == Some(parent))
            .map(|k| t.events.iter().filter(|e| e.track_uuid == k.uuid).count())
    };
    assert!(counter("CPU %", system.uuid).unwrap() >= 3);
    for p in t
        .tracks
        .iter()
        .filter(|k| k.process_name.is_some() && k.uuid != system.uuid)
    {
        assert!(counter("CPU %", p.uuid).unwrap() >= 1, "{p:?}");
        assert!(counter("RSS (MiB)", p.uuid).unwrap() >= 1, "{p:?}");
    }

    // Resource samples are not events: nothing on the sampler's lane, and
    // `check` calls the session perfect.
    let (h, check) = common::check_text(&s);
    assert!(!h.imperfect(), "{check}");
    assert!(check.contains("resources: "), "{check}");
    assert!(!check.contains("LACKS"), "{check}");
}

/// A process whose `/proc` shows its own entries only (`subset=pid`, as
/// in a container that hides the host): it records its own counters,
/// warns once about the host's, and `check` says what it lacks. Needs
/// root for the mount namespace; skipped (with a note) without.
#[test]
fn a_proc_without_the_hosts_files_costs_only_the_host_counters() {
    const T: &str = "a_proc_without_the_hosts_files_costs_only_the_host_counters";
    child_role("contained", || {
        // SAFETY: unshare and mount with valid arguments; this process is
        // single-threaded here (the test harness's thread only).
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                println!("skip=unshare");
                return;
            }
            let none = c"none";
            let root = c"/";
            let proc_ = c"/proc";
            let kind = c"proc";
            let opts = c"subset=pid";
            libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            if libc::mount(
                kind.as_ptr(),
                proc_.as_ptr(),
                kind.as_ptr(),
                0,
                opts.as_ptr() as *const libc::c_void,
            ) != 0
            {
                println!("skip=mount");
                return;
            }
        }
        assert!(!Path::new("/proc/stat").exists());
        let _s = mpprof::init().unwrap();
        println!("{}", burn(100));
    });
    let dir = session_dir();
    let out = common::output_ok(&mut self_command(T, "contained", dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains("skip=") {
        eprintln!("skipped: cannot make a mount namespace with a pid-only /proc here ({stdout})");
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("resource sampling goes without"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {stderr}");
    assert!(warnings[0].contains("/proc/stat"), "{stderr}");
    let s = Session::open(&[dir.path()]).unwrap();
    let res = mpprof_merge::resources::Resources::of(&s);
    let r = res.processes[0].as_ref().unwrap();
    assert!(r
        .get(mpprof::format::Scope::Process, "cpu.user", "")
        .is_some());
    assert!(r
        .get(mpprof::format::Scope::Process, "mem.rss", "")
        .is_some());
    assert!(res.hosts.is_empty(), "no host track");
    let (_, check) = common::check_text(&s);
    assert!(
        check.contains("LACKS resource counters: host counters: /proc/stat"),
        "{check}"
    );
    // The summary still has the process's row.
    let sum = summary::compute(&s);
    assert!(sum.processes[0]
        .resources
        .as_ref()
        .unwrap()
        .cpu_pct
        .is_some());
}

/// A process killed by SIGKILL keeps the samples it took (its row and
/// tracks are there, it just has no final sample); a flight recorder
/// (`keep-last`) whose budget the samples overrun keeps the newest
/// samples, and every series still has a value (each is recorded whole
/// every 100 samples).
#[test]
fn samples_survive_sigkill_and_a_flight_recorder_keeps_the_newest() {
    const T: &str = "samples_survive_sigkill_and_a_flight_recorder_keeps_the_newest";
    child_role("spin", || loop {
        burn(50);
    });
    child_role("busy_small_budget", || {
        // Events enough to fill the budget at once, so the sampler's later
        // chunks overwrite its own oldest.
        let start = Instant::now();
        let mut x = 0;
        while start.elapsed() < Duration::from_millis(1500) {
            for i in 0..10_000 {
                x = tiny(x ^ i);
            }
        }
        println!("{x}");
    });
    // SIGKILL.
    let dir = session_dir();
    let mut child = self_command(T, "spin", dir.path()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    child.kill().unwrap();
    child.wait().unwrap();
    let s = Session::open(&[dir.path()]).unwrap();
    assert!(!s.processes[0].file.clean);
    let sum = summary::compute(&s);
    let row = sum.processes[0].resources.as_ref().expect("sampled");
    assert!(row.samples >= 10, "{row:?}");
    let cpu = row.cpu_pct.unwrap();
    assert!(cpu > 25.0, "the spinner's CPU {cpu} %");
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(!h.damaged());

    // keep-last: 1 ms samples overrun a 1 MiB budget of 4 KiB chunks.
    let dir = session_dir();
    common::output_ok(
        self_command(T, "busy_small_budget", dir.path())
            .env("MPPROF_OVERFLOW", "keep-last")
            .env("MPPROF_BUFFER_MB", "1")
            .env("MPPROF_CHUNK_KB", "4")
            .env("MPPROF_SAMPLE_MS", "1"),
    );
    let s = Session::open(&[dir.path()]).unwrap();
    let p = &s.processes[0];
    let sampler = p.file.sampler_lane().expect("the sampler recorded");
    assert!(
        p.file.lanes[&sampler].overwritten > 0,
        "the samples overran the budget: {:?}",
        p.file.lanes[&sampler]
    );
    let res = mpprof_merge::resources::Resources::of(&s);
    let r = res.processes[0].as_ref().unwrap();
    // The newest samples are there, up to the process's end.
    let last = *r.ticks.last().unwrap();
    assert!(
        p.end_ns - last < 50_000_000,
        "last sample {} ms before the end",
        (p.end_ns - last) / 1_000_000
    );
    for k in ["cpu.user", "mem.rss", "threads"] {
        assert!(r.last(k).is_some(), "{k} has a value");
    }
    let sum = summary::compute(&s);
    assert!(
        sum.processes[0]
            .resources
            .as_ref()
            .unwrap()
            .cpu_pct
            .unwrap()
            > 20.0
    );
}

/// Under keep-first, samples stop at three quarters of the budget and
/// leave the rest to the program: a program that filled most of its budget
/// and then sleeps while the sampler runs still records its later events,
/// and `check` says why the samples stop.
#[test]
fn samples_leave_the_rest_of_a_keep_first_budget_to_the_program() {
    const T: &str = "samples_leave_the_rest_of_a_keep_first_budget_to_the_program";
    child_role("fill_then_sleep", || {
        // 4 KiB chunks of 8-byte words: about 60 % of 256 slots.
        let mut x = 0;
        for i in 0..40_000 {
            x = tiny(x ^ i);
        }
        // Samples every 1 ms, while nothing else records.
        std::thread::sleep(Duration::from_millis(1500));
        for i in 0..1_000 {
            x = tiny(x ^ i);
        }
        println!("{x}");
    });
    let dir = session_dir();
    let out = common::output_ok(
        self_command(T, "fill_then_sleep", dir.path())
            .env("MPPROF_BUFFER_MB", "1")
            .env("MPPROF_CHUNK_KB", "4")
            .env("MPPROF_SAMPLE_MS", "1"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("three quarters of the buffer budget"),
        "{stderr}"
    );
    let s = Session::open(&[dir.path()]).unwrap();
    let f = &s.processes[0].file;
    let sampler = f.sampler_lane().unwrap();
    let program_lost: u64 = f
        .lanes
        .iter()
        .filter(|(&l, _)| l != sampler)
        .map(|(_, l)| l.lost())
        .sum();
    assert_eq!(program_lost, 0, "the program's 82,000 events are all there");
    let calls = s
        .events()
        .filter(|e| matches!(e.kind, mpprof_merge::EventKind::Enter { .. }))
        .count();
    assert_eq!(calls, 41_000);
    let (_, check) = common::check_text(&s);
    assert!(
        check.contains("LACKS resource counters: resource samples after three quarters"),
        "{check}"
    );
}

/// Two hosts in one merge (two host ids, as two machines' sessions
/// merged together would have): each gets its own "system" process, from
/// the process that held that host's lock.
#[test]
fn a_second_host_gets_a_system_track_of_its_own() {
    const T: &str = "a_second_host_gets_a_system_track_of_its_own";
    child_role("host", || nap(300));
    let dir = session_dir();
    let children: Vec<_> = ["host-a", "host-b"]
        .iter()
        .map(|id| {
            self_command(T, "host", dir.path())
                .env("MPPROF_HOST_ID", id)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let s = Session::open(&[dir.path()]).unwrap();
    let res = mpprof_merge::resources::Resources::of(&s);
    let mut ids: Vec<&str> = res.hosts.iter().map(|h| h.host_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["host-a", "host-b"]);
    for h in &res.hosts {
        assert!(h.tracks.iter().any(|t| t.name == "CPU %"), "{}", h.host_id);
    }
    let systems = common::chrome_events(&s)
        .iter()
        .filter(|e| {
            e["name"] == "process_name"
                && e["args"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("system"))
        })
        .count();
    assert_eq!(systems, 2);
}

/// `MPPROF_SAMPLE_MS=0`: no sampler thread, no samples; the file says
/// sampling was off, and `check` says so instead of listing lacks.
#[test]
fn sampling_off_records_no_samples_and_says_so() {
    const T: &str = "sampling_off_records_no_samples_and_says_so";
    child_role("off", || {
        assert!(
            !std::fs::read_dir("/proc/self/task").unwrap().any(|e| {
                std::fs::read_to_string(e.unwrap().path().join("comm"))
                    .is_ok_and(|c| c.trim_end() == "mpprof-sample")
            }),
            "no sampler thread before recording"
        );
        nap(50);
        let sampler = std::fs::read_dir("/proc/self/task").unwrap().any(|e| {
            std::fs::read_to_string(e.unwrap().path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "mpprof-sample")
        });
        println!("sampler_thread={}", u8::from(sampler));
    });
    let dir = session_dir();
    let out = common::output_ok(self_command(T, "off", dir.path()).env("MPPROF_SAMPLE_MS", "0"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sampler_thread=0"));
    let s = Session::open(&[dir.path()]).unwrap();
    let f = &s.processes[0].file;
    assert_eq!(f.sampler.as_ref().map(|s| s.interval_ns), Some(0));
    assert!(f.resources.is_empty() && f.sampler_lane().is_none());
    let (h, check) = common::check_text(&s);
    assert!(
        check.contains("resources: off (MPPROF_SAMPLE_MS=0)"),
        "{check}"
    );
    assert!(!check.contains("LACKS"), "{check}");
    assert!(!h.imperfect(), "{check}");
    // The summary has no process table.
    let mut text = Vec::new();
    mpprof_merge::write::summary::write(&s, &mut text, 10).unwrap();
    assert!(!String::from_utf8(text).unwrap().contains("== processes"));
}

/// A child forked without `exec` samples itself (a sampler of its own, in
/// its own file), and dropping its copy of the parent's session guard does
/// not wait for the parent's sampler thread, which is not in the child.
#[test]
fn a_forked_child_samples_itself_and_lets_go_of_its_parents_sampler() {
    const T: &str = "a_forked_child_samples_itself_and_lets_go_of_its_parents_sampler";
    child_role("forker", || {
        let session = mpprof::init().unwrap();
        nap(60);
        // SAFETY: fork(2); the child runs Rust code the atfork handlers
        // prepared for, then exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            nap(60);
            drop(session);
            std::process::exit(0);
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
        nap(10);
        drop(session);
    });
    let dir = session_dir();
    let mut child = self_command(T, "forker", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the forking process hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 2);
    let res = mpprof_merge::resources::Resources::of(&s);
    for (p, r) in s.processes.iter().zip(&res.processes) {
        let r = r.as_ref().expect("sampled");
        assert!(
            r.ticks.len() >= 2,
            "{}: {} samples",
            p.file.display_name(),
            r.ticks.len()
        );
        assert!(p.file.sampler_lane().is_some());
        assert!(p.file.clean, "{}", p.file.display_name());
    }
}
