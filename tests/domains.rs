//! Clock domains with a known truth: one side of a ping-pong runs in a
//! Linux time namespace whose CLOCK_MONOTONIC is 86,400 s ahead, claims to
//! be another host, and has a wall clock 7 ms off. The merge must recover
//! the offset from the messages alone, within the latency bound, with no
//! receive before its send.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{child_role, session_dir};
use mpprof::flow;
use mpprof_merge::align::domains::Quality;
use mpprof_merge::Session;

const ROUNDS: usize = 2000;
const ALIGNED: &str = "a_time_namespace_on_another_host_is_aligned_from_the_messages";
const ONE_WAY: &str = "one_way_messages_give_an_honest_one_sided_bound";
const DRIFTING: &str = "a_drifting_clock_is_corrected_from_messages_both_ways";
const NS_OFFSET_S: i64 = 86_400;
const SKEW_NS: i64 = 7_000_000;

#[mpprof::instrument]
fn ping_side(mut to: impl Write, from: impl BufRead) {
    let mut lines = from.lines();
    for _ in 0..ROUNDS {
        let tok = flow::send("ping");
        writeln!(to, "ping {tok}").unwrap();
        to.flush().unwrap();
        // Skip what the test harness of the child prints to stdout.
        let line = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.starts_with("pong "))
            .unwrap();
        flow::recv(line["pong ".len()..].parse().unwrap(), "pong");
    }
    writeln!(to, "bye").unwrap();
}

/// Runs `role` of `test` as host-a, recording into one session directory,
/// with the other side (started by the role, in a time namespace) recording
/// into a second one (`PONG_DIR`); merges both.
fn record_two_hosts(test: &str, role: &str) -> (tempfile::TempDir, tempfile::TempDir, Session) {
    let (a, b) = (session_dir(), session_dir());
    let st = common::self_command(test, role, a.path())
        .env("PONG_DIR", b.path())
        .env("MPPROF_HOST_ID", "host-a")
        .status()
        .unwrap();
    assert!(st.success());
    let s = Session::open(&[a.path(), b.path()]).unwrap();
    (a, b, s)
}

/// Whether `unshare -T` works here (root, kernel with time namespaces).
fn time_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-T", "--monotonic", "10", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_time_namespace_on_another_host_is_aligned_from_the_messages() {
    child_role("pong", common::answer_pings);
    child_role("ping", || {
        let dir_b = std::env::var_os("PONG_DIR").unwrap();
        let mut child =
            common::in_time_namespace(ALIGNED, "pong", NS_OFFSET_S as u64, &dir_b, "host-b")
                .env("MPPROF_TEST_REALTIME_SKEW_NS", SKEW_NS.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        ping_side(to, from);
        assert!(child.wait().unwrap().success());
    });
    if !time_namespaces_work() {
        eprintln!("SKIPPED: `unshare -T` is not permitted here (needs root and time namespaces); the alignment is not tested");
        return;
    }
    let (_a, _b, s) = record_two_hosts(ALIGNED, "ping");
    assert_eq!(s.processes.len(), 2);
    let al = &s.alignment;
    assert_eq!(al.domains.len(), 2, "{al:#?}");
    let d = &al.domains[1];
    assert!(d.domain.starts_with("host-b/"), "{al:#?}");
    assert_eq!(d.quality, Quality::TwoSided);
    let truth = -NS_OFFSET_S * 1_000_000_000;
    let (lo, hi) = (d.lower_ns.unwrap(), d.upper_ns.unwrap());
    assert!(
        lo <= truth && truth <= hi,
        "the truth {truth} lies in [{lo}, {hi}]"
    );
    let half_width = (hi - lo) / 2;
    assert!((d.offset_ns - truth).abs() <= half_width);
    assert!(
        hi - lo < 2_000_000,
        "bound width {} ns: loopback latency should bound it tightly",
        hi - lo
    );
    assert!(
        (d.realtime_offset_ns - truth - SKEW_NS).abs() < 1_000_000,
        "the REALTIME guess is off by the skew"
    );
    assert_eq!(al.cross_flows, 2 * ROUNDS as u64);
    assert!(
        al.violations_before > 0,
        "the skewed REALTIME guess alone puts receives before sends"
    );
    assert_eq!(al.violations_after, 0);
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(h.causality_violations, 0);
    assert_eq!(h.flows_matched, 2 * ROUNDS as u64);
    eprintln!(
        "offset error {} ns, uncertainty ±{half_width} ns over {} messages; violations {} -> 0",
        d.offset_ns - truth,
        d.messages,
        al.violations_before
    );
}

#[mpprof::instrument]
fn relay(next: Option<&str>) {
    let mut out: Option<(std::process::Child, std::process::ChildStdin)> = next.map(|dir| {
        let mut c = common::in_time_namespace(ONE_WAY, "sink", 1000, dir.as_ref(), "host-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let i = c.stdin.take().unwrap();
        (c, i)
    });
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let Some(tok) = line.strip_prefix("msg ") else {
            break;
        };
        flow::recv(tok.parse().unwrap(), "msg");
        if let Some((_, to)) = &mut out {
            writeln!(to, "msg {}", flow::send("msg")).unwrap();
        }
    }
    if let Some((mut c, to)) = out {
        drop(to);
        assert!(c.wait().unwrap().success());
    }
}

