#[mpprof::instrument]
struct Point {
    x: i32,
    y: i32,
}

fn main() {
    let _ = Point { x: 1, y: 2 };
}
