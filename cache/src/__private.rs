//! Items the `#[cacheable]` expansion calls. Not part of the public API: names and signatures
//! change without notice.

pub use crate::registry::installed;
