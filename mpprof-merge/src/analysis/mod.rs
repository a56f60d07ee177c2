//! What the merged events say, computed without I/O: the session's health
//! ([`check`]), the cProfile-style [`summary`] and the cross-process
//! [`critical_path`]. [`crate::write`] renders them as text.

pub mod check;
pub mod critical_path;
mod key;
pub mod summary;
