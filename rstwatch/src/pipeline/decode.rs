//! The kernel's ring-buffer records, decoded once at the boundary.

use rstwatch_common::RstEvent;

/// Copies one ring-buffer record out as an `RstEvent`; `None` if it is too short to be one.
pub fn event(bytes: &[u8]) -> Option<RstEvent> {
    if bytes.len() < std::mem::size_of::<RstEvent>() {
        return None;
    }
    // SAFETY: length checked; RstEvent is plain old data, valid for any bit pattern.
    Some(unsafe { bytes.as_ptr().cast::<RstEvent>().read_unaligned() })
}
