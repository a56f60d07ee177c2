//! Recording in real child processes: nesting, panics, threads, SIGKILL,
//! disabled recording.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{child_role, self_command, session_dir, span_sequence};
use mpprof_merge::merge::End;
use mpprof_merge::{EventKind, Session};

#[mpprof::instrument]
fn fact(n: u64) -> u64 {
    if n <= 1 {
        return 1;
    }
    n * fact(n - 1)
}

#[mpprof::instrument]
fn inner_that_panics() {
    panic!("boom (expected by the test)");
}

#[mpprof::instrument]
fn outer_catches() -> bool {
    std::panic::catch_unwind(inner_that_panics).is_err()
}

#[mpprof::instrument(name = "fallible")]
fn fallible(fail: bool) -> Result<u32, String> {
    let v: u32 = if fail { "x" } else { "7" }
        .parse()
        .map_err(|_| "not a number".to_string())?;
    Ok(v)
}

#[test]
fn recursion_panics_and_early_returns_nest_correctly() {
    child_role("nesting", || {
        assert_eq!(fact(4), 24);
        std::panic::set_hook(Box::new(|_| {}));
        assert!(outer_catches());
        assert!(fallible(true).is_err());
        assert_eq!(fallible(false), Ok(7));
        {
            let _g = mpprof::scope!("block");
            mpprof::event!("checkpoint");
            mpprof::counter!("depth", 3);
            mpprof::counter!("ratio", 0.5);
        }
    });
    let (_dir, s) = common::record(
        "recursion_panics_and_early_returns_nest_correctly",
        "nesting",
    );
    assert_eq!(s.processes.len(), 1);
    let p = &s.processes[0];
    assert!(p.file.clean, "the child exited normally");
    // The first lane that is not the resource sampler's.
    let sampler = p.file.sampler_lane();
    let lane = *p.file.lanes.keys().find(|&&l| Some(l) != sampler).unwrap();
    let seq = span_sequence(&s, 0, lane);
    let expect: Vec<&str> = vec![
        "+fact",
        "+fact",
        "+fact",
        "+fact",
        "-fact",
        "-fact",
        "-fact",
        "-fact",
        "+outer_catches",
        "+inner_that_panics",
        "-inner_that_panics",
        "-outer_catches",
        "+fallible",
        "-fallible",
        "+fallible",
        "-fallible",
        "+block",
        "-block",
    ];
    assert_eq!(seq, expect);
    // Every exit ended normally; instant and counters were recorded inside the block.
    let evs: Vec<_> = s.events().collect();
    assert!(evs
        .iter()
        .all(|e| !matches!(e.kind, EventKind::Exit { end, .. } if end != End::Normal)));
    let counters: Vec<mpprof_merge::CounterValue> = evs
        .iter()
        .filter_map(|e| {
            if let EventKind::Counter { value, .. } = e.kind {
                Some(value)
            } else {
                None
            }
        })
        .collect();
    // Exactly as recorded: an integer, a float.
    assert_eq!(
        counters,
        [
            mpprof_merge::CounterValue::Int(3),
            mpprof_merge::CounterValue::Float(0.5)
        ]
    );
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e.kind, EventKind::Instant { .. }))
            .count(),
        1
    );
    // Timestamps are ordered and the function path is known.
    assert!(evs.windows(2).all(|w| w[0].ts <= w[1].ts));
    let site = p.file.sites.values().find(|x| x.name == "fact").unwrap();
    assert_eq!(site.path, "recording::fact");
    assert!(site.file.ends_with("recording.rs"));
    // cProfile semantics: 4 calls, 1 primitive.
    let sum = mpprof_merge::analysis::summary::compute(&s);
    let f = sum.tree_func("fact").unwrap();
    assert_eq!((f.ncalls, f.primitive), (4, 1));
    assert!(f.cumtime_ns >= 0 && f.tottime_ns <= f.cumtime_ns);
}

#[mpprof::instrument]
fn before_idle() {}
#[mpprof::instrument]
fn after_idle() {}

