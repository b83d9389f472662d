//! Whether xtask runs with the privileges its installs and kernel tests need.

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
