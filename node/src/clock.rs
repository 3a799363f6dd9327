//! The time a profile stamps and judges by: the system's clock, or one its owner moves (the
//! simulator's), so that a simulated run has one clock. The sync core's timers take their own
//! monotonic `now` from the driver with every `handle_*`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// Seconds since the Unix epoch, as the owner of the value sets them.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A clock that reads `seconds` (and whatever they are set to later).
    pub fn manual(seconds: &Arc<AtomicU64>) -> Self {
        Clock::Manual(seconds.clone())
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Clock::Manual(seconds) => seconds.load(Ordering::Relaxed),
        }
    }
}
