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

/// A writer that counts the bytes written to it and keeps none: merge
/// outputs measured without a disk (the scale test, the merge bench).
#[derive(Debug, Default)]
pub struct Counting(pub u64);

impl std::io::Write for Counting {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
