//! mpprof-merge: reads the buffer files of one or more mpprof session
//! directories and writes one clock-aligned trace (Chrome JSON), a
//! cProfile-style summary and a health report.
//!
//! ```no_run
//! let session = mpprof_merge::Session::open(&["mpprof-out/20261125-120000-42"])?;
//! let mut out = std::io::BufWriter::new(std::fs::File::create("trace.json")?);
//! mpprof_merge::write::chrome::write(&session, &mut out)?;
//! mpprof_merge::write::summary::write(&session, &mut std::io::stdout(), 20)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod align;
pub mod analysis;
mod hash;
pub mod merge;
pub mod profile;
pub mod read;
pub mod resources;
pub mod trace;
pub mod write;

pub use merge::{CounterValue, End, Event, EventKind, MergeStats};
pub use trace::{Process, Session};
