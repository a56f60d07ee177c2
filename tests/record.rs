//! `mpprof-merge record -- CMD ARGS...`: a fresh session for the command,
//! its exit status forwarded, the trace written and the summary printed;
//! a program that never calls `mpprof::init()` is recorded too.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{child_role, session_dir};
use mpprof_merge::Session;

/// The `mpprof-merge` binary next to the test binary's `deps/` (built
/// here if this test target was built alone).
fn merge_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_owned();
    let p = dir.join("mpprof-merge");
    if !p.exists() {
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-p", "mpprof-merge", "--bin", "mpprof-merge"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|d| d == "release") {
            c.arg("--release");
        }
        assert!(c.status().unwrap().success());
    }
    p
}

#[mpprof::instrument]
fn recorded_without_init(x: u64) -> u64 {
    std::hint::black_box(x * 2)
}

#[test]
fn record_runs_the_command_and_forwards_its_exit_status() {
    const T: &str = "record_runs_the_command_and_forwards_its_exit_status";
    child_role("no_init", || {
        for i in 0..10 {
            recorded_without_init(i);
        }
        std::process::exit(7);
    });
    let cwd = session_dir();
    // The demo: 11 processes, exit status 0.
    let out = common::output_ok(
        Command::new(merge_bin())
            .current_dir(cwd.path())
            .args(["record", "-o", "demo.json", "--"])
            .arg(common::example("worker_pool"))
            .env_remove("MPPROF_DIR"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("== whole process tree: 11 processes =="),
        "{stdout}"
    );
    assert!(
        stdout.contains("session: ") && stdout.contains("trace:   demo.json"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cwd.path().join("demo.json")).unwrap()).unwrap();
    let procs = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter(|e| {
            e["args"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("worker_pool"))
        })
        .count();
    assert_eq!(procs, 11);

    // A program that never calls init(), exiting with 7.
    let out = Command::new(merge_bin())
        .current_dir(cwd.path())
        .args([
            "record",
            "-o",
            "no_init.json",
            "--dir",
            "sessions/no_init",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([T, "--exact", "--nocapture", "--test-threads=1"])
        .env(common::ROLE, "no_init")
        .env_remove("MPPROF_DIR")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Session::open(&[cwd.path().join("sessions/no_init")]).unwrap();
    assert_eq!(s.processes.len(), 1);
    let calls = s
        .events()
        .filter(|e| matches!(e.kind, mpprof_merge::EventKind::Enter { .. }))
        .count();
    assert_eq!(calls, 10);
    assert!(cwd.path().join("no_init.json").exists());

    // A command that records nothing: its status, a word, no empty session.
    let out = Command::new(merge_bin())
        .current_dir(cwd.path())
        .args([
            "record",
            "--dir",
            "sessions/nothing",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .env_remove("MPPROF_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recorded nothing"));
    assert!(!cwd.path().join("sessions/nothing").exists());
}
