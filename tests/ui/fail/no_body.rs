trait Service {
    #[mpprof::instrument]
    fn call(&self) -> u32;
}

extern "C" {
    #[mpprof::instrument]
    fn abs(x: i32) -> i32;
}

fn main() {}
