//! Causality across processes: recording the two ends of a flow
//! ([`FlowId`] itself is part of the format, in `mpprof-format`).

use serde::{Deserialize, Serialize};

use crate::format::kind;
pub use crate::format::{FlowId, ParseFlowIdError};
use crate::{record, session};

/// Starts a flow: records its start on this thread, here and now, and
/// returns the token to put in your message. The receiving side calls
/// [`recv`] with it. Works whether or not this process records (the token
/// is still unique; only nothing is written).
pub fn send(name: &str) -> FlowId {
    match session::ensure_recording() {
        Some(r) => {
            let id = r.next_flow();
            record::flow(kind::FLOW_OUT, id, name);
            id
        }
        None => FlowId::from_parts(session::process_uid(), next_untracked()),
    }
}

/// Ends a flow on this thread: the token arrived (in a message, a request).
pub fn recv(token: FlowId, name: &str) {
    if session::ensure_recording().is_some() {
        record::flow(kind::FLOW_IN, token, name);
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
    fn short_names() {
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<String>");
        assert_eq!(short_type_name::<u32>(), "u32");
    }
}
