//! A function that panics: the span's exit is recorded while unwinding, and
//! the program can catch the panic.
#![deny(warnings)]

#[mpprof::instrument]
fn boom(x: u32) -> u32 {
    if x > 0 {
        panic!("boom {x}");
    }
    x
}

fn main() {
    assert_eq!(boom(0), 0);
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| boom(1));
    assert!(result.is_err());
}