/// A record word keeps the low 32 bits of its timestamp; the high half comes
/// from the last time base. A thread whose clock's high half changes (every
/// 2^32 ticks, or after it sat idle) writes a new base first, so its events
/// keep their true times. The child waits, for real, until the high half of
/// its clock changes (about 1.4 s of TSC at 3 GHz); without the new base the
/// second call would land 2^32 ticks too early.
#[test]
fn a_new_time_base_when_the_clock_high_half_changes() {
    child_role("idle", || {
        before_idle();
        let t = std::time::Instant::now();
        let high = |c: u64| c >> 32;
        let start = mpprof::clock::now();
        while high(mpprof::clock::now()) == high(start) && t.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        after_idle();
        println!("waited_ns={}", t.elapsed().as_nanos());
    });
    let dir = session_dir();
    let out = common::output_ok(&mut self_command(
        "a_new_time_base_when_the_clock_high_half_changes",
        "idle",
        dir.path(),
    ));
    // (After libtest's "test ... " on the same line.)
    let waited: i64 = String::from_utf8_lossy(&out.stdout)
        .split("waited_ns=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no wait reported: {}", String::from_utf8_lossy(&out.stdout)));
    let s = Session::open(&[dir.path()]).unwrap();
    let p = &s.processes[0];
    // The first lane that is not the resource sampler's.
    let sampler = p.file.sampler_lane();
    let lane = *p.file.lanes.keys().find(|&&l| Some(l) != sampler).unwrap();
    assert_eq!(
        span_sequence(&s, 0, lane),
        ["+before_idle", "-before_idle", "+after_idle", "-after_idle"]
    );
    let ts: Vec<i64> = s
        .events()
        .filter(|e| e.lane == lane)
        .map(|e| e.ts)
        .collect();
    let gap = ts[2] - ts[1];
    assert!(
        (gap - waited).abs() < 100_000_000,
        "the gap between the calls ({gap} ns) is the wait ({waited} ns)"
    );
    // The chunk's first base and at least one new one, two words each.
    assert!(p.file.committed_records() - p.file.recorded_events() >= 4);
}

#[mpprof::instrument]
fn tiny(i: u64) -> u64 {
    i.wrapping_mul(3)
}

const THREADS: usize = 8;
const CALLS: u64 = if cfg!(miri) { 100 } else { 100_000 };

#[test]
fn eight_threads_keep_every_event_in_order() {
    child_role("threads", || {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::Builder::new()
                    .name(format!("worker-{t}"))
                    .spawn(move || (0..CALLS).fold(0u64, |a, i| a ^ tiny(i)))
                    .unwrap()
            })
            .collect();
        for h in hs {
            std::hint::black_box(h.join().unwrap());
        }
    });
    let (_dir, s) = common::record("eight_threads_keep_every_event_in_order", "threads");
    check_threads(&s);
}

/// The same with timestamps from CLOCK_MONOTONIC (`MPPROF_CLOCK=monotonic`,
/// the fallback where the TSC cannot be trusted), whose events are written
/// by the out-of-line path.
#[test]
fn eight_threads_on_the_monotonic_clock() {
    let dir = session_dir();
    let st = self_command(
        "eight_threads_keep_every_event_in_order",
        "threads",
        dir.path(),
    )
    .env("MPPROF_CLOCK", "monotonic")
    .status()
    .unwrap();
    assert!(st.success());
    let s = Session::open(&[dir.path()]).unwrap();
    let info = s.processes[0].file.info.as_ref().unwrap();
    assert_eq!(info.clock, mpprof::format::ClockKind::Monotonic);
    check_threads(&s);
}

/// Every worker lane of the "threads" role has CALLS enters and exits,
/// alternating, in time order.
fn check_threads(s: &Session) {
    let p = &s.processes[0];
    assert_eq!(p.file.lost_events, 0);
    let workers: Vec<u32> = p
        .file
        .lanes
        .iter()
        .filter(|(_, l)| l.name.starts_with("worker-"))
        .map(|(&k, _)| k)
        .collect();
    assert_eq!(workers.len(), THREADS);
    let mut per_lane = std::collections::HashMap::<u32, (u64, u64, bool, i64)>::new();
    for e in s.events() {
        let c = per_lane.entry(e.lane).or_insert((0, 0, true, i64::MIN));
        // In order: alternating enter/exit, nondecreasing time.
        match e.kind {
            EventKind::Enter { .. } => {
                c.2 &= c.0 == c.1;
                c.0 += 1
            }
            EventKind::Exit { end, .. } => {
                c.2 &= c.0 == c.1 + 1 && end == End::Normal;
                c.1 += 1
            }
            _ => c.2 = false,
        }
        c.2 &= e.ts >= c.3;
        c.3 = e.ts;
    }
    for lane in workers {
        let (enters, exits, ordered, _) = per_lane[&lane];
        assert_eq!((enters, exits), (CALLS, CALLS), "lane {lane}");
        assert!(ordered, "lane {lane} events out of order");
    }
}

