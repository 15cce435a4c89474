//! Fixture: a well-formed shared library with no nodeinit root module. The
//! loader must refuse it as "not a nodeinit plugin", not crash.

/// Some exported function, so the library is not empty.
#[no_mangle]
pub extern "C" fn nodeinit_noroot_answer() -> u32 {
    42
}
