//! Causality across processes: flow ids, and recording their two ends.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::format::{kind, SiteKind};
use crate::{callsite, session, thread};

/// A globally unique flow token: the sender's 64-bit random process uid and
/// a per-process sequence number. No coordination is needed to make one.
///
/// Its text form is 32 lowercase hex digits (process, then sequence), the
/// same size as a W3C trace id. Serialized as that string in human-readable
/// formats (JSON) and as two `u64` in binary ones (postcard).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowId {
    process: u64,
    seq: u64,
}

impl FlowId {
    /// Builds a flow id from its parts.
    pub const fn from_parts(process: u64, seq: u64) -> FlowId {
        FlowId { process, seq }
    }

    /// The uid of the process that made it.
    pub const fn process(&self) -> u64 {
        self.process
    }

    /// The sequence number within that process.
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// As the 16 bytes of a W3C trace id (big-endian process, then seq).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.process.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// The flow from a child's end to the parent's [`crate::wait`] for it,
    /// when `self` is the flow that spawned the child: the same id with bit
    /// 62 of the sequence number set. The parent records its end; its start
    /// is the child's last event, which the merge knows from the child's
    /// parent flow, so the child records nothing for it (and a killed child
    /// has one too).
    pub const fn child_exit(&self) -> FlowId {
        FlowId {
            process: self.process,
            seq: self.seq | 1 << 62,
        }
    }

    pub(crate) fn payload(&self) -> [u64; 2] {
        [self.process, self.seq]
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.process, self.seq)
    }
}

impl fmt::Debug for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowId({self})")
    }
}

/// Why a text flow id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a flow id is 32 hex digits, got {0:?}")]
pub struct ParseFlowIdError(String);

impl FromStr for FlowId {
    type Err = ParseFlowIdError;
    fn from_str(s: &str) -> Result<FlowId, ParseFlowIdError> {
        let err = || ParseFlowIdError(s.chars().take(40).collect());
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let process = u64::from_str_radix(&s[..16], 16).map_err(|_| err())?;
        let seq = u64::from_str_radix(&s[16..], 16).map_err(|_| err())?;
        Ok(FlowId { process, seq })
    }
}

impl Serialize for FlowId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            (self.process, self.seq).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for FlowId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FlowId, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let (process, seq) = <(u64, u64)>::deserialize(d)?;
            Ok(FlowId { process, seq })
        }
    }
}

/// Starts a flow: records its start on this thread, here and now, and
/// returns the token to put in your message. The receiving side calls
/// [`recv`] with it. Works whether or not this process records (the token
/// is still unique; only nothing is written).
pub fn send(name: &str) -> FlowId {
    match session::ensure_recording() {
        Some(r) => {
            let id = r.next_flow();
            thread::record_with_payload(
                callsite::intern(SiteKind::Flow, name),
                kind::FLOW_OUT,
                id.payload(),
            );
            id
        }
        None => FlowId::from_parts(session::process_uid(), next_untracked()),
    }
}

/// Ends a flow on this thread: the token arrived (in a message, a request).
pub fn recv(token: FlowId, name: &str) {
    if session::ensure_recording().is_some() {
        thread::record_with_payload(
            callsite::intern(SiteKind::Flow, name),
            kind::FLOW_IN,
            token.payload(),
        );
    }
}

/// Sequence numbers for tokens made while not recording (high bit set, so
/// they never collide with recorded ones).
fn next_untracked() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(1 << 63);
    // Relaxed: only uniqueness matters.
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Records a flow start with an id made elsewhere (the spawn path).
pub(crate) fn record_out(id: FlowId, name: &str) {
    thread::record_with_payload(
        callsite::intern(SiteKind::Flow, name),
        kind::FLOW_OUT,
        id.payload(),
    );
}

/// Records a flow end with an id received from the parent process.
pub(crate) fn record_in(id: FlowId, name: &str) {
    thread::record_with_payload(
        callsite::intern(SiteKind::Flow, name),
        kind::FLOW_IN,
        id.payload(),
    );
}

/// A message payload that carries a flow token. Creating it records the
/// send; [`Traced::receive`] on the other side records the receive and
/// gives the payload back. Serialize it with any serde format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Traced<T> {
    flow: FlowId,
    name: String,
    payload: T,
}

impl<T> Traced<T> {
    /// Wraps `payload` and records a flow start named after `T`.
    pub fn new(payload: T) -> Traced<T> {
        let name = short_type_name::<T>();
        Traced {
            flow: send(&name),
            name,
            payload,
        }
    }

    /// Wraps `payload` and records a flow start named `name`.
    pub fn named(name: &str, payload: T) -> Traced<T> {
        Traced {
            flow: send(name),
            name: name.to_owned(),
            payload,
        }
    }

    /// The flow token.
    pub fn flow(&self) -> FlowId {
        self.flow
    }

    /// Records the receive on this thread and returns the payload.
    pub fn receive(self) -> T {
        recv(self.flow, &self.name);
        self.payload
    }
}

fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    // `alloc::vec::Vec<my::Msg>` -> `Vec<Msg>`: drop module paths.
    let mut out = String::with_capacity(full.len());
    let mut seg = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            seg.push(c);
        } else {
            out.push_str(seg.rsplit("::").next().unwrap_or(""));
            seg.clear();
            out.push(c);
        }
    }
    out.push_str(seg.rsplit("::").next().unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_roundtrips() {
        let f = FlowId::from_parts(0x0123_4567_89ab_cdef, 42);
        let s = f.to_string();
        assert_eq!(s, "0123456789abcdef000000000000002a");
        assert_eq!(s.parse::<FlowId>().unwrap(), f);
        assert!("xyz".parse::<FlowId>().is_err());
        assert!("0123456789abcdef000000000000002".parse::<FlowId>().is_err());
        assert!("+123456789abcdef000000000000002a"
            .parse::<FlowId>()
            .is_err());
    }

    #[test]
    fn serde_forms() {
        let f = FlowId::from_parts(7, 9);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            "\"00000000000000070000000000000009\""
        );
        let back: FlowId = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        let bin = postcard::to_stdvec(&f).unwrap();
        assert_eq!(postcard::from_bytes::<FlowId>(&bin).unwrap(), f);
    }

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<String>");
        assert_eq!(short_type_name::<u32>(), "u32");
    }
}
