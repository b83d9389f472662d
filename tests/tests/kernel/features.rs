//! The probes of what the kernel's verifier accepts find each feature on the kernel that runs
//! them from the version that brought it (stock kernels: the matrix boots Debian's), so the
//! programs take a fallback exactly where they must. Runs in every kernel-matrix guest.

use aya::util::KernelVersion;
use rstwatch::kernel::features::probe_programs;
use rstwatch_common::features::ProgramFeatures;

#[test]
fn each_feature_is_found_from_the_kernel_version_that_brought_it() {
    let running = KernelVersion::current().expect("the running kernel's version");
    let since = |major, minor| u8::from(running >= KernelVersion::new(major, minor, 0));
    assert_eq!(
        probe_programs(),
        ProgramFeatures {
            coarse_clock: since(5, 11),
            xdp_load_bytes: since(5, 18),
            socket_cookie: since(5, 12),
        },
        "kernel {running}"
    );
}
