#[mpprof::instrument(name = 42)]
fn a() {}

#[mpprof::instrument(name = some_ident)]
fn b() {}

#[mpprof::instrument(name = b"bytes")]
fn c() {}

#[mpprof::instrument(name = concat!("a", "b"))]
fn d() {}

#[mpprof::instrument(name)]
fn e() {}

#[mpprof::instrument(name =)]
fn f() {}

fn main() {
    a();
    b();
    c();
    d();
    e();
    f();
}
