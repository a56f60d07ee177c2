//! The Perfetto protobuf output, decoded by `protoc` against a subset of
//! Perfetto's own protos (tests/data/perfetto_subset.proto: upstream's
//! message names and field numbers), so the bytes are checked by a
//! protobuf implementation that is not ours.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::{bin, golden_session};

/// `protoc --decode=perfetto.protos.Trace` of `bytes`, or `None` (after a
/// SKIPPED line) when protoc is not installed.
fn protoc_decode(bytes: &[u8]) -> Option<String> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let child = Command::new("protoc")
        .arg(format!("--proto_path={}", data.display()))
        .arg("--decode=perfetto.protos.Trace")
        .arg("perfetto_subset.proto")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: protoc is not available ({e}); install protobuf-compiler to run this test");
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "protoc --decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

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
    // protoc decodes every byte with Perfetto's field numbers; an unknown
    // or mistyped field would show as a bare number.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())),
        "fields outside the subset: {text}"
    );
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
