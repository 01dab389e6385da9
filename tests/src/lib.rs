//! Support code shared by the integration tests: counting bodies, and (as backends arrive)
//! spawning real servers on loopback ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts how many times a body ran.
#[derive(Clone, Default, Debug)]
pub struct RunCounter(Arc<AtomicUsize>);

impl RunCounter {
    /// Records one run.
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    /// How many runs so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

pub mod breaker;
pub mod child;
pub mod config;
pub mod conformance;
pub mod proxy;
pub mod servers;
