//! One buffer file: `read::open`, `Session::open`, every event, the Chrome,
//! folded and summary writers and `check`. No panic, no unbounded
//! allocation, no hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mpprof_fuzz::read_file(data);
});