#[mpprof::instrument]
fn doomed_outer(out: &mut dyn std::io::Write) {
    let mut i = 0u64;
    loop {
        step(i);
        i += 1;
        // The witness: `i` steps have returned (their exits are committed).
        if i.is_multiple_of(1000) {
            writeln!(out, "{i}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[mpprof::instrument]
fn step(i: u64) -> u64 {
    std::hint::black_box(i * 7)
}

#[test]
fn sigkill_keeps_every_committed_event_and_marks_the_open_span() {
    child_role("doomed", || {
        doomed_outer(&mut std::io::stdout().lock());
    });
    let dir = session_dir();
    let mut child = self_command(
        "sigkill_keeps_every_committed_event_and_marks_the_open_span",
        "doomed",
        dir.path(),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut witnessed = 0u64;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Ok(n) = line.trim().parse::<u64>() {
            witnessed = n;
            if n >= 50_000 {
                break;
            }
        }
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(witnessed >= 50_000);
    let s = Session::open(&[dir.path()]).unwrap();
    let p = &s.processes[0];
    assert!(!p.file.clean, "a killed process has no clean-exit flag");
    let mut steps = 0u64;
    let mut outer_end = None;
    for e in s.events() {
        if let EventKind::Exit { site, end } = e.kind {
            let name = p.site_name(site);
            if name == "step" && end == End::Normal {
                steps += 1;
            }
            if name == "doomed_outer" {
                outer_end = Some(end);
            }
        }
    }
    assert!(
        steps >= witnessed,
        "recovered {steps} steps, the child witnessed {witnessed}"
    );
    assert_eq!(
        outer_end,
        Some(End::Abrupt),
        "the open span is closed by the merge and marked abrupt"
    );
    let health = mpprof_merge::analysis::check::check(&s);
    assert!(!health.processes[0].clean);
    // The Chrome output marks it too.
    let marked = common::chrome_events(&s)
        .iter()
        .any(|e| e["ph"] == "E" && e["args"]["ended_abruptly"] == true);
    assert!(marked);
}

#[test]
fn without_a_session_nothing_is_written() {
    child_role("no-session", || {
        std::env::set_current_dir(std::env::var("MPPROF_TEST_CWD").unwrap()).unwrap();
        assert_eq!(fact(5), 120);
        let _g = mpprof::scope!("nothing");
        assert!(mpprof::session_dir().is_none());
    });
    child_role("off", || {
        assert_eq!(fact(5), 120);
        let s = mpprof::init().unwrap();
        assert!(s.dir().is_none());
    });
    let cwd = session_dir();
    let st = self_command(
        "without_a_session_nothing_is_written",
        "no-session",
        cwd.path(),
    )
    .env_remove("MPPROF_DIR")
    .env("MPPROF_TEST_CWD", cwd.path())
    .status()
    .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "no files without a session"
    );
    let dir = session_dir();
    let st = self_command("without_a_session_nothing_is_written", "off", dir.path())
        .env("MPPROF", "off")
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "MPPROF=off writes nothing"
    );
}

/// The preparer (the helper thread that reserves chunks ahead) runs at the
/// lowest normal priority, so it never preempts the application's threads.
#[test]
fn the_preparer_yields_to_the_applications_threads() {
    child_role("preparer", || {
        fact(5);
        // The preparer starts on the first chunk claim; give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let nice = std::fs::read_dir("/proc/self/task").unwrap().find_map(|t| {
                let t = t.unwrap().path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                if comm.trim() != "mpprof-prepare" {
                    return None;
                }
                // stat: "pid (comm) state ..."; nice is field 19.
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(16)?.parse::<i32>().ok()
            });
            match nice {
                Some(19) => return,
                Some(n) => panic!("the preparer runs at nice {n}"),
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                None => panic!("no mpprof-prepare thread"),
            }
        }
    });
    let dir = common::session_dir();
    let st = common::self_command(
        "the_preparer_yields_to_the_applications_threads",
        "preparer",
        dir.path(),
    )
    .status()
    .unwrap();
    assert!(st.success());
}
