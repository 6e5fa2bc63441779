//! The command line's own machinery (the binary's modules; the library never sees them).

pub mod allocator;
pub mod runtime_dir;
pub mod signals;
