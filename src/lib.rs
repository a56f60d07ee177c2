//! The workspace's root package: it owns `examples/`, `tests/` and
//! `benches/`. This library only holds small helpers they share.
