//! Helpers shared by the root package's tests: `mpprof-testkit` (child
//! processes in roles, session directories, merged events, hand-made
//! buffer files, the Perfetto decoder), and what needs this package: its
//! examples and instrumented code.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub use mpprof_testkit::*;

/// Path of an example binary, built by `cargo test` next to `deps/` (when
/// only one test target was built, it is built here with the same cargo).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join("examples").join(name);
    if !p.exists() {
        let release = dir.file_name().is_some_and(|d| d == "release");
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            c.arg("--release");
        }
        let st = c.status().expect("run cargo");
        assert!(st.success(), "cargo build --example {name} failed");
    }
    assert!(p.exists(), "{} not found after building it", p.display());
    p
}

/// An example run as a user would: in a fresh working directory, with no
/// session inherited from the test's environment.
pub struct ExampleRun {
    /// The working directory (holds `trace.json` and `mpprof-out/`).
    pub cwd: tempfile::TempDir,
    /// Exit status and output.
    pub out: std::process::Output,
}

/// Runs the example `name` (see [`example`]) in a fresh directory.
pub fn run_example(name: &str) -> ExampleRun {
    let cwd = session_dir();
    let out = Command::new(example(name))
        .current_dir(cwd.path())
        .env_remove("MPPROF_DIR")
        .env_remove("MPPROF")
        .output()
        .expect("run the example");
    ExampleRun { cwd, out }
}

/// The session directory an example recorded under `cwd/mpprof-out/`.
pub fn recorded_session(cwd: &Path) -> PathBuf {
    std::fs::read_dir(cwd.join("mpprof-out"))
        .expect("mpprof-out exists")
        .next()
        .expect("one session")
        .expect("readable")
        .path()
}

/// The answering side of a ping-pong over stdin/stdout: each `ping <flow>`
/// line is received as a flow and answered with `pong <new flow>`, until a
/// line that is not a ping.
#[mpprof::instrument]
pub fn answer_pings() {
    use std::io::{BufRead, Write};
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let Some(tok) = line.strip_prefix("ping ") else {
            break;
        };
        mpprof::flow::recv(tok.parse().unwrap(), "ping");
        writeln!(out, "pong {}", mpprof::flow::send("pong")).unwrap();
        out.flush().unwrap();
    }
}

/// Spawns the current test binary as a child in `role` of test `test`
/// with `mpprof::spawn` (so it joins the session; its stdout discarded).
pub fn spawn_role(test: &str, role: &str, stdin: std::process::Stdio) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdin(stdin)
        .stdout(std::process::Stdio::null());
    mpprof::spawn(&mut c).expect("spawn the child")
}
