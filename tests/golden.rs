//! A committed buffer file per format version, decoded by today's reader.
//! When the format changes, bump `FORMAT_VERSION`, keep the old golden file
//! (the reader must still read it or reject it clearly) and add a new one:
//! `MPPROF_BLESS=1 cargo test --test golden` writes `tests/data/v<N>.mpb`.

mod common;

use std::path::PathBuf;

use common::{child_role, self_command, session_dir, span_sequence};
use mpprof::format::FORMAT_VERSION;
use mpprof_merge::Session;

#[mpprof::instrument]
fn golden_outer() {
    golden_inner(1);
    golden_inner(2);
}

#[mpprof::instrument(name = "inner")]
fn golden_inner(x: u32) -> u32 {
    mpprof::counter!("x", x);
    x
}

fn data(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/v{version}.mpb"))
}

#[test]
fn golden_files_decode() {
    child_role("golden", || {
        golden_outer();
        mpprof::event!("end");
        // From format 5, with the profiler on: stack samples, and an
        // off-CPU interval.
        if std::env::var_os("MPPROF_SAMPLE_HZ").is_some() {
            golden_spin(40);
            std::thread::sleep(std::time::Duration::from_millis(20));
            // And a traced I/O call each way on a pipe.
            use std::io::{Read, Write};
            let mut fds = [0; 2];
            // SAFETY: pipe writes two descriptors, which the files own.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: fresh descriptors owned by no one else.
            let (r, w) = unsafe {
                use std::os::fd::FromRawFd;
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            };
            let mut w = mpprof::io::Traced::new(w, "golden pipe");
            let mut r = mpprof::io::Traced::new(r, "golden pipe");
            w.write_all(b"golden").unwrap();
            let mut b = [0u8; 6];
            r.read_exact(&mut b).unwrap();
        }
    });
    if std::env::var_os("MPPROF_BLESS").is_some() {
        let dir = session_dir();
        let st = self_command("golden_files_decode", "golden", dir.path())
            .env("MPPROF_CHUNK_KB", "4")
            .env("MPPROF_BUFFER_MB", "1")
            .env("MPPROF_SAMPLE_MS", "0")
            .env("MPPROF_SAMPLE_HZ", "1000")
            .env("MPPROF_SAMPLE_STACK_KB", "4")
            .env("MPPROF_SYSCALLS", "1")
            .status()
            .unwrap();
        assert!(st.success());
        let f = mpprof_merge::read::list_session(dir.path())
            .unwrap()
            .remove(0);
        let mut bytes = std::fs::read(f).unwrap();
        scrub(&mut bytes);
        std::fs::write(data(FORMAT_VERSION), bytes).unwrap();
    }
    // Format 5's profile: samples with stacks, off-CPU time, modules.
    let s = Session::open(&[data(5)]).unwrap();
    let prof = mpprof_merge::profile::Profile::of(&s);
    let pp = prof.processes[0].as_ref().expect("the profiler's entry");
    assert_eq!(
        (pp.info.hz, pp.info.switches, pp.info.error.as_str()),
        (1000, true, "")
    );
    assert!(pp.samples.len() >= 10, "{}", pp.samples.len());
    assert!(pp
        .samples
        .iter()
        .all(|x| s.processes[0].file.stacks.contains_key(&x.stack)));
    assert!(!pp.off_cpu.is_empty());
    // Traced I/O and system calls (blessed as root, with tracefs).
    assert!(pp.info.syscalls && pp.syscalls.len() > 10, "{:?}", pp.info);
    let chans = &s.processes[0].file.channels;
    assert_eq!(chans.len(), 2);
    assert!(chans
        .values()
        .all(|c| c.label == "golden pipe" && c.capacity > 0));
    let io: Vec<_> = s
        .events()
        .filter_map(|e| match e.kind {
            mpprof_merge::EventKind::Io { call, .. } => Some(call),
            _ => None,
        })
        .collect();
    assert_eq!(io.len(), 2);
    assert!(io.iter().all(|c| c.bytes == 6 && c.errno == 0));
    assert!(s.processes[0]
        .file
        .modules
        .iter()
        .all(|m| m.path.starts_with("/golden/")));
    // Its binaries are not on this machine: frames as addresses, one
    // warning per binary, no error.
    assert!(!prof.warnings.is_empty());
    assert!(
        prof.warnings
            .iter()
            .all(|w| w.starts_with("/golden/") && w.contains("addresses")),
        "{:?}",
        prof.warnings
    );
    let frames = prof.stack(0, pp.samples[0].stack);
    assert!(!frames.is_empty());
    assert!(frames
        .iter()
        .all(|&f| prof.frames[f as usize].function.contains("+0x")));

    // The same file whose modules name a binary that is there but is not
    // the one that ran (this test, under another build id): not read.
    let mut bytes = std::fs::read(data(5)).unwrap();
    let exe = std::env::current_exe().unwrap();
    common::file::rewrite_meta(&mut bytes, |m| {
        if let mpprof::format::Meta::Module(module) = m {
            module.path = exe.to_string_lossy().into_owned();
            module.build_id = vec![0xAB; 20];
        }
    });
    let dir = session_dir();
    std::fs::write(dir.path().join("golden.mpb"), &bytes).unwrap();
    let s = Session::open(&[dir.path()]).unwrap();
    let prof = mpprof_merge::profile::Profile::of(&s);
    assert!(
        prof.warnings
            .iter()
            .any(|w| w.starts_with(&*exe.to_string_lossy())
                && w.contains("not the one that ran (its build id differs)")),
        "{:?}",
        prof.warnings
    );
    for v in 1..=FORMAT_VERSION {
        let s = Session::open(&[data(v)]).unwrap_or_else(|e| panic!("golden v{v}: {e}"));
        let p = &s.processes[0];
        assert!(
            p.file.clean && p.file.warnings.is_empty(),
            "golden v{v}: {:?}",
            p.file.warnings
        );
        let lane = *p.file.lanes.keys().next().unwrap();
        assert_eq!(
            span_sequence(&s, 0, lane),
            [
                "+golden_outer",
                "+inner",
                "-inner",
                "+inner",
                "-inner",
                "-golden_outer"
            ],
            "golden v{v}"
        );
        let counters: Vec<mpprof_merge::CounterValue> = s
            .events()
            .filter_map(|e| match e.kind {
                // The program's counter (format 5 adds queue depths).
                mpprof_merge::EventKind::Counter { value, site }
                    if s.processes[e.proc].site_name(site) == "x" =>
                {
                    Some(value)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            counters,
            [
                mpprof_merge::CounterValue::Int(1),
                mpprof_merge::CounterValue::Int(2)
            ]
        );
        let info = p.file.info.as_ref().unwrap();
        assert!(info.exe.contains("golden"));
        assert_eq!(
            p.file
                .sites
                .values()
                .filter(|x| x.path == "golden::golden_inner")
                .count(),
            1
        );
    }
}

/// Replaces the machine-specific facts (paths, host name, boot id) in the
/// process entry and the modules' paths, so the committed file names
/// nothing of the machine that made it.
fn scrub(bytes: &mut [u8]) {
    common::file::rewrite_meta(bytes, |m| match m {
        mpprof::format::Meta::Process(info) => {
            info.exe = "/golden/golden".into();
            info.argv = vec!["/golden/golden".into()];
            info.hostname = "golden-host".into();
            info.host_id = "00000000-0000-0000-0000-000000000000".into();
        }
        mpprof::format::Meta::Module(module) => {
            let name = mpprof_merge::profile::module_name(&module.path);
            module.path = format!("/golden/{name}");
        }
        _ => {}
    });
}

/// Burns `ms` of CPU time.
#[inline(never)]
fn golden_spin(ms: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut x = 1u64;
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

/// The Chrome writer's timestamps are the merged events' times, to the
/// nanosecond (microseconds with three decimals from the session's start),
/// on the committed files of every format version.
#[test]
fn chrome_timestamps_are_the_events_times() {
    let dir = data(1).parent().unwrap().to_path_buf();
    let s = Session::open(&[&dir]).unwrap();
    let mut out = Vec::new();
    mpprof_merge::write::chrome::write(&s, &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let written: Vec<f64> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| matches!(e["ph"].as_str(), Some("B" | "E" | "C" | "i")))
        .map(|e| e["ts"].as_f64().unwrap())
        .collect();
    let t0 = s.start_ns();
    // (Traced I/O calls are complete slices, `X`, at their start.)
    let merged: Vec<i64> = s
        .events()
        .filter(|e| !matches!(e.kind, mpprof_merge::EventKind::Io { .. }))
        .map(|e| e.ts - t0)
        .collect();
    assert_eq!(written.len(), merged.len());
    assert!(
        merged.iter().any(|&ns| ns % 1000 >= 256),
        "a fraction that needs more than a byte"
    );
    for (us, ns) in written.iter().zip(&merged) {
        assert!(
            (us * 1000.0 - *ns as f64).abs() < 0.5,
            "{us} us written for {ns} ns"
        );
    }
}
