//! Tests on real processes: the test binary runs itself again as a child
//! in a role (`child_role`, `self_command`), recording into a fresh
//! session directory, and the test merges what it recorded.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use mpprof_merge::{Event, EventKind, Session};

/// Runs `c` to its end and checks that it succeeded (its stderr in the
/// message if not); its output.
pub fn output_ok(c: &mut Command) -> Output {
    let out = c.output().expect("run the command");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `check`'s report on `s` and its text, as `mpprof-merge check` prints it.
pub fn check_text(s: &Session) -> (mpprof_merge::analysis::check::Health, String) {
    let h = mpprof_merge::analysis::check::check(s);
    let mut text = Vec::new();
    mpprof_merge::write::check::write_text(&h, &mut text).expect("write into memory");
    (h, String::from_utf8(text).expect("the report is UTF-8"))
}

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
        EventKind::Lost { .. } | EventKind::Io { .. } => return None,
    };
    Some(s.processes[e.proc].site_name(site).into_owned())
}

/// The session written as Chrome JSON and parsed back: its `traceEvents`.
pub fn chrome_events(s: &Session) -> Vec<serde_json::Value> {
    let mut json = Vec::new();
    mpprof_merge::write::chrome::write(s, &mut json).expect("write Chrome JSON");
    let mut v: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
    match v["traceEvents"].take() {
        serde_json::Value::Array(events) => events,
        other => panic!("traceEvents is not an array: {other}"),
    }
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

/// Runs `role` of the test `test` in a child recording into a fresh
/// session directory, checks it exited successfully, and opens the
/// session. Keep the directory alive as long as the session is used.
pub fn record(test: &str, role: &str) -> (tempfile::TempDir, Session) {
    let dir = session_dir();
    let st = self_command(test, role, dir.path())
        .status()
        .expect("run the child");
    assert!(st.success(), "child {role} of {test} failed: {st}");
    let s = Session::open(&[dir.path()]).expect("open the session");
    (dir, s)
}

/// A future that is pending on its first poll and ready on the second.
pub struct YieldOnce(pub bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

/// This test binary again, as `role` of `test`, in a new time namespace
/// whose CLOCK_MONOTONIC is `offset_s` seconds ahead (`unshare -T`, root
/// only), recording into `dir` as host `host`.
pub fn in_time_namespace(
    test: &str,
    role: &str,
    offset_s: u64,
    dir: &std::ffi::OsStr,
    host: &str,
) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-T", "--monotonic", &offset_s.to_string()])
        .arg(std::env::current_exe().expect("test binary path"))
        .args([test, "--exact", "--nocapture"])
        .env(ROLE, role)
        .env("MPPROF_DIR", dir)
        .env("MPPROF_HOST_ID", host);
    c
}

/// A pipe: its read and write ends as files.
pub fn pipe() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors, which the files own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both are fresh descriptors owned by no one else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}
