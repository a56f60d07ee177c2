//! mpprof: a profiler for programs made of many processes.
//!
//! Annotate functions with [`instrument`], start a session in the root
//! process with [`init`], start children with [`spawn`], and merge the
//! session directory with `mpprof-merge` into one clock-aligned trace.
//!
//! ```no_run
//! #[mpprof::instrument]
//! fn step(i: u32) -> u32 { i * 2 }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let _session = mpprof::init()?;
//!     let mut child = mpprof::spawn(&mut std::process::Command::new("/bin/true"))?;
//!     {
//!         let _g = mpprof::scope!("phase 1");
//!         step(1);
//!     }
//!     mpprof::event!("checkpoint");
//!     mpprof::counter!("queue depth", 3);
//!     child.wait()?;
//!     Ok(())
//! }
//! ```
//!
//! Each process records into its own memory-mapped file in the session
//! directory: no daemon, no lock on the hot path, and a process killed with
//! SIGKILL leaves everything it committed behind. See `docs/ARCHITECTURE.md`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "mpprof records on Linux only (it relies on /proc, pwrite-reserved MAP_SHARED files and MADV_POPULATE_WRITE)"
);
#[cfg(target_endian = "big")]
compile_error!("the mpprof buffer format is little-endian; big-endian targets are not supported");

mod buffer;
mod callsite;
mod chunks;
pub mod clock;
mod env;
pub mod flow;
mod future;
pub mod io;
mod perf;
mod procfs;
mod record;
mod session;
mod spawn;
mod sync;
#[cfg(feature = "tracing")]
mod tracing_layer;
mod unwind;
mod warn;
mod writer;

/// The buffer file format (the `mpprof-format` crate), which the merge
/// reads without this crate.
pub use mpprof_format as format;

pub use flow::Traced;
pub use format::{FlowId, ParseFlowIdError, TraceparentError};
pub use mpprof_macros::instrument;
pub use record::CounterValue;
pub use session::{init, session_dir, Error, Session};
pub use spawn::{spawn, wait};
#[cfg(feature = "tracing")]
pub use tracing_layer::TracingLayer;

/// A `tracing_subscriber` layer that records `tracing` spans (enter/exit,
/// like `#[instrument]`) and events (instant events named by their
/// message) into this process's mpprof buffer. Composes with other layers:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry().with(mpprof::tracing_layer()).init();
/// ```
///
/// Recording starts the same way as for `#[instrument]` (with [`init`], or
/// lazily in a child started by [`spawn`]). Span fields are left out unless
/// asked for with [`TracingLayer::with_fields`].
#[cfg(feature = "tracing")]
pub fn tracing_layer() -> TracingLayer {
    TracingLayer::default()
}

/// The `static` callsite of a macro call site, of the given kind, named
/// `$name`, located at the call. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __callsite {
    ($kind:ident, $name:expr) => {{
        static __MPPROF_CALLSITE: $crate::__private::Callsite =
            $crate::__private::Callsite::with_kind(
                $crate::format::SiteKind::$kind,
                $name,
                {
                    fn __mpprof_path() -> &'static str {
                        ::core::module_path!()
                    }
                    __mpprof_path
                },
                ::core::file!(),
                ::core::line!(),
            );
        &__MPPROF_CALLSITE
    }};
}

/// Records a span around the rest of the enclosing block:
/// `let _g = mpprof::scope!("phase 1");`.
#[macro_export]
macro_rules! scope {
    ($name:expr) => {
        $crate::__private::SpanGuard::enter($crate::__callsite!(Span, $name))
    };
}

/// Records an instant event: `mpprof::event!("checkpoint");`.
#[macro_export]
macro_rules! event {
    ($name:expr) => {
        $crate::__private::instant($crate::__callsite!(Event, $name))
    };
}

/// Records a counter sample (any integer or float):
/// `mpprof::counter!("queue depth", n);`.
#[macro_export]
macro_rules! counter {
    ($name:expr, $value:expr) => {
        $crate::__private::counter(
            $crate::__callsite!(Counter, $name),
            $crate::CounterValue::from($value),
        )
    };
}

/// Used by the macros; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::callsite::{fn_path, Callsite};
    pub use crate::future::{instrument_future, Instrumented};
    pub use crate::record::{counter, instant, SpanGuard};
}
