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
    });
    if std::env::var_os("MPPROF_BLESS").is_some() {
        let dir = session_dir();
        let st = self_command("golden_files_decode", "golden", dir.path())
            .env("MPPROF_CHUNK_KB", "4")
            .env("MPPROF_BUFFER_MB", "1")
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
                mpprof_merge::EventKind::Counter { value, .. } => Some(value),
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
/// process entry of the first metadata chunk, so the committed file names
/// nothing of the machine that made it.
fn scrub(bytes: &mut [u8]) {
    common::file::rewrite_meta(bytes, |m| {
        if let mpprof::format::Meta::Process(info) = m {
            info.exe = "/golden/golden".into();
            info.argv = vec!["/golden/golden".into()];
            info.hostname = "golden-host".into();
            info.host_id = "00000000-0000-0000-0000-000000000000".into();
        }
    });
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
    let merged: Vec<i64> = s.events().map(|e| e.ts - t0).collect();
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
