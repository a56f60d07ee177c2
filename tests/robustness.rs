//! Recording never hurts the application and never loses what it
//! committed: budgets and overflow policies, a file that cannot grow,
//! hostile session directories. Real child processes, real files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::{child_role, self_command, session_dir};
use mpprof_merge::{EventKind, Session};

#[mpprof::instrument]
fn call(i: u64) -> u64 {
    std::hint::black_box(i.wrapping_mul(31))
}

#[mpprof::instrument]
fn last_call() {}

const CALLS: u64 = 200_000;

/// The child's work: CALLS calls, then one `last_call`, and the result on
/// stdout (the application's output must stay right whatever happens to
/// recording).
fn work() {
    let sum = (0..CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
    last_call();
    println!("sum={sum}");
}

fn expected_sum() -> u64 {
    (0..CALLS).fold(0u64, |a, i| a.wrapping_add(i.wrapping_mul(31)))
}

/// Runs the child `c` with `env` added and checks it exited successfully.
/// Resource sampling is off: these tests count every event and chunk of
/// the application (`tests/resources.rs` tests the sampler's lane under
/// the same limits).
fn succeed(mut c: std::process::Command, env: &[(&str, &str)]) -> Output {
    c.env("MPPROF_SAMPLE_MS", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(role: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let c = self_command("overflow_policies_count_every_lost_event", role, dir);
    let out = succeed(c, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("sum={}", expected_sum())),
        "the application's result is intact"
    );
    out
}

/// (recorded events, lost events, lost markers (count, overwritten), last_call seen).
fn tally(dir: &std::path::Path) -> (u64, u64, Vec<(u64, bool)>, bool) {
    let s = Session::open(&[dir]).unwrap();
    let p = &s.processes[0];
    let mut markers = Vec::new();
    let mut last = false;
    for e in s.events() {
        match e.kind {
            EventKind::Lost { count, overwritten } => markers.push((count, overwritten)),
            EventKind::Exit { site, .. } if p.site_name(site) == "last_call" => last = true,
            _ => {}
        }
    }
    (p.file.recorded_events(), p.file.lost_events, markers, last)
}

#[test]
fn overflow_policies_count_every_lost_event() {
    child_role("work", work);
    let small = [("MPPROF_BUFFER_MB", "1"), ("MPPROF_CHUNK_KB", "64")];

    // keep-first: the first events are kept, the rest counted exactly.
    let dir = session_dir();
    run("work", dir.path(), &small);
    let (kept, lost, markers, last) = tally(dir.path());
    assert_eq!(
        kept + lost,
        2 * CALLS + 2,
        "every event is either kept or counted"
    );
    assert!(lost > 0 && kept > 0);
    assert_eq!(
        markers,
        vec![(lost, false)],
        "one gap marker at the end of the thread"
    );
    assert!(!last, "keep-first drops the newest events");
    let size = std::fs::metadata(mpprof_merge::read::list_session(dir.path()).unwrap()[0].clone())
        .unwrap()
        .len();
    assert!(size <= (1 << 20) + 4096, "file within its budget: {size}");
    let h = mpprof_merge::analysis::check::check(&Session::open(&[dir.path()]).unwrap());
    assert!(h.processes[0]
        .lost_reason
        .as_deref()
        .unwrap()
        .contains("budget"));

    // keep-last: the newest events are kept, the overwritten ones counted exactly.
    let dir = session_dir();
    run(
        "work",
        dir.path(),
        &[small[0], small[1], ("MPPROF_OVERFLOW", "keep-last")],
    );
    let (kept, lost, markers, last) = tally(dir.path());
    assert_eq!(
        kept + lost,
        2 * CALLS + 2,
        "every event is either kept or counted"
    );
    assert!(lost > 0);
    assert_eq!(
        markers,
        vec![(lost, true)],
        "one overwritten marker at the start of the thread"
    );
    assert!(last, "the flight recorder keeps the last events");
    let s = Session::open(&[dir.path()]).unwrap();
    assert!(
        s.processes[0]
            .file
            .sites
            .values()
            .any(|x| x.name == "last_call"),
        "names survive overflow"
    );
}

#[test]
fn a_file_that_cannot_grow_costs_events_not_the_application() {
    child_role("fsize", || {
        // SAFETY: setting a resource limit and a signal disposition for this
        // process at start, before any thread exists.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 512 << 10,
                rlim_max: 512 << 10,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        work();
    });
    let dir = session_dir();
    let c = self_command(
        "a_file_that_cannot_grow_costs_events_not_the_application",
        "fsize",
        dir.path(),
    );
    let out = succeed(c, &[("MPPROF_CHUNK_KB", "64")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("sum={}", expected_sum())));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("cannot grow").count(),
        1,
        "one warning: {stderr}"
    );
    let (kept, lost, _, _) = tally(dir.path());
    assert_eq!(kept + lost, 2 * CALLS + 2);
    assert!(lost > 0);
    let s = Session::open(&[dir.path()]).unwrap();
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(
        h.processes[0]
            .lost_reason
            .as_deref()
            .unwrap()
            .contains("could not grow"),
        "{:?}",
        h.processes[0]
    );
    assert!(h.processes[0].clean, "the process still finished its file");
}

#[test]
fn hostile_session_directories_are_refused_with_one_warning() {
    child_role("hostile", || {
        assert_eq!(call(2), 62);
        last_call();
        assert!(mpprof::session_dir().is_none());
    });
    let base = session_dir();
    let b = base.path();
    std::fs::write(b.join("a-file"), b"").unwrap();
    std::fs::create_dir(b.join("real")).unwrap();
    std::os::unix::fs::symlink(b.join("real"), b.join("link")).unwrap();
    std::fs::create_dir(b.join("open")).unwrap();
    std::fs::set_permissions(b.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(b.join("theirs")).unwrap();
    // SAFETY: chown(2) on a path we made; as non-root it fails, and the
    // case is skipped.
    let chowned = unsafe {
        let p = std::ffi::CString::new(b.join("theirs").as_os_str().as_encoded_bytes()).unwrap();
        libc::chown(p.as_ptr(), 65534, 65534) == 0
    };
    let mut cases = vec![
        ("missing", "No such file"),
        ("a-file", "not a directory"),
        ("link", "symbolic link"),
        ("open", "writable by others"),
    ];
    if chowned {
        cases.push(("theirs", "belongs to uid 65534"));
    }
    for (name, why) in cases {
        let dir = b.join(name);
        let out = self_command(
            "hostile_session_directories_are_refused_with_one_warning",
            "hostile",
            &dir,
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{name}: the application runs on");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("mpprof: warning"))
            .collect();
        assert_eq!(warnings.len(), 1, "{name}: {stderr}");
        assert!(warnings[0].contains(why), "{name}: {}", warnings[0]);
    }
    // Nothing was written through the link or into the others.
    for d in ["real", "open", "theirs"] {
        assert_eq!(
            std::fs::read_dir(b.join(d)).unwrap().count(),
            0,
            "{d} stays empty"
        );
    }
}

/// `init()` makes a missing `MPPROF_DIR` and its parents (`MPPROF_DIR=a/b/c`
/// from scratch: the leaf 0700), and still refuses a symlink there; a
/// child (no `init`) never makes it (see the test above).
#[test]
fn init_makes_a_missing_session_directory_and_still_refuses_a_link() {
    const T: &str = "init_makes_a_missing_session_directory_and_still_refuses_a_link";
    child_role("init", || match mpprof::init() {
        Ok(s) => {
            call(1);
            println!("accepted={}", s.dir().unwrap().display());
        }
        Err(e) => println!("refused={e}"),
    });
    let base = session_dir();
    let dir = base.path().join("a/b/c");
    let out = self_command(T, "init", &dir).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("accepted="), "{stdout}");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let files = mpprof_merge::read::list_session(&dir).unwrap();
    assert_eq!(files.len(), 1);
    // A symlink in its place is refused, by init too.
    std::fs::create_dir(base.path().join("real")).unwrap();
    std::os::unix::fs::symlink(base.path().join("real"), base.path().join("link")).unwrap();
    let out = self_command(T, "init", &base.path().join("link"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("refused=") && stdout.contains("symbolic link"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(base.path().join("real")).unwrap().count(),
        0
    );
}

#[test]
fn session_files_are_private() {
    child_role("private", || {
        call(1);
    });
    let dir = session_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(
        self_command("session_files_are_private", "private", dir.path())
            .status()
            .unwrap()
            .success()
    );
    // Every file: the buffer file and the resource sampler's host lock.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in files {
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
}

#[mpprof::instrument]
fn before_fork() {}

#[mpprof::instrument]
fn in_fork_child() -> u64 {
    (0..1000).map(call).sum()
}

#[mpprof::instrument]
fn fork_and_wait() -> i32 {
    // SAFETY: fork(2) in a single-threaded test child; the forked child
    // only runs Rust code that the atfork handlers prepared for, then exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        in_fork_child();
        std::process::exit(0);
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

#[test]
fn fork_without_exec_records_into_a_file_of_its_own() {
    child_role("forker", || {
        before_fork();
        assert_eq!(fork_and_wait(), 0);
        last_call();
    });
    let (_dir, s) = common::record("fork_without_exec_records_into_a_file_of_its_own", "forker");
    assert_eq!(
        s.processes.len(),
        2,
        "the forked child has a file of its own"
    );
    let names = |pi: usize| -> Vec<String> {
        s.events()
            .filter(|e| e.proc == pi)
            .filter_map(|e| match e.kind {
                EventKind::Enter { site } => Some(s.processes[pi].site_name(site).into_owned()),
                _ => None,
            })
            .collect()
    };
    let (parent, child) = if names(0).contains(&"before_fork".to_owned()) {
        (0, 1)
    } else {
        (1, 0)
    };
    let pn = names(parent);
    let cn = names(child);
    assert!(pn.contains(&"fork_and_wait".to_owned()) && pn.contains(&"last_call".to_owned()));
    assert!(
        !pn.contains(&"in_fork_child".to_owned()),
        "the child never wrote into the parent's file"
    );
    assert_eq!(cn.iter().filter(|n| *n == "in_fork_child").count(), 1);
    assert_eq!(cn.iter().filter(|n| *n == "call").count(), 1000);
    let (pf, cf) = (&s.processes[parent].file, &s.processes[child].file);
    assert!(pf.clean && cf.clean);
    assert_ne!(pf.uid, cf.uid, "the child has its own process uid");
    assert_eq!(cf.info.as_ref().unwrap().ppid, pf.pid);
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(
        (h.flows_matched, h.causality_violations),
        (1, 0),
        "one flow from the fork point"
    );
}

#[test]
fn a_thousand_short_lived_threads_share_chunks() {
    child_role("churn", || {
        for batch in 0..125 {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    std::thread::Builder::new()
                        .name(format!("short-{batch}-{t}"))
                        .spawn(move || (0..3).map(call).sum::<u64>())
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
    });
    let (_dir, s) = common::record("a_thousand_short_lived_threads_share_chunks", "churn");
    let p = &s.processes[0];
    let size = std::fs::metadata(&p.file.path).unwrap().len();
    assert_eq!(p.file.lost_events, 0);
    let mut per_lane = std::collections::HashMap::<u32, u32>::new();
    for e in s.events() {
        if let EventKind::Exit { site, .. } = e.kind {
            assert_eq!(p.site_name(site), "call");
            *per_lane.entry(e.lane).or_default() += 1;
        }
    }
    assert_eq!(per_lane.len(), 1000, "every thread's events are kept");
    assert!(per_lane.values().all(|&n| n == 3));
    for (lane, l) in &p.file.lanes {
        if per_lane.contains_key(lane) {
            assert!(
                l.name.starts_with("short-"),
                "lane {lane} named {:?}",
                l.name
            );
        }
    }
    // 1000 threads, but chunks are handed on: a few chunks, not 1000.
    assert!(size < 8 << 20, "file size {size} bytes");
    eprintln!("1000 threads x 3 calls: file {} KiB", size / 1024);
}

#[mpprof::instrument]
fn kill_loop(out: std::sync::Arc<std::sync::Mutex<std::io::Stdout>>, t: usize) {
    let mut i = 0u64;
    loop {
        call(i);
        i += 1;
        if i.is_multiple_of(64) {
            // The witness: `i` calls of this thread have returned, so their
            // exits are committed.
            use std::io::Write;
            let mut o = out.lock().unwrap();
            writeln!(o, "{t} {i}").unwrap();
            o.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_a_committed_event() {
    child_role("killme", || {
        let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let out = out.clone();
                std::thread::Builder::new()
                    .name(format!("w{t}"))
                    .spawn(move || kill_loop(out, t))
                    .unwrap()
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    use std::io::Read;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut torn = 0;
    let mut total_witnessed = 0;
    for round in 0..100 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay_us = rng % 8_000;
        let dir = session_dir();
        let mut child = self_command(
            "sigkill_at_random_moments_never_loses_a_committed_event",
            "killme",
            dir.path(),
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        let mut text = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let mut witnessed = [0u64; 4];
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if let (Some(t), Some(n)) = (
                it.next().and_then(|t| t.parse::<usize>().ok()),
                it.next().and_then(|n| n.parse().ok()),
            ) {
                if t < 4 {
                    witnessed[t] = witnessed[t].max(n);
                }
            }
        }
        total_witnessed += witnessed.iter().sum::<u64>();
        let s = match Session::open(&[dir.path()]) {
            Ok(s) if !s.processes.is_empty() => s,
            // Killed before its file had a header (an empty file: the
            // process "recorded nothing"), or before it existed.
            Ok(s) => {
                assert_eq!(witnessed, [0; 4], "round {round}: {:?}", s.no_space);
                continue;
            }
            Err(e) => {
                assert_eq!(
                    witnessed, [0; 4],
                    "round {round} (delay {delay_us} us): {e}"
                );
                continue;
            }
        };
        let p = &s.processes[0];
        assert!(!p.file.clean, "round {round}: killed, so not clean");
        torn += p.file.torn_records;
        let mut calls = [0u64; 4];
        let mut abrupt = [false; 4];
        for e in s.events() {
            let Some(t) = p
                .file
                .lanes
                .get(&e.lane)
                .and_then(|l| l.name.strip_prefix('w'))
                .and_then(|t| t.parse::<usize>().ok())
            else {
                continue;
            };
            if let EventKind::Exit { site, end } = e.kind {
                match &*p.site_name(site) {
                    "call" if end == mpprof_merge::merge::End::Normal => calls[t] += 1,
                    "kill_loop" => abrupt[t] = end == mpprof_merge::merge::End::Abrupt,
                    _ => {}
                }
            }
        }
        for t in 0..4 {
            assert!(
                calls[t] >= witnessed[t],
                "round {round} thread {t}: recovered {} calls, witnessed {}",
                calls[t],
                witnessed[t]
            );
            if witnessed[t] > 0 {
                assert!(
                    abrupt[t],
                    "round {round} thread {t}: the open span is marked as ended abruptly"
                );
            }
        }
    }
    eprintln!("100 kills: {total_witnessed} witnessed calls all recovered; {torn} torn records detected and skipped");
    assert!(
        total_witnessed > 0,
        "the kills landed while the children worked"
    );
}

/// A 1 MiB tmpfs as the session directory, or `None` where mounting is not
/// permitted (not root, no mount namespace rights).
struct TinyFs(tempfile::TempDir);
impl TinyFs {
    fn mount() -> Option<TinyFs> {
        let d = session_dir();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(d.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        st.success().then_some(TinyFs(d))
    }
}
impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_costs_events_not_the_application() {
    child_role("work", work);
    for policy in ["keep-first", "keep-last"] {
        let Some(fs) = TinyFs::mount() else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is covered by RLIMIT_FSIZE only");
            return;
        };
        let mut c = self_command(
            "a_full_disk_costs_events_not_the_application",
            "work",
            fs.0.path(),
        );
        let out = c
            .env("MPPROF_CHUNK_KB", "64")
            .env("MPPROF_SAMPLE_MS", "0")
            .env("MPPROF_OVERFLOW", policy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("sum={}", expected_sum())));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches("No space left on device").count(),
            1,
            "{policy}: one warning: {stderr}"
        );
        let (kept, lost, _, last) = tally(fs.0.path());
        assert_eq!(
            kept + lost,
            2 * CALLS + 2,
            "{policy}: every event kept or counted"
        );
        assert!(lost > 0, "{policy}");
        assert_eq!(
            last,
            policy == "keep-last",
            "{policy}: the flight recorder keeps the newest events"
        );
        let h = mpprof_merge::analysis::check::check(&Session::open(&[fs.0.path()]).unwrap());
        assert!(
            !h.damaged(),
            "{policy}: a full disk is a loss, not damage: {:?}",
            h.processes[0].warnings
        );
        assert!(h.processes[0].clean);
    }
}

/// Calls each thread of [`keep_last_keeps_the_newest_events_of_every_thread`] makes.
const ROUND_CALLS: u64 = 60_000;
/// Rounds of two new threads each.
const ROUNDS: u64 = 6;

/// A round's thread: ROUND_CALLS calls (about 15 chunks of 64 KiB), then
/// `last_call`, its newest event.
fn round_worker() -> u64 {
    let sum = (0..ROUND_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
    last_call();
    sum
}

/// Thread churn under the flight recorder: once the budget is used up,
/// threads that own no chunk (they only continued chunks left by exited
/// threads) must still record, and every thread keeps its newest events.
#[test]
fn keep_last_keeps_the_newest_events_of_every_thread() {
    child_role("rounds", || {
        for round in 0..ROUNDS {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    std::thread::Builder::new()
                        .name(format!("r{round}t{t}"))
                        .spawn(round_worker)
                        .unwrap()
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
    });
    let (_dir, s) = record_small(
        "keep_last_keeps_the_newest_events_of_every_thread",
        "rounds",
        "keep-last",
    );
    let p = &s.processes[0];
    let f = &p.file;
    // Per thread: its events, its loss markers, its newest span.
    let made_per_thread = 2 * ROUND_CALLS + 2;
    let mut names = std::collections::BTreeMap::<u32, String>::new();
    let (lost, markers) = lane_losses(&s);
    let mut newest = std::collections::BTreeMap::<u32, String>::new();
    for e in s.events() {
        if let EventKind::Exit { site, .. } = e.kind {
            newest.insert(e.lane, p.site_name(site).into_owned());
        }
    }
    for (&lane, l) in &f.lanes {
        names.insert(lane, l.name.clone());
    }
    // The last round's threads end with their last call.
    for t in 0..2 {
        let name = format!("r{}t{t}", ROUNDS - 1);
        let lane = names
            .iter()
            .find(|(_, n)| **n == name)
            .map(|(&l, _)| l)
            .unwrap_or_else(|| panic!("no lane named {name}: {names:?}"));
        assert_eq!(
            newest.get(&lane).map(String::as_str),
            Some("last_call"),
            "{name} (lane {lane}) kept its newest events; markers {markers:?}"
        );
    }
    // Every thread that still has events has its newest one, and its
    // events kept plus those it is said to have lost are exactly what it
    // made: no lane is blamed for another's overwritten events.
    for (&lane, name) in &names {
        let kept = f.lane_events(lane);
        let gone = lost.get(&lane).copied().unwrap_or(0);
        if kept > 0 {
            assert_eq!(
                newest.get(&lane).map(String::as_str),
                Some("last_call"),
                "{name} (lane {lane}) has events but not its newest"
            );
        }
        assert_eq!(
            kept + gone,
            made_per_thread,
            "{name} (lane {lane}): {kept} kept + {gone} lost; markers {markers:?}"
        );
    }
    assert_eq!(
        names.len() as u64,
        2 * ROUNDS,
        "one lane per thread: {names:?}"
    );
    // Exact accounting for the process.
    let made = 2 * ROUNDS * made_per_thread;
    assert_eq!(f.recorded_events() + f.lost_events, made);
    assert!(f.lost_events > 0, "the budget was used up");
    let h = assert_only_overwritten_and_healthy(&s, &markers);
    let why = h.processes[0].lost_reason.as_deref().unwrap();
    assert!(
        why.contains("the flight recorder (keep-last) overwrote"),
        "{why}"
    );
    // The writers take lanes that kept nothing but their loss marker.
    let overwritten_markers = common::chrome_events(&s)
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(" events overwritten"))
        })
        .count();
    assert_eq!(overwritten_markers, markers.len());
    mpprof_merge::write::perfetto::write(&s, &mut std::io::sink()).unwrap();
}

/// Calls the main thread of [`keep_last_keeps_late_threads_recording`] makes
/// before its workers start: about 9 times the 1 MiB budget.
const BUSY_CALLS: u64 = 300_000;
/// Calls each late worker makes: about 5 chunks of 64 KiB.
const LATE_CALLS: u64 = 20_000;

#[mpprof::instrument]
fn late_worker_0_last() {}

#[mpprof::instrument]
fn late_worker_1_last() {}

#[mpprof::instrument]
fn busy_main_last() {}

/// A late worker: LATE_CALLS calls, then its own final call.
fn late_worker(t: u32) -> u64 {
    let sum = (0..LATE_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
    if t == 0 {
        late_worker_0_last();
    } else {
        late_worker_1_last();
    }
    sum
}

/// The flight recorder with one busy thread that took the whole budget
/// before the other threads started: the late threads (the busy one still
/// alive, so nothing is pooled) must still record, and keep their newest
/// events, by overwriting the busy thread's oldest chunks.
#[test]
fn keep_last_keeps_late_threads_recording() {
    child_role("late", || {
        let sum = (0..BUSY_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
        let hs: Vec<_> = (0..2)
            .map(|t| {
                std::thread::Builder::new()
                    .name(format!("late{t}"))
                    .spawn(move || late_worker(t))
                    .unwrap()
            })
            .collect();
        let sum = hs
            .into_iter()
            .fold(sum, |a, h| a.wrapping_add(h.join().unwrap()));
        busy_main_last();
        println!("sum={sum}");
    });
    let (_dir, s) = record_small(
        "keep_last_keeps_late_threads_recording",
        "late",
        "keep-last",
    );
    let p = &s.processes[0];
    let f = &p.file;
    let (lost, markers) = lane_losses(&s);
    let mut finals = std::collections::BTreeMap::<u32, Vec<String>>::new();
    for e in s.events() {
        if let EventKind::Exit { site, .. } = e.kind {
            let name = p.site_name(site).into_owned();
            if name.ends_with("_last") {
                finals.entry(e.lane).or_default().push(name);
            }
        }
    }
    let lane_named = |name: &str| -> u32 {
        f.lanes
            .iter()
            .find(|(_, l)| l.name == name)
            .map(|(&lane, _)| lane)
            .unwrap_or_else(|| panic!("no lane named {name}"))
    };
    let main = f
        .lanes
        .iter()
        .find(|(_, l)| !l.name.starts_with("late"))
        .map(|(&lane, _)| lane)
        .expect("the main thread's lane");
    let lanes = [
        (main, "busy_main_last", 2 * BUSY_CALLS + 2),
        (
            lane_named("late0"),
            "late_worker_0_last",
            2 * LATE_CALLS + 2,
        ),
        (
            lane_named("late1"),
            "late_worker_1_last",
            2 * LATE_CALLS + 2,
        ),
    ];
    assert_eq!(f.lanes.len(), 3, "one lane per thread");
    for &(lane, last, made) in &lanes {
        // Its newest events are kept: its final call.
        assert_eq!(
            finals.get(&lane).map(Vec::as_slice),
            Some(&[last.to_owned()][..]),
            "lane {lane} kept its final call {last}; lost {:?}; markers {markers:?}",
            lost.get(&lane)
        );
        // Kept plus overwritten is exactly what it made.
        let kept = f.lane_events(lane);
        let gone = lost.get(&lane).copied().unwrap_or(0);
        assert_eq!(
            kept + gone,
            made,
            "lane {lane}: {kept} kept + {gone} lost; markers {markers:?}"
        );
    }
    // Exact accounting for the process.
    let made: u64 = lanes.iter().map(|l| l.2).sum();
    assert_eq!(f.recorded_events() + f.lost_events, made);
    assert!(f.lost_events > 0, "the budget was used up");
    assert_only_overwritten_and_healthy(&s, &markers);
}

/// Runs `role` (hosted by `test`) under `policy` with a 1 MiB budget of
/// 64 KiB chunks, checks it exited successfully, and opens its session.
fn record_small(test: &str, role: &str, policy: &str) -> (tempfile::TempDir, Session) {
    record_small_with(test, role, policy, &[])
}

/// [`record_small`] with more environment variables.
fn record_small_with(
    test: &str,
    role: &str,
    policy: &str,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Session) {
    let dir = session_dir();
    let mut c = self_command(test, role, dir.path());
    c.env("MPPROF_OVERFLOW", policy)
        .env("MPPROF_BUFFER_MB", "1")
        .env("MPPROF_CHUNK_KB", "64");
    succeed(c, env);
    let s = Session::open(&[dir.path()]).unwrap();
    assert_eq!(s.processes.len(), 1);
    (dir, s)
}

/// Events lost per lane, from the merge's loss markers, and the markers as
/// (lane, count, overwritten).
type Losses = (std::collections::BTreeMap<u32, u64>, Vec<(u32, u64, bool)>);

fn lane_losses(s: &Session) -> Losses {
    let (mut lost, mut markers) = Losses::default();
    for e in s.events() {
        if let EventKind::Lost { count, overwritten } = e.kind {
            markers.push((e.lane, count, overwritten));
            *lost.entry(e.lane).or_default() += count;
        }
    }
    (lost, markers)
}

/// Every loss marker of a keep-last run says "overwritten", and `check`
/// finds a clean run: no damage, nothing torn, no causality problem.
fn assert_only_overwritten_and_healthy(
    s: &Session,
    markers: &[(u32, u64, bool)],
) -> mpprof_merge::analysis::check::Health {
    assert!(
        markers.iter().all(|&(_, _, overwritten)| overwritten),
        "nothing was lost without being overwritten: {markers:?}"
    );
    let h = mpprof_merge::analysis::check::check(s);
    assert!(!h.damaged(), "{:?} {:?}", h.processes[0].warnings, h.stats);
    assert_eq!(h.causality_violations, 0);
    assert_eq!(h.processes[0].torn_records, 0);
    assert!(h.processes[0].clean);
    h
}

/// Short-lived threads of [`a_hand_off_without_its_entry_is_not_continued`].
const SHORT_THREADS: u64 = 2_000;
/// Calls each of them makes.
const SHORT_CALLS: u64 = 10;

/// Once the metadata space is used up, a thread must not continue a chunk
/// left by an exited thread, since the `Handoff` entry that would give it
/// its records cannot be stored: they would count as the previous lane's.
/// Both policies (keep-last pools the chunk instead).
#[test]
fn a_hand_off_without_its_entry_is_not_continued() {
    child_role("short", || {
        // Long names: each thread's `Thread` entry takes about 1 KiB, so
        // the metadata fills up with the budget.
        let long = "n".repeat(1000);
        for t in 0..SHORT_THREADS {
            std::thread::Builder::new()
                .name(format!("{t}{long}"))
                .spawn(|| (0..SHORT_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i))))
                .unwrap()
                .join()
                .unwrap();
        }
    });
    for policy in ["keep-first", "keep-last"] {
        hand_offs_without_entries(policy);
    }
}

fn hand_offs_without_entries(policy: &str) {
    let (_dir, s) = record_small(
        "a_hand_off_without_its_entry_is_not_continued",
        "short",
        policy,
    );
    let f = &s.processes[0].file;
    assert!(f.lost_meta > 0, "the metadata space was used up");
    assert!(
        !f.handoffs.is_empty(),
        "{policy}: threads continued each other's chunks before that"
    );
    // No lane holds more than one thread's events.
    for (&lane, l) in &f.lanes {
        let mut kept = 0;
        for c in &l.chunks {
            let mut r = mpprof_merge::read::RecordReader::new(*c);
            while r.next_event(&f.file).is_some() {
                kept += 1;
            }
        }
        assert!(
            kept <= 2 * SHORT_CALLS,
            "{policy}: lane {lane} holds {kept} events, more than one thread made"
        );
    }
    assert_eq!(
        f.recorded_events() + f.lost_events,
        2 * SHORT_CALLS * SHORT_THREADS,
        "{policy}"
    );
}

/// Stops this process's buffer file from growing (a soft `RLIMIT_FSIZE` of
/// its current size, for the whole process; `SIGXFSZ` ignored) until
/// dropped: every chunk claim fails as on a full disk. For a child that
/// records with `MPPROF_PREPARE=0` (else the preparer's ready chunks,
/// reserved before, would still be claimed).
struct FileCannotGrow(libc::rlimit);

impl FileCannotGrow {
    fn now() -> FileCannotGrow {
        let dir = mpprof::session_dir().expect("recording");
        let files = mpprof_merge::read::list_session(&dir).unwrap();
        let size = std::fs::metadata(&files[0]).unwrap().len();
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit on this process with valid pointers;
        // ignoring SIGXFSZ makes a write past the limit fail with EFBIG.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
            let lim = libc::rlimit {
                rlim_cur: size,
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        FileCannotGrow(old)
    }
}

impl Drop for FileCannotGrow {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `now` (raising the soft limit
        // up to the unchanged hard one needs no privilege).
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &self.0), 0) };
    }
}

/// Events the loss markers (lane, count, overwritten) put on `lane` as
/// lost, not overwritten.
fn lost_on(markers: &[(u32, u64, bool)], lane: u32) -> u64 {
    markers
        .iter()
        .filter(|m| m.0 == lane && !m.2)
        .map(|m| m.1)
        .sum()
}

/// For each thread `(name, events made)`: the events kept on its lane plus
/// the losses the merge shows there (markers) are exactly what it made, and
/// the process's losses are all on the lanes of the threads that lost them.
/// Returns the markers.
fn assert_every_thread_accounts_for_its_events(
    s: &Session,
    made: &[(&str, u64)],
) -> Vec<(u32, u64, bool)> {
    let f = &s.processes[0].file;
    let (lost, markers) = lane_losses(s);
    assert_eq!(
        f.lanes.len(),
        made.len(),
        "one lane per thread: {:?}",
        f.lanes
    );
    for &(name, n) in made {
        let lane = lane_named(s, name, made);
        let kept = f.lane_events(lane);
        let gone = lost.get(&lane).copied().unwrap_or(0);
        assert_eq!(
            kept + gone,
            n,
            "{name} (lane {lane}): {kept} kept + {gone} lost or overwritten; markers {markers:?}"
        );
    }
    let total: u64 = made.iter().map(|m| m.1).sum();
    assert_eq!(f.recorded_events() + f.lost_events, total);
    markers
}

/// The lane of the thread `name` of the first process; "main" is the lane
/// not named in `made` (the test harness names the main thread after the
/// test).
fn lane_named(s: &Session, name: &str, made: &[(&str, u64)]) -> u32 {
    let lanes = &s.processes[0].file.lanes;
    lanes
        .iter()
        .find(|(_, l)| l.name == name || (name == "main" && made.iter().all(|m| m.0 != l.name)))
        .map(|(&lane, _)| lane)
        .unwrap_or_else(|| panic!("no lane named {name}: {lanes:?}"))
}

/// Calls the thread of [`keep_last_keeps_the_losses_of_a_chunk_it_overwrites_on_its_lane`]
/// makes while the file cannot grow (all lost).
const REGROW_LOST_CALLS: u64 = 1_000;
/// Calls it makes once the file can grow again: about 5 times the budget.
const REGROW_CALLS: u64 = 300_000;

#[mpprof::instrument]
fn regrow_last() {}

/// The flight recorder: a thread loses events while the file cannot grow
/// (so its first chunk's header says how many it lost before it), then
/// records so much that it overwrites that chunk as its own oldest. The
/// losses the header held stay on the thread's lane: they are not charged
/// to the process (the main thread's lane).
#[test]
fn keep_last_keeps_the_losses_of_a_chunk_it_overwrites_on_its_lane() {
    child_role("regrow", || {
        call(0); // the main thread's chunk
        let limit = FileCannotGrow::now();
        let (lost_tx, lost_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name("regrow".into())
            .spawn(move || {
                let sum = (0..REGROW_LOST_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
                lost_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                // Past the 100 ms a thread waits after a failed claim.
                std::thread::sleep(std::time::Duration::from_millis(150));
                let sum = (0..REGROW_CALLS).fold(sum, |a, i| a.wrapping_add(call(i)));
                regrow_last();
                sum
            })
            .unwrap();
        lost_rx.recv().unwrap();
        drop(limit);
        go_tx.send(()).unwrap();
        println!("sum={}", h.join().unwrap());
    });
    let (_dir, s) = record_small_with(
        "keep_last_keeps_the_losses_of_a_chunk_it_overwrites_on_its_lane",
        "regrow",
        "keep-last",
        &[("MPPROF_PREPARE", "0")],
    );
    let f = &s.processes[0].file;
    let lost_while_full = 2 * REGROW_LOST_CALLS;
    let markers = assert_every_thread_accounts_for_its_events(
        &s,
        &[
            ("main", 2),
            ("regrow", lost_while_full + 2 * REGROW_CALLS + 2),
        ],
    );
    let regrow = lane_named(&s, "regrow", &[]);
    // The thread overwrote its first chunk, and shows what it lost before it.
    assert!(f.lanes[&regrow].overwritten > 0);
    let lost = lost_on(&markers, regrow);
    assert_eq!(lost, lost_while_full, "markers {markers:?}");
    let h = mpprof_merge::analysis::check::check(&s);
    assert!(!h.damaged(), "{:?}", h.processes[0].warnings);
    assert!(h.processes[0]
        .lost_reason
        .as_deref()
        .unwrap()
        .contains("could not grow"));
}

/// Calls each chunkless thread of [`a_thread_that_never_had_a_chunk_shows_its_own_losses`] makes.
const CHUNKLESS_CALLS: u64 = 5_000;

/// Two threads that never get a chunk: one exits, one still runs when the
/// process exits. Returns the sum of their calls.
fn chunkless_threads() -> u64 {
    let gone = std::thread::Builder::new()
        .name("late-exits".into())
        .spawn(|| (0..CHUNKLESS_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i))))
        .unwrap()
        .join()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("late-stays".into())
        .spawn(move || {
            let sum = (0..CHUNKLESS_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
            tx.send(sum).unwrap();
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    gone.wrapping_add(rx.recv().unwrap())
}

/// A thread that never had a chunk (it started after the keep-first budget
/// was used up, or under keep-last when the file could not grow and no
/// chunk could be taken) shows its losses on its own lane, named, whether
/// it exited before the process or still ran at its end; they are not
/// charged to the process's first lane.
#[test]
fn a_thread_that_never_had_a_chunk_shows_its_own_losses() {
    child_role("budget", || {
        // The main thread uses up the budget (1 MiB holds about 100k
        // events).
        let sum = (0..CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
        println!("sum={}", sum.wrapping_add(chunkless_threads()));
    });
    child_role("cannot-grow", || {
        call(0);
        let _limit = FileCannotGrow::now();
        println!("sum={}", chunkless_threads());
    });
    let test = "a_thread_that_never_had_a_chunk_shows_its_own_losses";
    let chunkless = 2 * CHUNKLESS_CALLS;
    for (role, policy, main) in [
        ("budget", "keep-first", 2 * CALLS),
        ("cannot-grow", "keep-last", 2),
    ] {
        let (_dir, s) = record_small_with(test, role, policy, &[("MPPROF_PREPARE", "0")]);
        let markers = assert_every_thread_accounts_for_its_events(
            &s,
            &[
                ("main", main),
                ("late-exits", chunkless),
                ("late-stays", chunkless),
            ],
        );
        let f = &s.processes[0].file;
        for name in ["late-exits", "late-stays"] {
            let lane = lane_named(&s, name, &[]);
            assert_eq!(
                markers.iter().filter(|m| m.0 == lane).collect::<Vec<_>>(),
                [&(lane, chunkless, false)],
                "{policy}: {name}"
            );
            assert_eq!(f.lane_events(lane), 0, "{policy}: {name} never had a chunk");
        }
        let h = mpprof_merge::analysis::check::check(&s);
        assert!(!h.damaged(), "{policy}: {:?}", h.processes[0].warnings);
        // `check` and the summary say which thread lost what.
        let mut check = Vec::new();
        mpprof_merge::write::check::write_text(&h, &mut check).unwrap();
        let mut summary = Vec::new();
        mpprof_merge::write::summary::write(&s, &mut summary, 30).unwrap();
        for text in [check, summary] {
            let text = String::from_utf8(text).unwrap();
            for name in ["late-exits", "late-stays"] {
                let lane = lane_named(&s, name, &[]);
                let line = text
                    .lines()
                    .find(|l| l.contains(&format!("thread \"{name}\"")))
                    .unwrap_or_else(|| panic!("{policy}: no line for {name}:\n{text}"));
                assert!(
                    line.ends_with(&format!(
                        "(lane {lane}, tid {}): {chunkless} not recorded",
                        f.lanes[&lane].tid
                    )),
                    "{policy}: {line}"
                );
            }
            assert!(!text.contains("no thread named"), "{policy}:\n{text}");
        }
    }
}

/// A process killed before a thread without a chunk wrote its `Lost` entry
/// (it writes it at its exit, or the recorder at the finish): its losses
/// still count for the process, shown at the end of the process's first
/// lane, as before `Lost` existed.
#[test]
fn a_killed_process_keeps_unwritten_chunkless_losses_as_its_own() {
    child_role("killed", || {
        call(0);
        let _limit = FileCannotGrow::now();
        std::thread::Builder::new()
            .name("late".into())
            .spawn(|| {
                let sum = (0..CHUNKLESS_CALLS).fold(0u64, |a, i| a.wrapping_add(call(i)));
                use std::io::Write;
                // On a line of its own: the harness's "test ... " has none.
                println!("\nchunkless-lost {sum}");
                std::io::stdout().flush().unwrap();
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        loop {
            std::thread::park();
        }
    });
    use std::io::BufRead;
    let dir = session_dir();
    let mut child = self_command(
        "a_killed_process_keeps_unwritten_chunkless_losses_as_its_own",
        "killed",
        dir.path(),
    )
    .env("MPPROF_OVERFLOW", "keep-last")
    .env("MPPROF_BUFFER_MB", "1")
    .env("MPPROF_CHUNK_KB", "64")
    .env("MPPROF_SAMPLE_MS", "0")
    .env("MPPROF_PREPARE", "0")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // The test harness prints a line or two first.
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = lines.map_while(Result::ok);
    assert!(
        lines.any(|l| l.starts_with("chunkless-lost ")),
        "the thread lost its events"
    );
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let s = Session::open(&[dir.path()]).unwrap();
    let f = &s.processes[0].file;
    assert!(!f.clean);
    let late = lane_named(&s, "late", &[]);
    let main = lane_named(&s, "main", &[("late", 0)]);
    let (lost, _) = lane_losses(&s);
    let chunkless = 2 * CHUNKLESS_CALLS;
    assert_eq!(f.lost_events, chunkless);
    assert_eq!(lost.get(&late), None, "no entry says whose they are");
    assert_eq!(
        lost.get(&main),
        Some(&chunkless),
        "the process's first lane"
    );
    assert_eq!(main, *f.lanes.keys().next().unwrap());
    assert_eq!(f.recorded_events(), 2);
    let mut check = Vec::new();
    mpprof_merge::write::check::write_text(&mpprof_merge::analysis::check::check(&s), &mut check)
        .unwrap();
    let check = String::from_utf8(check).unwrap();
    assert!(
        check.contains(&format!("no thread named: {chunkless} ")),
        "{check}"
    );
}

/// Calls the threads of
/// [`keep_last_keeps_the_losses_of_a_chunk_another_thread_overwrites_on_their_lanes`]
/// make while the file cannot grow (all lost).
const SHARED_LOST_CALLS: u64 = 1_000;
/// Calls that fill a chunk several times over.
const SHARED_CALLS: u64 = 30_000;

fn calls(n: u64) -> u64 {
    (0..n).fold(0u64, |a, i| a.wrapping_add(call(i)))
}

/// A thread that runs each function it is sent, answering with its
/// result, until the sender is dropped.
struct Stepped {
    work: std::sync::mpsc::Sender<fn() -> u64>,
    done: std::sync::mpsc::Receiver<u64>,
    thread: std::thread::JoinHandle<()>,
}

impl Stepped {
    fn spawn(name: &str) -> Stepped {
        let (work, rx) = std::sync::mpsc::channel::<fn() -> u64>();
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for f in rx {
                    tx.send(f()).unwrap();
                }
            })
            .unwrap();
        Stepped { work, done, thread }
    }

    fn run(&self, f: fn() -> u64) -> u64 {
        self.work.send(f).unwrap();
        self.done.recv().unwrap()
    }

    fn exit(self) {
        drop(self.work);
        self.thread.join().unwrap();
    }
}

/// Past the 100 ms a thread waits after a failed claim.
fn after_back_off() -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(150));
    0
}

/// The flight recorder takes over chunks other threads wrote: the losses
/// their headers and hand-offs noted before the overwritten events stay on
/// the lanes that lost them.
///
/// - `handoff`: a thread loses events while the file cannot grow, then
///   continues the chunk an exited thread left (the hand-off notes the
///   losses), fills it and, with nothing else to take, starts it over (a
///   `Reused` entry retires the hand-off).
/// - `header`: a thread loses events while the file cannot grow, then
///   claims a chunk once it can (its header notes the losses) and exits;
///   with the file full again, another thread continues that chunk, fills
///   it and starts it over (the header goes).
#[test]
fn keep_last_keeps_the_losses_of_a_chunk_another_thread_overwrites_on_their_lanes() {
    child_role("handoff", || {
        call(0);
        let giver = Stepped::spawn("giver");
        let mut sum = giver.run(|| calls(10));
        let _limit = FileCannotGrow::now();
        let taker = Stepped::spawn("taker");
        sum = sum.wrapping_add(taker.run(|| calls(SHARED_LOST_CALLS)));
        giver.exit();
        sum = sum.wrapping_add(taker.run(|| calls(SHARED_CALLS)));
        taker.exit();
        println!("sum={sum}");
    });
    child_role("header", || {
        call(0);
        let limit = FileCannotGrow::now();
        let late = Stepped::spawn("late");
        let mut sum = late.run(|| calls(SHARED_LOST_CALLS));
        drop(limit);
        late.run(after_back_off);
        sum = sum.wrapping_add(late.run(|| calls(10)));
        late.exit();
        let _limit = FileCannotGrow::now();
        let follower = Stepped::spawn("follower");
        sum = sum.wrapping_add(follower.run(|| calls(SHARED_CALLS)));
        follower.exit();
        println!("sum={sum}");
    });
    let test = "keep_last_keeps_the_losses_of_a_chunk_another_thread_overwrites_on_their_lanes";
    let lost = 2 * SHARED_LOST_CALLS;
    for (role, who, made) in [
        (
            "handoff",
            "taker",
            [
                ("main", 2),
                ("giver", 20),
                ("taker", lost + 2 * SHARED_CALLS),
            ],
        ),
        (
            "header",
            "late",
            [
                ("main", 2),
                ("late", lost + 20),
                ("follower", 2 * SHARED_CALLS),
            ],
        ),
    ] {
        let (_dir, s) = record_small_with(test, role, "keep-last", &[("MPPROF_PREPARE", "0")]);
        let f = &s.processes[0].file;
        assert!(
            f.reuses.iter().any(|r| r.effective),
            "{role}: another thread's chunk was taken over"
        );
        let markers = assert_every_thread_accounts_for_its_events(&s, &made);
        let lane = lane_named(&s, who, &made);
        let lost_markers = lost_on(&markers, lane);
        assert_eq!(lost_markers, lost, "{role}: {who}'s markers {markers:?}");
        let h = mpprof_merge::analysis::check::check(&s);
        assert!(!h.damaged(), "{role}: {:?}", h.processes[0].warnings);
    }
}
