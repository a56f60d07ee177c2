struct S;

#[mpprof::instrument]
static COUNT: u32 = 0;

#[mpprof::instrument]
mod m {}

#[mpprof::instrument]
impl S {
    fn f(&self) {}
}

#[mpprof::instrument]
trait T {
    fn g(&self);
}

#[mpprof::instrument]
enum E {
    A,
}

#[mpprof::instrument]
type Alias = u32;

fn main() {}
