//! Flow ids: the causality tokens carried across processes, their text,
//! serde and record-payload forms, and the names of the flows mpprof
//! itself records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The names of the flows the recorder makes itself, as recorded (the
/// flow's callsite name); readers match on them.
pub mod flow_name {
    /// `mpprof::spawn`: from the spawn point to the child's first event.
    pub const SPAWN: &str = "spawn";
    /// `fork()` without `exec`: from the fork point to the child's first
    /// event.
    pub const FORK: &str = "fork";
    /// `mpprof::wait`: from a child's end to the parent's wait (only the
    /// receiving end is recorded; see [`super::FlowId::child_exit`]).
    pub const EXIT: &str = "exit";
    /// The end of a [`SPAWN`] flow whose child was never started (the
    /// program is missing, permission denied): recorded by the parent
    /// itself, right after the start, so the flow is closed and says why.
    pub const SPAWN_FAILED: &str = "spawn failed";
}

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

    /// The flow from a child's end to the parent's `mpprof::wait` for it,
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

    /// The two payload words of a flow record (`FLOW_OUT`, `FLOW_IN`):
    /// `[process][seq]`.
    pub const fn to_payload(&self) -> [u64; 2] {
        [self.process, self.seq]
    }

    /// The flow id in the two payload words of a flow record.
    pub const fn from_payload(p: [u64; 2]) -> FlowId {
        FlowId {
            process: p[0],
            seq: p[1],
        }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFlowIdError(String);

impl fmt::Display for ParseFlowIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a flow id is 32 hex digits, got {:?}", self.0)
    }
}

impl std::error::Error for ParseFlowIdError {}

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
}
