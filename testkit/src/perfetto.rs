//! A tiny reader for the traces `mpprof_merge::write::perfetto::write` produces, for tests and
//! debugging: it walks the protobuf fields, resolves interned names on the
//! sequence and returns the tracks and track events. It checks what the
//! writer promises (every packet on one sequence, incremental state cleared
//! by the first packet, interned names defined before use and never
//! redefined) and fails on malformed input. It is not a general Perfetto
//! parser: fields it does not know are skipped.

use std::collections::HashMap;
use std::fmt;

use mpprof_merge::write::perfetto::field::{
    self, annotation as da, event as te, interned, packet as pk, track as td,
};
use mpprof_merge::write::perfetto::wire::{
    I32 as WT_I32, I64 as WT_I64, LEN as WT_LEN, VARINT as WT_VARINT,
};

/// A malformed trace, or one that breaks the writer's promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// The value of one field, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (fixed64, double).
    I64(u64),
    /// Wire type 2 (strings, bytes, messages, packed fields).
    Len(&'a [u8]),
    /// Wire type 5 (fixed32, float).
    I32(u32),
}

impl<'a> Value<'a> {
    fn uint(self, what: &str) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(v) => Ok(v),
            other => err(format!("{what}: expected a varint, got {other:?}")),
        }
    }

    fn bytes(self, what: &str) -> Result<&'a [u8], DecodeError> {
        match self {
            Value::Len(b) => Ok(b),
            other => err(format!("{what}: expected bytes, got {other:?}")),
        }
    }

    fn string(self, what: &str) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(what)?.to_vec())
            .map_err(|_| DecodeError(format!("{what}: not UTF-8")))
    }
}

/// The fields of one message, in order.
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

/// Iterator of [`fields`].
pub struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return err("truncated varint");
            };
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return err(format!(
                "field of {n} bytes, {} left in the message",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let r = (|| {
            let key = self.varint()?;
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u8);
            if field == 0 {
                return err("field number 0");
            }
            let v = match wire {
                WT_VARINT => Value::Varint(self.varint()?),
                WT_I64 => {
                    let b = self.take(8)?;
                    Value::I64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
                }
                WT_LEN => {
                    let n = self.varint()?;
                    let n = usize::try_from(n)
                        .map_err(|_| DecodeError(format!("field {field}: length {n}")))?;
                    Value::Len(self.take(n)?)
                }
                WT_I32 => {
                    let b = self.take(4)?;
                    Value::I32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
                }
                w => return err(format!("field {field}: unsupported wire type {w}")),
            };
            Ok((field, v))
        })();
        if r.is_err() {
            self.buf = &[];
        }
        Some(r)
    }
}

/// A track of the trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Its uuid.
    pub uuid: u64,
    /// Parent track.
    pub parent_uuid: Option<u64>,
    /// `TrackDescriptor.name` (counter tracks).
    pub name: Option<String>,
    /// Pid of a process or thread track.
    pub pid: Option<i32>,
    /// Tid of a thread track.
    pub tid: Option<i32>,
    /// Name of a process track.
    pub process_name: Option<String>,
    /// Name of a thread track.
    pub thread_name: Option<String>,
    /// A counter track.
    pub counter: bool,
}

/// A track event, its name resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackEvent {
    /// `TracePacket.timestamp`.
    pub ts: u64,
    /// `TrackEvent.type` (see [`field::event`]).
    pub kind: u64,
    /// Its track.
    pub track_uuid: u64,
    /// Its name (interned or not).
    pub name: Option<String>,
    /// Its categories.
    pub categories: Vec<String>,
    /// Counter value (integer or double).
    pub counter: Option<f64>,
    /// Outgoing flows.
    pub flow_ids: Vec<u64>,
    /// Flows ending here.
    pub terminating_flow_ids: Vec<u64>,
    /// Debug annotations, values as text.
    pub annotations: Vec<(String, String)>,
}

/// What [`trace`] read: tracks and events in file order.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Track descriptors.
    pub tracks: Vec<Track>,
    /// Track events.
    pub events: Vec<TrackEvent>,
}

