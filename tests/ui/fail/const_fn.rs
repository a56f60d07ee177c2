#[mpprof::instrument]
const fn square(x: u32) -> u32 {
    x * x
}

struct S;

impl S {
    #[mpprof::instrument]
    pub const unsafe fn get(&self) -> u32 {
        1
    }
}

fn main() {
    let _ = square(2);
}
