//! Stampede protection.

pub(crate) mod single_flight;
