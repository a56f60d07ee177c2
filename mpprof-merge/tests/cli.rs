//! The command line as a user meets it: formats, errors, exit codes.

mod common;

use common::{bin, golden_session};

#[test]
fn every_format_is_written() {
    let s = golden_session();
    for (file, check) in [
        ("t.json", "\"traceEvents\""),
        ("t.folded", "golden;golden_outer;inner "),
        ("t.svg", "<svg"),
        ("t.txt", "ncalls  tottime  percall  cumtime  percall"),
        // Perfetto protobuf: the process name is a length-delimited string.
        ("t.pftrace", "golden (pid 3450)"),
        // The Firefox Profiler's processed format.
        ("t.fxprof.json", "\"preprocessedProfileVersion\""),
        // OTLP protobuf: the span names are length-delimited strings.
        ("t.otlp.pb", "golden_outer"),
    ] {
        let out = s.path().join(file);
        let st = bin().arg(s.path()).arg("-o").arg(&out).output().unwrap();
        assert!(
            st.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let text = String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned();
        assert!(text.contains(check), "{file}: {text}");
    }
    let st = bin().args(["summary"]).arg(s.path()).output().unwrap();
    assert!(st.status.success());
    assert!(String::from_utf8_lossy(&st.stdout).contains("golden::golden_outer"));
    // An OTLP endpoint that refuses: retried, then a clear error.
    let st = bin()
        .arg(s.path())
        .args(["-o", "-", "--otlp", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("http://127.0.0.1:1") && err.contains("after 5 attempts"),
        "{err}"
    );
    let st = bin()
        .arg(s.path())
        .args(["-o", "-", "--otlp", "https://example.invalid"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&st.stderr).contains("only http:// OTLP endpoints"));
    // --samples applies to flamegraphs only, and says so.
    let st = bin()
        .arg(s.path())
        .args(["-o", "-", "--samples"])
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("--samples applies to folded and SVG output")
    );
}

#[test]
fn check_reports_health_and_sets_the_exit_status() {
    let s = golden_session();
    let st = bin().arg("check").arg(s.path()).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{text}");
    assert!(
        text.contains("clean exit") && text.contains("status: ok"),
        "{text}"
    );

    // A damaged file makes `check` fail and name it.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("x.mpb"), b"MPPROF\r\n garbage").unwrap();
    std::fs::copy(s.path().join("golden.mpb"), bad.path().join("golden.mpb")).unwrap();
    let st = bin().arg("check").arg(bad.path()).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert_eq!(st.status.code(), Some(1), "{text}");
    assert!(
        text.contains("UNREADABLE") && text.contains("x.mpb"),
        "{text}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_no_output_file() {
    let s = golden_session();
    // Unknown flag: clap's usage error.
    let st = bin().arg(s.path()).arg("--frobnicate").output().unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("--frobnicate"));
    // Missing directory.
    let st = bin()
        .arg("/nonexistent/session")
        .arg("-o")
        .arg(s.path().join("t.json"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).starts_with("Error: "));
    // Unknown extension: refused before any file is made.
    let out = s.path().join("t.xyz");
    let st = bin().arg(s.path()).arg("-o").arg(&out).output().unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("give --format"));
    assert!(!out.exists(), "t.xyz must not be created");
    // An unwritable output path.
    let st = bin()
        .arg(s.path())
        .arg("-o")
        .arg("/nonexistent/dir/t.json")
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("cannot create /nonexistent/dir/t.json"));
}

/// A full disk (`/dev/full`) names the output and says it is incomplete;
/// a reader that goes away (`| head`) ends the merge quietly; an error's
/// cause is said once.
#[test]
fn full_disks_closed_pipes_and_causes_are_reported_once() {
    use std::process::Stdio;

    let s = golden_session();
    let st = bin()
        .arg(s.path())
        .args(["--format", "chrome", "-o", "/dev/full"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("cannot write /dev/full (what was written is incomplete)")
            && err.contains("No space left on device"),
        "{err}"
    );
    for args in [&["summary"][..], &["check"][..]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let st = bin()
            .args(args)
            .arg(s.path())
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(st.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&st.stderr);
        assert!(
            err.contains("to standard output: No space left"),
            "{args:?}: {err}"
        );
    }

    // Chrome JSON on stdout, whose reader has gone before it is written.
    let mut child = bin()
        .arg(s.path())
        .args(["-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let st = bin().arg("/nonexistent/session").output().unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// `open --no-browser`: prints the ui.perfetto.dev URL, serves the trace
/// once on 127.0.0.1 with the CORS header the UI needs (a session merged
/// to Perfetto protobuf, a trace file as it is), answers anything else
/// with 404, and exits once the trace is fetched.
#[test]
fn open_serves_the_trace_once_over_loopback() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::Stdio;

    let fetch = |port: u16, path: &str| -> (String, Vec<u8>) {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://ui.perfetto.dev\r\n\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&all[..split]).into_owned(),
            all[split + 4..].to_vec(),
        )
    };
    let s = golden_session();
    let trace = s.path().join("t.json");
    assert!(bin()
        .arg(s.path())
        .arg("-o")
        .arg(&trace)
        .status()
        .unwrap()
        .success());
    // The session (merged to Perfetto), then a trace file (as it is).
    for (input, name) in [
        (s.path().to_owned(), "trace.pftrace"),
        (trace.clone(), "t.json"),
    ] {
        let mut child = bin()
            .args(["open", "--no-browser", "--port", "0", "--timeout", "60"])
            .arg(&input)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut url = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut url)
            .unwrap();
        let prefix = "https://ui.perfetto.dev/#!/?url=http://127.0.0.1:";
        let rest = url
            .trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{url}"));
        let (port, path) = rest.split_once('/').unwrap();
        assert_eq!(path, name);
        let port: u16 = port.parse().unwrap();
        let (head, _) = fetch(port, "/favicon.ico");
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let (head, body) = fetch(port, &format!("/{name}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.contains("Access-Control-Allow-Origin: https://ui.perfetto.dev"),
            "{head}"
        );
        if name == "t.json" {
            assert_eq!(body, std::fs::read(&trace).unwrap());
        } else {
            let t = mpprof_testkit::perfetto::trace(&body).expect("a Perfetto trace");
            assert!(!t.events.is_empty());
        }
        assert!(child.wait().unwrap().success(), "it exits once served");
    }
    // Nobody fetches it: it stops after its timeout, and says so.
    let out = bin()
        .args(["open", "--no-browser", "--port", "0", "--timeout", "1"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing fetched the trace within 1 s"));
}