#[test]
fn one_way_messages_give_an_honest_one_sided_bound() {
    child_role("sink", || relay(None));
    child_role("middle", || {
        relay(Some(&std::env::var("SINK_DIR").unwrap()))
    });
    child_role("source", || {
        let middle = std::env::var_os("MIDDLE_DIR").unwrap();
        let mut c = common::in_time_namespace(ONE_WAY, "middle", 5000, &middle, "host-b")
            .env("MPPROF_TEST_REALTIME_SKEW_NS", "-3000000")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut to = c.stdin.take().unwrap();
        for _ in 0..200 {
            writeln!(to, "msg {}", flow::send("msg")).unwrap();
        }
        drop(to);
        assert!(c.wait().unwrap().success());
    });
    if !time_namespaces_work() {
        eprintln!(
            "SKIPPED: `unshare -T` is not permitted here; the one-sided alignment is not tested"
        );
        return;
    }
    let (a, b, c) = (session_dir(), session_dir(), session_dir());
    let st = common::self_command(
        "one_way_messages_give_an_honest_one_sided_bound",
        "source",
        a.path(),
    )
    .env("MIDDLE_DIR", b.path())
    .env("SINK_DIR", c.path())
    .env("MPPROF_HOST_ID", "host-a")
    .status()
    .unwrap();
    assert!(st.success());
    let s = Session::open(&[a.path(), b.path(), c.path()]).unwrap();
    let al = &s.alignment;
    assert_eq!(al.domains.len(), 3, "{al:#?}");
    for d in &al.domains[1..] {
        assert_eq!(d.quality, Quality::OneSided, "{al:#?}");
        // Messages only flow into each later domain, so only a lower bound
        // on its offset exists (they cannot arrive before they left); the
        // chosen offset respects it.
        assert!(
            d.upper_ns.is_none() && d.offset_ns >= d.lower_ns.unwrap(),
            "{d:#?}"
        );
    }
    // Host b's monotonic clock is 5000 s ahead: its true offset is -5000 s,
    // which must satisfy the bound.
    let b_dom = &al.domains[1];
    assert!(b_dom.domain.starts_with("host-b/"));
    assert!(-5_000_000_000_000 >= b_dom.lower_ns.unwrap());
    assert_eq!(al.violations_after, 0);
    assert_eq!(al.cross_flows, 400);
}

const DRIFT_PPM: f64 = 300.0;

#[mpprof::instrument]
fn slow_ping_side(mut to: impl Write, from: impl BufRead) {
    let mut lines = from.lines();
    let start = std::time::Instant::now();
    // About 1.5 s of round trips, spread out, so a drift of 300 ppm (450 us
    // by the end) dwarfs the loopback latency.
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        let tok = flow::send("ping");
        writeln!(to, "ping {tok}").unwrap();
        to.flush().unwrap();
        let line = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.starts_with("pong "))
            .unwrap();
        flow::recv(line["pong ".len()..].parse().unwrap(), "pong");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    writeln!(to, "bye").unwrap();
}

#[test]
fn a_drifting_clock_is_corrected_from_messages_both_ways() {
    child_role("pong", common::answer_pings);
    child_role("drift-ping", || {
        let pong = std::env::var_os("PONG_DIR").unwrap();
        let mut child = common::in_time_namespace(DRIFTING, "pong", 1000, &pong, "host-drift")
            .env("MPPROF_TEST_MONO_DRIFT_PPM", DRIFT_PPM.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        slow_ping_side(to, from);
        assert!(child.wait().unwrap().success());
    });
    if !time_namespaces_work() {
        eprintln!("SKIPPED: `unshare -T` is not permitted here; drift estimation is not tested");
        return;
    }
    let (_a, _b, s) = record_two_hosts(DRIFTING, "drift-ping");
    let al = &s.alignment;
    let d = &al.domains[1];
    assert!(d.domain.starts_with("host-drift/"), "{al:#?}");
    // The pong side's clock gains 300 ppm: its correction is about -300 ppm.
    assert!(
        (d.drift_ppm + DRIFT_PPM).abs() < 15.0,
        "estimated drift {} ppm: {al:#?}",
        d.drift_ppm
    );
    assert_eq!(d.quality, Quality::TwoSided);
    assert_eq!(al.violations_after, 0, "{al:#?}");
    let h = mpprof_merge::analysis::check::check(&s);
    assert_eq!(h.causality_violations, 0);
    eprintln!(
        "drift {:+.1} ppm (truth {:+.1}), {} messages, bound width {} ns, violations {} -> 0",
        d.drift_ppm,
        -DRIFT_PPM,
        d.messages,
        d.upper_ns.unwrap() - d.lower_ns.unwrap(),
        al.violations_before
    );
}
