//! Reading the caller's arguments: NUL-terminated UTF-8 strings and byte
//! buffers, each with a size limit checked before anything else runs.

#![allow(unsafe_code)]

use std::ffi::c_char;

use crate::status::{FfiError, Status};

/// Reads a required NUL-terminated UTF-8 string of at most `max` bytes.
///
/// At most `max + 1` bytes are read looking for the NUL, so an oversize or
/// unterminated argument costs a bounded scan and gives [`Status::TooLarge`].
///
/// # Safety
///
/// `p` is null or points to memory readable up to its NUL or `max + 1`
/// bytes, whichever comes first, that stays unchanged while the call runs.
pub(crate) unsafe fn text<'a>(p: *const c_char, field: &str, max: usize) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::new(Status::NullPointer, format!("{field} is NULL")));
    }
    let mut len = 0usize;
    loop {
        // SAFETY: by the contract the bytes up to the NUL or `max + 1` are
        // readable, and we stop at whichever comes first.
        if unsafe { p.add(len).read() } == 0 {
            break;
        }
        len += 1;
        if len > max {
            return Err(FfiError::new(
                Status::TooLarge,
                format!("{field} is longer than {max} bytes"),
            ));
        }
    }
    // SAFETY: the `len` bytes before the NUL were just read, so they are
    // readable, and the caller keeps them unchanged for the call.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|e| {
        FfiError::new(
            Status::InvalidUtf8,
            format!("{field} is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// [`text`] for an optional argument: NULL means absent.
///
/// # Safety
///
/// As [`text`].
pub(crate) unsafe fn optional_text<'a>(p: *const c_char, field: &str, max: usize) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { text(p, field, max) }.map(Some)
}

/// Reads an optional byte buffer: `(NULL, 0)` is empty, `(NULL, n > 0)` is an error.
///
/// # Safety
///
/// `p` is null or points to `len` readable bytes that stay unchanged while the call runs.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, field: &str, max: usize) -> Result<&'a [u8], FfiError> {
    if len > max {
        return Err(FfiError::new(
            Status::TooLarge,
            format!("{field} is {len} bytes, more than the {max} allowed"),
        ));
    }
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(FfiError::new(
                Status::NullPointer,
                format!("{field} is NULL but its length is {len}"),
            ))
        };
    }
    // SAFETY: `p` is non-null and, by the contract, `len` bytes from it are readable.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Checks an out-pointer is non-null.
pub(crate) fn out<T>(p: *mut T, field: &str) -> Result<*mut T, FfiError> {
    if p.is_null() {
        Err(FfiError::new(Status::NullPointer, format!("{field} is NULL")))
    } else {
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_long_and_bad_utf8_are_errors() {
        // SAFETY: null is allowed.
        let e = unsafe { text(std::ptr::null(), "token", 8) }.unwrap_err();
        assert_eq!(e.status, Status::NullPointer);
        let long = c"123456789";
        // SAFETY: a NUL-terminated literal.
        let e = unsafe { text(long.as_ptr(), "token", 8) }.unwrap_err();
        assert_eq!(e.status, Status::TooLarge);
        // SAFETY: as above.
        assert_eq!(unsafe { text(long.as_ptr(), "token", 9) }, Ok("123456789"));
        let bad = c"ab\xffc";
        // SAFETY: as above.
        let e = unsafe { text(bad.as_ptr(), "subject", 64) }.unwrap_err();
        assert_eq!(e.status, Status::InvalidUtf8);
        assert!(e.message.contains("subject"), "{}", e.message);
        // SAFETY: null is allowed.
        assert_eq!(unsafe { optional_text(std::ptr::null(), "scope", 8) }, Ok(None));
    }

    #[test]
    fn byte_buffers() {
        // SAFETY: null with length 0 is allowed.
        assert_eq!(unsafe { bytes(std::ptr::null(), 0, "metadata", 4) }, Ok(&[][..]));
        // SAFETY: null is checked before reading.
        let e = unsafe { bytes(std::ptr::null(), 3, "metadata", 4) }.unwrap_err();
        assert_eq!(e.status, Status::NullPointer);
        let data = [1u8, 2, 3, 4, 5];
        // SAFETY: the length is checked before reading.
        let e = unsafe { bytes(data.as_ptr(), 5, "metadata", 4) }.unwrap_err();
        assert_eq!(e.status, Status::TooLarge);
        // SAFETY: 4 of the 5 bytes are readable.
        assert_eq!(unsafe { bytes(data.as_ptr(), 4, "metadata", 4) }, Ok(&data[..4]));
    }
}
