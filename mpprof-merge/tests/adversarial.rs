//! The merge pointed at hostile inputs: things named like buffer files that
//! are not files (a FIFO, whose open would wait for a writer forever, a
//! socket, a device, a directory). The real `mpprof-merge` binary runs
//! with a deadline: a hang is a failure, not a stuck test suite.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, golden_session};

/// Runs the binary with `args`, killing it (and failing) after 60 s.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mpprof-merge {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn things_named_like_buffer_files_that_are_not_files_are_ignored_not_waited_on() {
    let s = golden_session();
    let dir = s.path();
    let fifo = dir.join("fifo.mpb");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path; makes a FIFO.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("socket.mpb")).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.join("device.mpb")).unwrap();
    std::fs::create_dir(dir.join("directory.mpb")).unwrap();
    let trace = dir.join("t.json");
    for args in [
        vec![dir.as_os_str(), "-o".as_ref(), trace.as_os_str()],
        vec!["check".as_ref(), dir.as_os_str()],
        vec!["summary".as_ref(), dir.as_os_str()],
    ] {
        let out = run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        // Said once each, by the command's report or as warnings.
        let said = format!("{stdout}{stderr}");
        for (name, kind) in [
            ("fifo.mpb", "FIFO"),
            ("socket.mpb", "socket"),
            ("device.mpb", "character device"),
            ("directory.mpb", "directory"),
        ] {
            let lines: Vec<&str> = said.lines().filter(|l| l.contains(name)).collect();
            assert_eq!(lines.len(), 1, "{args:?}: {said}");
            assert!(
                lines[0].contains(kind) && lines[0].contains("not a regular file"),
                "{}",
                lines[0]
            );
        }
    }
    let json = std::fs::read_to_string(&trace).unwrap();
    assert!(
        json.contains("golden (pid 3450)"),
        "the real file is merged"
    );
    // Given by name, a FIFO is refused at once too.
    let out = run(&["check".as_ref(), fifo.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FIFO"), "{stderr}");
}
