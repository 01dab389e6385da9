//! Compile-fail and pass cases of `#[cacheable]`. The expected compiler output in
//! `fail/*.stderr` depends on the toolchain pinned in rust-toolchain.toml.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/fail/*.rs");
    t.pass("tests/pass/*.rs");
}
