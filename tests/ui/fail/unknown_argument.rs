#[mpprof::instrument(foo)]
fn a() {}

#[mpprof::instrument(level = "x")]
fn b() {}

#[mpprof::instrument(name = "ok", skip(self))]
fn c() {}

#[mpprof::instrument("just a string")]
fn d() {}

fn main() {
    a();
    b();
    c();
    d();
}
