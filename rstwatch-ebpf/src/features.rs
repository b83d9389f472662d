//! The running kernel's features, as userspace probed them (`rstwatch_common::features`).
//! Each test reads the read-only global through a volatile load: the compiler must not fold
//! the default in, the verifier folds the value userspace froze there.

use rstwatch_common::features::ProgramFeatures;

#[unsafe(no_mangle)]
static FEATURES: ProgramFeatures = ProgramFeatures::ALL;

#[inline(always)]
fn has(feature: &u8) -> bool {
    // SAFETY: a read of a field of a static.
    unsafe { core::ptr::read_volatile(feature) != 0 }
}

#[inline(always)]
pub fn coarse_clock() -> bool {
    has(&FEATURES.coarse_clock)
}

#[inline(always)]
pub fn xdp_load_bytes() -> bool {
    has(&FEATURES.xdp_load_bytes)
}

#[inline(always)]
pub fn socket_cookie() -> bool {
    has(&FEATURES.socket_cookie)
}
