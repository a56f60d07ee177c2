//! The Perfetto protobuf output, decoded by `protoc` against a subset of
//! Perfetto's own protos (tests/data/perfetto_subset.proto: upstream's
//! message names and field numbers), so the bytes are checked by a
//! protobuf implementation that is not ours.

use std::collections::HashMap;
use std::path::Path;

mod common;

use common::{bin, golden_session};
use mpprof_merge::write::perfetto::field::event as te;
use mpprof_testkit::perfetto as decode;
use mpprof_testkit::perfetto::{assert_known_fields, protoc_decode};

#[test]
fn pftrace_from_the_cli_decodes_with_protoc() {
    let s = golden_session();
    let out = s.path().join("trace.pftrace");
    let st = bin().arg(s.path()).arg("-o").arg(&out).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    // --format perfetto to stdout writes the same bytes.
    let st = bin()
        .arg(s.path())
        .args(["--format", "perfetto", "-o", "-"])
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(st.stdout, bytes);

    let Some(text) = protoc_decode(&bytes) else {
        return;
    };
    assert_known_fields(&text);
    for want in [
        "sequence_flags: 1",
        "trusted_packet_sequence_id: 1",
        // The process and thread descriptors.
        "process {\n      pid: 3450\n      process_name: \"golden (pid 3450)\"\n    }",
        "thread {\n      pid: 3450\n      tid: 3451\n      thread_name: \"golden_files_decode\"\n    }",
        // Slices, with interned names.
        "type: TYPE_SLICE_BEGIN",
        "type: TYPE_SLICE_END",
        "name: \"golden_outer\"",
        "name: \"inner\"",
        // The counter track and its values.
        "name: \"x\"",
        "counter {\n    }",
        "type: TYPE_COUNTER",
        "counter_value: 1\n",
        "counter_value: 2\n",
        "type: TYPE_INSTANT",
        "name: \"end\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(text.matches("type: TYPE_SLICE_BEGIN").count(), 3, "{text}");
    assert_eq!(text.matches("type: TYPE_SLICE_END").count(), 3, "{text}");
    assert_eq!(
        text.matches("name: \"inner\"").count(),
        1,
        "interned once: {text}"
    );
    assert_eq!(text.matches("packet {").count(), 12, "{text}");
}

fn golden() -> mpprof_merge::Session {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/v2.mpb");
    mpprof_merge::Session::open(&[p]).expect("golden file")
}

/// The golden session written as Perfetto and read back by the testkit's
/// decoder (which checks the writer's promises): one process and thread
/// track, balanced slices, counters on a counter track, interned names.
#[test]
fn golden_session_decodes_with_balanced_slices_and_counters() {
    let s = golden();
    let mut buf = Vec::new();
    let stats = mpprof_merge::write::perfetto::write(&s, &mut buf).unwrap();
    assert!(stats.events > 0);
    let t = decode::trace(&buf).unwrap();

    let procs: Vec<_> = t
        .tracks
        .iter()
        .filter(|t| t.process_name.is_some())
        .collect();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0].process_name.as_deref(), Some("golden (pid 3450)"));
    assert_eq!(procs[0].pid, Some(3450));
    let threads: Vec<_> = t.tracks.iter().filter(|t| t.tid.is_some()).collect();
    assert_eq!(threads.len(), 1);
    assert_eq!(
        (
            threads[0].pid,
            threads[0].tid,
            threads[0].thread_name.as_deref()
        ),
        (Some(3450), Some(3451), Some("golden_files_decode"))
    );
    assert_eq!(threads[0].parent_uuid, Some(procs[0].uuid));

    // Every event is on a described track; slices balance per track.
    let kinds: HashMap<u64, &decode::Track> = t.tracks.iter().map(|t| (t.uuid, t)).collect();
    assert_eq!(kinds.len(), t.tracks.len(), "track uuids are unique");
    let mut depth: HashMap<u64, i64> = HashMap::new();
    let mut last = 0;
    for e in &t.events {
        let track = kinds.get(&e.track_uuid).expect("described track");
        assert!(e.ts >= last, "time-ordered");
        last = e.ts;
        let d = depth.entry(e.track_uuid).or_default();
        match e.kind {
            te::TYPE_SLICE_BEGIN => {
                assert!(e.name.is_some());
                *d += 1
            }
            te::TYPE_SLICE_END => {
                *d -= 1;
                assert!(*d >= 0, "END without BEGIN");
            }
            te::TYPE_COUNTER => assert!(track.counter),
            te::TYPE_INSTANT => assert!(!track.counter),
            k => panic!("type {k}"),
        }
    }
    assert!(depth.values().all(|&d| d == 0), "{depth:?}");

    let begins: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == te::TYPE_SLICE_BEGIN)
        .map(|e| e.name.as_deref().unwrap())
        .collect();
    assert_eq!(begins, ["golden_outer", "inner", "inner"]);
    let counters: Vec<_> = t.events.iter().filter_map(|e| e.counter).collect();
    assert_eq!(counters, [1.0, 2.0]);
    let ctrack = t.tracks.iter().find(|t| t.counter).unwrap();
    assert_eq!(ctrack.name.as_deref(), Some("x"));
    assert_eq!(ctrack.parent_uuid, Some(procs[0].uuid));
    let instants: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.kind == te::TYPE_INSTANT)
        .map(|e| e.name.as_deref().unwrap())
        .collect();
    assert_eq!(instants, ["end"]);

    // Names are interned: "inner" is spelled once in the file.
    let n = buf.windows(5).filter(|w| w == b"inner").count();
    assert_eq!(n, 1);
}

/// Resource tracks (a recorded file with samples every 100 ms: the
/// sampler's counters, a host's) decode with protoc as counter tracks
/// under their process, and a "system" process for the host.
#[test]
fn resource_tracks_decode_with_protoc() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/resources.mpb");
    let s = mpprof_merge::Session::open(&[p]).expect("resources file");
    let mut bytes = Vec::new();
    mpprof_merge::write::perfetto::write(&s, &mut bytes).unwrap();
    let Some(text) = protoc_decode(&bytes) else {
        return;
    };
    assert_known_fields(&text);
    for want in [
        "name: \"CPU %\"",
        "name: \"RSS (MiB)\"",
        "name: \"memory used (MiB)\"",
        "process_name: \"system (",
        "type: TYPE_COUNTER",
        "double_counter_value: ",
    ] {
        assert!(text.contains(want), "missing {want:?}");
    }
    // No raw sampler counters: they are tracks, not events.
    assert!(!text.contains("mpprof: cpu.user"), "raw resource counters");
}
