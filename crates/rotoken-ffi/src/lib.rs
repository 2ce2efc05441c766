//! C ABI for rotoken (work in progress).