/// Reads a whole trace.
pub fn trace(bytes: &[u8]) -> Result<Trace, DecodeError> {
    let mut t = Trace::default();
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut seq = None;
    for f in fields(bytes) {
        let (num, v) = f?;
        if num != field::TRACE_PACKET {
            return err(format!("Trace field {num}: only packets (1) expected"));
        }
        let mut ts = None;
        let mut flags = 0;
        let mut this_seq = None;
        let mut event = None;
        for f in fields(v.bytes("packet")?) {
            let (num, v) = f?;
            match num {
                pk::TIMESTAMP => ts = Some(v.uint("timestamp")?),
                pk::TRUSTED_PACKET_SEQUENCE_ID => this_seq = Some(v.uint("sequence id")?),
                pk::SEQUENCE_FLAGS => flags = v.uint("sequence_flags")?,
                pk::INTERNED_DATA => {
                    for f in fields(v.bytes("interned_data")?) {
                        let (num, v) = f?;
                        if num != interned::EVENT_NAMES {
                            continue;
                        }
                        let (mut iid, mut name) = (0, None);
                        for f in fields(v.bytes("event_names")?) {
                            match f? {
                                (interned::IID, v) => iid = v.uint("iid")?,
                                (interned::NAME, v) => name = Some(v.string("name")?),
                                _ => {}
                            }
                        }
                        let name = name.unwrap_or_default();
                        if iid == 0 {
                            return err(format!("interned name {name:?} with iid 0"));
                        }
                        if let Some(old) = names.insert(iid, name.clone()) {
                            if old != name {
                                return err(format!("iid {iid} redefined: {old:?} then {name:?}"));
                            }
                        }
                    }
                }
                pk::TRACK_DESCRIPTOR => t.tracks.push(track(v.bytes("track_descriptor")?)?),
                pk::TRACK_EVENT => event = Some(v.bytes("track_event")?),
                _ => {}
            }
        }
        match (seq, this_seq) {
            (_, None) => return err("packet without trusted_packet_sequence_id"),
            (None, Some(s)) => {
                if flags & pk::SEQ_INCREMENTAL_STATE_CLEARED == 0 {
                    return err("first packet does not clear the incremental state");
                }
                seq = Some(s);
            }
            (Some(a), Some(b)) if a != b => {
                return err(format!("packets on sequences {a} and {b}"))
            }
            _ => {}
        }
        if let Some(b) = event {
            let Some(ts) = ts else {
                return err("track event without a timestamp");
            };
            t.events.push(track_event(b, ts, &names)?);
        }
    }
    Ok(t)
}

