//! Helpers shared by the multi-process tests: run this test binary again as
//! a child in a given role, and merge what it recorded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mpprof_merge::{Event, EventKind, Session};

/// Environment variable that tells a re-executed test binary which role to play.
pub const ROLE: &str = "MPPROF_TEST_ROLE";

/// If this process was started as a child in some role, runs `f` for the
/// matching role and exits; otherwise returns.
pub fn child_role(role: &str, f: impl FnOnce()) {
    if std::env::var(ROLE).as_deref() == Ok(role) {
        f();
        std::process::exit(0);
    }
}

/// A command that re-runs the current test binary as `role`, recording
/// into `dir`. `test` is the name of the test function that hosts the role.
pub fn self_command(test: &str, role: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("MPPROF_DIR", dir)
        .env_remove("MPPROF")
        .stdin(Stdio::null());
    c
}

/// A fresh session directory (mode 0700, as the recorder demands).
pub fn session_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mpprof-test-")
        .tempdir()
        .expect("tempdir")
}

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

/// All merged events of a session.
pub fn events(s: &Session) -> Vec<Event> {
    s.events().collect()
}

/// Name of the callsite of an event, if it has one.
pub fn site_name(s: &Session, e: &Event) -> Option<String> {
    let site = match e.kind {
        EventKind::Enter { site }
        | EventKind::Exit { site, .. }
        | EventKind::Instant { site }
        | EventKind::Counter { site, .. }
        | EventKind::FlowOut { site, .. }
        | EventKind::FlowIn { site, .. }
        | EventKind::AsyncBegin { site, .. }
        | EventKind::AsyncEnd { site, .. } => site,
        EventKind::Lost { .. } => return None,
    };
    Some(s.processes[e.proc].site_name(site).into_owned())
}

/// The enter/exit sequence of one lane as `+name`/`-name` strings.
pub fn span_sequence(s: &Session, proc: usize, lane: u32) -> Vec<String> {
    s.events()
        .filter(|e| e.proc == proc && e.lane == lane)
        .filter_map(|e| match e.kind {
            EventKind::Enter { .. } => Some(format!("+{}", site_name(s, &e)?)),
            EventKind::Exit { .. } => Some(format!("-{}", site_name(s, &e)?)),
            _ => None,
        })
        .collect()
}
