//! Test helpers of the mpprof workspace (not published):
//!
//! - [`file`]: buffer files built and edited in memory with the format's
//!   own encoders, for the reader's tests and the fuzz corpus;
//! - [`perfetto`]: a decoder of the Perfetto traces the merge writes;
//! - [`process`] (re-exported here): tests on real child processes — the
//!   test binary runs itself again in a role, recording into a fresh
//!   session directory — and the merged events they give.

pub mod file;
pub mod perfetto;
pub mod process;

pub use process::*;
