//! A session directory of 1 to 3 files (the first bytes choose the split
//! points, see `mpprof_fuzz::split_session`), merged and written like
//! `read_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mpprof_fuzz::session(data);
});
