//! Zeroing and copying plain-old-data values in place, cheaply on BPF.

/// Sets every byte of `*value` to zero with 32-bit volatile stores.
///
/// A plain zeroing (`write_bytes`, `Default` assignment) becomes a call to `memset`, which on
/// the BPF target is a byte-at-a-time loop in a subprogram: 216 iterations for a flow's state.
/// Volatile stores cannot be merged into that call, so they stay a short run of inline stores.
///
/// # Safety
/// `value` must be valid for writes and all zeroes must be a valid `T`.
#[inline(always)]
pub unsafe fn zero_in_place<T>(value: *mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(4) && core::mem::align_of::<T>() >= 4) };
    let words = value.cast::<u32>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 4 {
        // SAFETY: i < size_of::<T>() / 4 keeps the store inside *value, which is 4-aligned.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// Copies `*src` to `*dst` with 64-bit volatile loads and stores.
///
/// A plain copy of a large value may become a call to `memcpy`, a byte-at-a-time loop on the
/// BPF target; volatile accesses stay a short run of inline loads and stores.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes, the two must not overlap, and `T` must
/// be plain old data.
#[inline(always)]
pub unsafe fn copy_words<T>(src: *const T, dst: *mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8) && core::mem::align_of::<T>() >= 8) };
    let (from, to) = (src.cast::<u64>(), dst.cast::<u64>());
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: i < size_of::<T>() / 8 keeps both accesses inside their 8-aligned values.
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowState;

    #[test]
    fn zeroes_every_byte() {
        let mut flow = FlowState {
            start_ns: u64::MAX,
            history_len: 3,
            ..FlowState::default()
        };
        flow.dir[1].raw_window = 7;
        unsafe { zero_in_place(&mut flow) };
        assert_eq!(flow, FlowState::default());
    }

    #[test]
    fn copies_every_byte() {
        let mut from = FlowState {
            start_ns: 12_345,
            history_len: 3,
            ..FlowState::default()
        };
        from.dir[1].raw_window = 7;
        from.history_letters = 0x5 << 60;
        from.roles = 0x1b;
        let mut to = FlowState::default();
        unsafe { copy_words(&from, &mut to) };
        assert_eq!(to, from);
    }
}
