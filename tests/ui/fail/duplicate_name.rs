#[mpprof::instrument(name = "first", name = "second")]
fn step() {}

fn main() {
    step();
}
