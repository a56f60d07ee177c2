//! `unsafe fn` under `unsafe_op_in_unsafe_fn`, `extern "C" fn`, and an unsafe
//! method.
#![deny(warnings, unsafe_op_in_unsafe_fn)]

/// # Safety
/// `p` must be valid for reads.
#[mpprof::instrument]
unsafe fn read(p: *const u32) -> u32 {
    // SAFETY: the caller promises `p` is valid for reads.
    unsafe { p.read() }
}

#[mpprof::instrument]
extern "C" fn callback(x: i32) -> i32 {
    x + 1
}

#[mpprof::instrument]
pub unsafe extern "C" fn c_read(p: *const i32) -> i32 {
    // SAFETY: the caller promises `p` is valid for reads.
    unsafe { *p }
}

struct Raw(*mut u8);

impl Raw {
    /// # Safety
    /// The pointer must be valid for writes.
    #[mpprof::instrument]
    unsafe fn write(&self, v: u8) {
        // SAFETY: the caller promises the pointer is valid for writes.
        unsafe { self.0.write(v) }
    }
}

fn main() {
    let x = 7;
    // SAFETY: `&x` is valid for reads.
    assert_eq!(unsafe { read(&x) }, 7);
    assert_eq!(callback(1), 2);
    let y = 3;
    // SAFETY: `&y` is valid for reads.
    assert_eq!(unsafe { c_read(&y) }, 3);
    let mut byte = 0u8;
    let raw = Raw(&mut byte);
    // SAFETY: `raw.0` points at `byte`, which is live and not otherwise borrowed.
    unsafe { raw.write(5) };
    assert_eq!(byte, 5);
}