fn track(b: &[u8]) -> Result<Track, DecodeError> {
    let mut t = Track::default();
    for f in fields(b) {
        match f? {
            (td::UUID, v) => t.uuid = v.uint("uuid")?,
            (td::PARENT_UUID, v) => t.parent_uuid = Some(v.uint("parent_uuid")?),
            (td::NAME, v) => t.name = Some(v.string("track name")?),
            (td::COUNTER, _) => t.counter = true,
            (td::PROCESS, v) => {
                for f in fields(v.bytes("process")?) {
                    match f? {
                        (field::process::PID, v) => t.pid = Some(v.uint("pid")? as i32),
                        (field::process::PROCESS_NAME, v) => {
                            t.process_name = Some(v.string("process_name")?)
                        }
                        _ => {}
                    }
                }
            }
            (td::THREAD, v) => {
                for f in fields(v.bytes("thread")?) {
                    match f? {
                        (field::thread::PID, v) => t.pid = Some(v.uint("pid")? as i32),
                        (field::thread::TID, v) => t.tid = Some(v.uint("tid")? as i32),
                        (field::thread::THREAD_NAME, v) => {
                            t.thread_name = Some(v.string("thread_name")?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if t.uuid == 0 {
        return err("track descriptor without uuid");
    }
    Ok(t)
}

fn fixed64s(v: Value<'_>, out: &mut Vec<u64>) -> Result<(), DecodeError> {
    match v {
        Value::I64(x) => out.push(x),
        Value::Len(b) if b.len() % 8 == 0 => out.extend(
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
        ),
        other => return err(format!("flow ids: expected fixed64, got {other:?}")),
    }
    Ok(())
}

fn track_event(b: &[u8], ts: u64, names: &HashMap<u64, String>) -> Result<TrackEvent, DecodeError> {
    let mut e = TrackEvent {
        ts,
        ..TrackEvent::default()
    };
    for f in fields(b) {
        match f? {
            (te::TYPE, v) => e.kind = v.uint("type")?,
            (te::TRACK_UUID, v) => e.track_uuid = v.uint("track_uuid")?,
            (te::NAME, v) => e.name = Some(v.string("name")?),
            (te::NAME_IID, v) => {
                let iid = v.uint("name_iid")?;
                match names.get(&iid) {
                    Some(n) => e.name = Some(n.clone()),
                    None => return err(format!("name_iid {iid} used before it is defined")),
                }
            }
            (te::CATEGORIES, v) => e.categories.push(v.string("category")?),
            (te::COUNTER_VALUE, v) => e.counter = Some(v.uint("counter_value")? as i64 as f64),
            (te::DOUBLE_COUNTER_VALUE, Value::I64(bits)) => e.counter = Some(f64::from_bits(bits)),
            (te::FLOW_IDS, v) => fixed64s(v, &mut e.flow_ids)?,
            (te::TERMINATING_FLOW_IDS, v) => fixed64s(v, &mut e.terminating_flow_ids)?,
            (te::DEBUG_ANNOTATIONS, v) => {
                let (mut name, mut value) = (String::new(), String::new());
                for f in fields(v.bytes("debug annotation")?) {
                    match f? {
                        (da::NAME, v) => name = v.string("annotation name")?,
                        (da::STRING_VALUE, v) => value = v.string("annotation value")?,
                        (da::UINT_VALUE, v) => value = v.uint("uint_value")?.to_string(),
                        (da::BOOL_VALUE, v) => value = (v.uint("bool_value")? != 0).to_string(),
                        _ => {}
                    }
                }
                e.annotations.push((name, value));
            }
            _ => {}
        }
    }
    Ok(e)
}

/// `protoc --decode=perfetto.protos.Trace` of `bytes` against a subset of
/// Perfetto's own protos (`mpprof-merge/tests/data/perfetto_subset.proto`:
/// upstream's message names and field numbers), so the bytes are checked
/// by a protobuf implementation that is not ours; `None` (after a SKIPPED
/// line) when protoc is not installed.
pub fn protoc_decode(bytes: &[u8]) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mpprof-merge/tests/data");
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
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("protoc runs");
    feeder
        .join()
        .expect("the feeder")
        .expect("protoc reads its input");
    assert!(
        out.status.success(),
        "protoc --decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("protoc prints UTF-8"))
}

/// protoc decodes every byte with Perfetto's field numbers; an unknown or
/// mistyped field would show as a bare number.
pub fn assert_known_fields(text: &str) {
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())),
        "fields outside the subset: {text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field's tag and a varint, for the hand-made messages below.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn uint(field: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(field) << 3, out);
        varint(v, out);
    }

    fn msg(field: u32, body: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    #[test]
    fn fields_decode_every_wire_type_and_fail_on_truncation() {
        let mut b = vec![0x08, 0x00, 0x10, 0xac, 0x02, 0x29];
        b.extend([8, 7, 6, 5, 4, 3, 2, 1]);
        b.extend([0x32, 0x03, 0x3a, 0x01, b'x', 0x3d, 1, 0, 0, 0]);
        let got: Vec<_> = fields(&b).map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                (1, Value::Varint(0)),
                (2, Value::Varint(300)),
                (5, Value::I64(0x0102_0304_0506_0708)),
                (6, Value::Len(&[0x3a, 0x01, b'x'])),
                (7, Value::I32(1)),
            ]
        );
        let Value::Len(inner) = got[3].1 else {
            panic!("nested message")
        };
        let inner: Vec<_> = fields(inner).map(Result::unwrap).collect();
        assert_eq!(inner, [(7, Value::Len(b"x"))]);
        for cut in 1..b.len() {
            let prefix = &b[..cut];
            // A prefix ending between fields is a shorter message; one
            // ending inside a field is an error, never a panic.
            let _ = fields(prefix).collect::<Vec<_>>();
        }
        assert!(fields(&b[..b.len() - 3]).any(|f| f.is_err()));
    }

    #[test]
    fn the_decoder_rejects_what_the_writer_never_writes() {
        // An interned name used before it is defined.
        let mut event = Vec::new();
        uint(te::NAME_IID, 7, &mut event);
        let mut packet = Vec::new();
        uint(pk::TIMESTAMP, 1, &mut packet);
        uint(pk::TRUSTED_PACKET_SEQUENCE_ID, 1, &mut packet);
        uint(pk::SEQUENCE_FLAGS, 1, &mut packet);
        msg(pk::TRACK_EVENT, &event, &mut packet);
        let mut t = Vec::new();
        msg(field::TRACE_PACKET, &packet, &mut t);
        assert!(trace(&t).is_err());
        // A first packet that does not clear the incremental state.
        let mut packet = Vec::new();
        uint(pk::TRUSTED_PACKET_SEQUENCE_ID, 1, &mut packet);
        let mut t = Vec::new();
        msg(field::TRACE_PACKET, &packet, &mut t);
        assert!(trace(&t).is_err());
    }
}
