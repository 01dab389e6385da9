//! Stampede protection and resilience: in-process single flight, the circuit breaker, and
//! XFetch early refresh with TTL jitter. The distributed fill lock lives in the backends
//! ([`CacheBackend::try_lock`](crate::CacheBackend::try_lock)) and is driven by `Cache`.

pub(crate) mod breaker;
pub(crate) mod early;
pub(crate) mod single_flight;
