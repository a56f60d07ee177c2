//! [`FlowId`] as a W3C Trace Context `traceparent` header, so a flow can
//! ride an HTTP request: `00-<trace-id>-<parent-id>-<flags>`.
//!
//! The trace id is the flow id's 128 bits (process uid, then sequence,
//! big-endian): the same 32 hex digits as the flow id's text form. The
//! parent id is the sending process's uid (the span id of a `traceparent`
//! names the caller; here the caller is a process), or 1 when that is 0.
//! Flags are `01` (sampled). Parsing keeps only the trace id.

use crate::FlowId;

/// Why a `traceparent` header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceparentError {
    /// Not `version-traceid-parentid-flags` with the spec's lengths.
    Format,
    /// Version `ff` (forbidden) or not two lowercase hex digits.
    Version,
    /// Trace id not 32 lowercase hex digits, or all zero.
    TraceId,
    /// Parent id not 16 lowercase hex digits, or all zero.
    ParentId,
    /// Flags not two lowercase hex digits.
    Flags,
}

impl std::fmt::Display for TraceparentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraceparentError::Format => {
                "traceparent: not `vv-<32 hex>-<16 hex>-ff` (wrong length or separators)"
            }
            TraceparentError::Version => "traceparent: invalid version",
            TraceparentError::TraceId => "traceparent: invalid trace id",
            TraceparentError::ParentId => "traceparent: invalid parent id",
            TraceparentError::Flags => "traceparent: invalid trace flags",
        })
    }
}

impl std::error::Error for TraceparentError {}

/// Version 00 is exactly this long; later versions are at least this long.
const LEN_V0: usize = 55;

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FlowId {
    /// This flow id as a W3C `traceparent` header value:
    /// `00-<flow id, 32 hex>-<process uid, 16 hex>-01`.
    ///
    /// The all-zero flow id (`FlowId::default()`) gives an all-zero trace
    /// id, which the spec (and [`FlowId::from_traceparent`]) rejects; flow
    /// ids made by mpprof never are zero.
    pub fn to_traceparent(&self) -> String {
        let parent = if self.process() != 0 {
            self.process()
        } else {
            1
        };
        format!("00-{self}-{parent:016x}-01")
    }

    /// Parses a W3C `traceparent` header value, keeping its trace id as the
    /// flow id. Follows the spec's rules: lowercase hex only, version `ff`
    /// rejected, all-zero trace id or parent id rejected; version `00` must
    /// be exactly 55 characters, a later version may carry further
    /// `-`-separated fields, which are ignored. Surrounding spaces and tabs
    /// (HTTP's optional whitespace) are ignored.
    pub fn from_traceparent(header: &str) -> Result<FlowId, TraceparentError> {
        let s = header.trim_matches([' ', '\t']);
        if !s.is_ascii() || s.len() < LEN_V0 {
            return Err(TraceparentError::Format);
        }
        let version = &s[0..2];
        if !lower_hex(version) || version == "ff" {
            return Err(TraceparentError::Version);
        }
        let b = s.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceparentError::Format);
        }
        if s.len() > LEN_V0 && (version == "00" || b[LEN_V0] != b'-') {
            return Err(TraceparentError::Format);
        }
        let (trace, parent, flags) = (&s[3..35], &s[36..52], &s[53..55]);
        if !lower_hex(trace) || trace.bytes().all(|c| c == b'0') {
            return Err(TraceparentError::TraceId);
        }
        if !lower_hex(parent) || parent.bytes().all(|c| c == b'0') {
            return Err(TraceparentError::ParentId);
        }
        if !lower_hex(flags) {
            return Err(TraceparentError::Flags);
        }
        trace.parse().map_err(|_| TraceparentError::TraceId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(s: &str) -> Result<FlowId, TraceparentError> {
        FlowId::from_traceparent(s)
    }

    #[test]
    fn roundtrip() {
        let f = FlowId::from_parts(0x0123_4567_89ab_cdef, 42);
        let h = f.to_traceparent();
        assert_eq!(h, "00-0123456789abcdef000000000000002a-0123456789abcdef-01");
        assert_eq!(parse(&h), Ok(f));
        // Process uid 0: the parent id must still be non-zero.
        let z = FlowId::from_parts(0, 5);
        assert_eq!(parse(&z.to_traceparent()), Ok(z));
        assert_eq!(parse(GOOD), Ok(TRACE.parse().unwrap()));
    }

    #[test]
    fn all_zero_ids_are_rejected() {
        assert_eq!(
            parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Err(TraceparentError::TraceId)
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Err(TraceparentError::ParentId)
        );
        assert!(parse(&FlowId::default().to_traceparent()).is_err());
    }

    #[test]
    fn version_ff_and_bad_versions_are_rejected() {
        assert_eq!(
            parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(TraceparentError::Version)
        );
        assert_eq!(
            parse("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(TraceparentError::Version)
        );
        assert_eq!(
            parse("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(TraceparentError::Version)
        );
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        for bad in [
            "",
            "00",
            // trace id one digit short / long
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            // parent id one digit short / long
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
            // flags one digit short / long
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            // other separators
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"),
            Err(TraceparentError::Format),
            "version 00 is exactly 55 characters"
        );
    }

    #[test]
    fn uppercase_and_non_hex_are_rejected() {
        assert_eq!(
            parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Err(TraceparentError::TraceId)
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01"),
            Err(TraceparentError::ParentId)
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A"),
            Err(TraceparentError::Flags)
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01"),
            Err(TraceparentError::TraceId)
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9z2b7-01"),
            Err(TraceparentError::ParentId)
        );
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g"),
            Err(TraceparentError::Flags)
        );
        assert!(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é").is_err());
    }

    #[test]
    fn future_versions_may_carry_more_fields() {
        let want = Ok(TRACE.parse().unwrap());
        assert_eq!(
            parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            want
        );
        assert_eq!(
            parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"),
            want
        );
        // ...but the field after the flags must still be separated by '-'.
        assert_eq!(
            parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what"),
            Err(TraceparentError::Format)
        );
        // Unknown flag bits are carried, not rejected.
        assert_eq!(
            parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"),
            want
        );
    }

    #[test]
    fn optional_whitespace_is_ignored() {
        assert_eq!(
            parse(" \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 "),
            Ok(TRACE.parse().unwrap())
        );
    }
}
