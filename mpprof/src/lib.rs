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
pub mod clock;
pub mod flow;
mod future;
mod session;
mod spawn;
mod thread;
#[cfg(feature = "tracing")]
mod tracing_layer;

/// The buffer file format (the `mpprof-format` crate), which the merge
/// reads without this crate.
pub use mpprof_format as format;

pub use flow::Traced;
pub use format::{FlowId, ParseFlowIdError, TraceparentError};
pub use mpprof_macros::instrument;
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

use format::kind;

/// Prints a warning about recording, prefixed so users know where it comes from.
pub(crate) fn warn(args: std::fmt::Arguments<'_>) {
    eprintln!("mpprof: warning: {args}");
}

/// A counter value: integers are stored as `i64`, floats as `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CounterValue {
    /// An integer sample.
    Int(i64),
    /// A floating-point sample.
    Float(f64),
}

macro_rules! counter_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for CounterValue {
            fn from(v: $t) -> CounterValue { CounterValue::$v(v as _) }
        }
    )*};
}
counter_from!(i8 => Int, i16 => Int, i32 => Int, i64 => Int, isize => Int, u8 => Int, u16 => Int, u32 => Int,
    u64 => Int, usize => Int, f32 => Float, f64 => Float);

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
    use std::marker::PhantomData;

    pub use crate::callsite::{fn_path, Callsite};
    pub use crate::future::{instrument_future, Instrumented};
    use crate::{kind, thread, CounterValue};

    /// Records the exit of a span when dropped (also while unwinding).
    /// Not `Send`: the exit belongs to the thread of the entry.
    #[must_use = "the span ends when the guard is dropped"]
    pub struct SpanGuard {
        /// The callsite's id in its place in a record word
        /// ([`Callsite::bits`]), 0 when the entry was not recorded.
        bits: u32,
        _not_send: PhantomData<*const ()>,
    }

    impl SpanGuard {
        /// Records the entry of the span at `cs`.
        #[inline(always)]
        pub fn enter(cs: &'static Callsite) -> SpanGuard {
            let s = thread::state();
            if s == crate::session::OFF {
                return SpanGuard {
                    bits: 0,
                    _not_send: PhantomData,
                };
            }
            let bits = cs.bits();
            thread::record_in(s, bits, kind::ENTER);
            SpanGuard {
                bits,
                _not_send: PhantomData,
            }
        }
    }

    impl Drop for SpanGuard {
        #[inline(always)]
        fn drop(&mut self) {
            if self.bits != 0 {
                thread::exit(self.bits);
            }
        }
    }

    /// Records an instant event at `cs`.
    #[inline]
    pub fn instant(cs: &'static Callsite) {
        if thread::maybe_on() {
            thread::record(cs.id(), kind::INSTANT);
        }
    }

    /// Records a counter sample at `cs`.
    #[inline]
    pub fn counter(cs: &'static Callsite, v: CounterValue) {
        if thread::maybe_on() {
            let payload = match v {
                CounterValue::Int(i) => [i as u64, 0],
                CounterValue::Float(f) => [f.to_bits(), 1],
            };
            thread::record_with_payload(cs.id(), kind::COUNTER, payload);
        }
    }
}
