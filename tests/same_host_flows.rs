//! Same host, many processes: 8 processes play ping-pong over pipes, more
//! than 10,000 flows in all, and after the merge no message is received
//! before it was sent (each process maps its own TSC to the shared
//! CLOCK_MONOTONIC from its anchors; no cross-domain correction is needed
//! or made).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{child_role, ROLE};
use mpprof::flow;

const PEERS: usize = 7;
const ROUNDS: usize = 800;

#[mpprof::instrument]
fn play(peers: usize) {
    let exe = std::env::current_exe().unwrap();
    let mut kids: Vec<_> = (0..peers)
        .map(|_| {
            let mut c = mpprof::spawn(
                Command::new(&exe)
                    .args([
                        "eight_processes_ping_pong_without_causality_violations",
                        "--exact",
                    ])
                    .env(ROLE, "answer")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped()),
            )
            .unwrap();
            let to = c.stdin.take().unwrap();
            let from = BufReader::new(c.stdout.take().unwrap()).lines();
            (c, to, from)
        })
        .collect();
    for _ in 0..ROUNDS {
        for (_, to, from) in kids.iter_mut() {
            writeln!(to, "ping {}", flow::send("ping")).unwrap();
            to.flush().unwrap();
            // Skip what the child's test harness prints to stdout.
            let line = from
                .by_ref()
                .map(Result::unwrap)
                .find(|l| l.starts_with("pong "))
                .unwrap();
            flow::recv(line["pong ".len()..].parse().unwrap(), "pong");
        }
    }
    for (mut c, to, _) in kids.drain(..) {
        drop(to);
        assert!(c.wait().unwrap().success());
    }
}

#[test]
fn eight_processes_ping_pong_without_causality_violations() {
    child_role("answer", common::answer_pings);
    child_role("play", || play(PEERS));
    let (_dir, s) = common::record(
        "eight_processes_ping_pong_without_causality_violations",
        "play",
    );
    assert_eq!(s.processes.len(), PEERS + 1);
    assert_eq!(s.alignment.domains.len(), 1, "one host, one clock domain");
    let h = mpprof_merge::analysis::check::check(&s);
    let expected = (2 * PEERS * ROUNDS + PEERS) as u64; // pings, pongs, spawns
    assert_eq!(h.flows_matched, expected);
    assert!(h.flows_matched >= 10_000);
    assert_eq!(h.causality_violations, 0);
    assert_eq!(h.flows_unmatched_in + h.flows_unmatched_out, 0);
    eprintln!(
        "{} flows between {} processes, 0 causality violations",
        h.flows_matched,
        PEERS + 1
    );
}
