//! Buffers handed to the caller, and their zeroizing free.
//!
//! Every string or byte buffer the library returns is one allocation laid
//! out as `[total length: usize][magic: usize][payload][NUL]`, and the caller
//! gets a pointer to the payload. Freeing reads the length back from the
//! header, so it neither depends on `strlen` (the caller may have written a
//! NUL into the buffer) nor needs the caller to pass the length; the whole
//! allocation is zeroized before it goes back to the allocator.

#![allow(unsafe_code)]

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::c_char;
use std::ptr;

use zeroize::Zeroize;

/// Alignment of every buffer, and size of its header.
const HEADER: usize = 16;
/// Marks a live buffer of ours; cleared when it is freed.
const MAGIC: usize = 0x7274_6b6e_6666_6921_u64 as usize;

/// Copies `bytes` into a new buffer with a trailing NUL. Null if the
/// allocation fails (the caller reports that; nothing aborts).
pub(crate) fn alloc_bytes(bytes: &[u8]) -> *mut u8 {
    let Some(total) = bytes.len().checked_add(HEADER + 1) else {
        return ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(total, HEADER) else {
        return ptr::null_mut();
    };
    // SAFETY: `layout` has a non-zero size (at least HEADER + 1 bytes).
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        return base;
    }
    // SAFETY: `base` is a fresh allocation of `total` bytes aligned to 16, so
    // the two header words (aligned to 16 and 8), the payload at `HEADER` and
    // the NUL at `total - 1` are all inside it, and nothing else aliases it.
    unsafe {
        base.cast::<usize>().write(total);
        base.add(size_of::<usize>()).cast::<usize>().write(MAGIC);
        let payload = base.add(HEADER);
        ptr::copy_nonoverlapping(bytes.as_ptr(), payload, bytes.len());
        payload.add(bytes.len()).write(0);
        payload
    }
}

/// A new NUL-terminated copy of `s`, or null if the allocation failed.
pub(crate) fn alloc_string(s: &str) -> *mut c_char {
    alloc_bytes(s.as_bytes()).cast()
}

/// Zeroizes and frees a buffer made by [`alloc_bytes`]. Null is a no-op; a
/// pointer whose header does not carry the magic value is left alone (leaked)
/// rather than handed to the allocator.
///
/// # Safety
///
/// `payload` is null or was returned by [`alloc_bytes`] and not freed since.
pub(crate) unsafe fn free_bytes(payload: *mut u8) {
    if payload.is_null() {
        return;
    }
    // SAFETY: by the contract, `payload` is HEADER bytes into an allocation
    // made by `alloc_bytes`, so `base` is its start.
    let base = unsafe { payload.sub(HEADER) };
    // SAFETY: the header words are inside the allocation and were written by
    // `alloc_bytes`; the caller only ever sees the payload.
    let (total, magic) = unsafe {
        (
            base.cast::<usize>().read(),
            base.add(size_of::<usize>()).cast::<usize>().read(),
        )
    };
    if magic != MAGIC {
        return;
    }
    let Ok(layout) = Layout::from_size_align(total, HEADER) else {
        return;
    };
    // SAFETY: `base..base + total` is the whole live allocation, and no Rust
    // reference to it exists (the caller owned it).
    unsafe { std::slice::from_raw_parts_mut(base, total) }.zeroize();
    // SAFETY: `base` was allocated by `alloc` with exactly this layout.
    unsafe { dealloc(base, layout) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_free() {
        let p = alloc_string("rt1_secret");
        assert!(!p.is_null());
        // SAFETY: `p` is a NUL-terminated buffer we just made.
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        assert_eq!(s.to_bytes(), b"rt1_secret");
        // A caller may write into the buffer; free still uses the stored length.
        // SAFETY: index 3 is inside the 10-byte payload.
        unsafe { p.add(3).write(0) };
        // SAFETY: `p` came from `alloc_string` and is freed once.
        unsafe { free_bytes(p.cast()) };
        // SAFETY: null is allowed.
        unsafe { free_bytes(ptr::null_mut()) };
    }

    #[test]
    fn empty_buffer_is_a_valid_empty_string() {
        let p = alloc_bytes(&[]);
        assert!(!p.is_null());
        // SAFETY: the payload has its NUL at offset 0.
        assert_eq!(unsafe { p.read() }, 0);
        // SAFETY: made by `alloc_bytes`, freed once.
        unsafe { free_bytes(p) };
    }
}
