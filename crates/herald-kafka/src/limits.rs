//! Bounds shared by every Kafka connection: the bytes of requests being read or handled
//! (Kafka's `queued.max.request.bytes`), and how many warnings hostile clients can make the
//! listener write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits count KiB: the semaphore takes `u32` permits per acquisition, which in bytes would
/// cap a single request at 4 GiB and the bound at the same.
const UNIT: usize = 1024;

/// The request bytes all connections together may hold. A connection reserves a frame's
/// declared size before it allocates the buffer and keeps the reservation until the request has
/// been handled, so the decoded request and the records sliced from the frame are covered too.
pub struct RequestMemory {
    permits: Arc<Semaphore>,
    total_units: u32,
}

/// A frame's reservation; dropping it returns the bytes.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl RequestMemory {
    pub fn new(bytes: usize) -> RequestMemory {
        let total_units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        RequestMemory {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// Waits until `len` bytes can be held. A frame larger than the whole bound reserves all
    /// of it, so it waits until nothing else is held instead of never being served.
    pub async fn reserve(&self, len: usize) -> Reservation {
        let units = u32::try_from(len.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_units);
        match Arc::clone(&self.permits).acquire_many_owned(units).await {
            Ok(permit) => Reservation { _permit: permit },
            // The semaphore is never closed; an unreachable branch still must not panic.
            Err(_) => std::future::pending().await,
        }
    }

    /// Bytes not reserved right now.
    #[cfg(test)]
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits().saturating_mul(UNIT)
    }
}

/// Lets at most `per_window` warnings through per `window`, and counts the rest so the next
/// warning that is let through can say how many were left out.
pub struct WarnLimiter {
    per_window: u32,
    window: Duration,
    state: parking_lot::Mutex<WarnWindow>,
}

struct WarnWindow {
    started: Instant,
    emitted: u32,
    suppressed: u64,
}

impl WarnLimiter {
    pub fn new(per_window: u32, window: Duration) -> WarnLimiter {
        WarnLimiter {
            per_window,
            window,
            state: parking_lot::Mutex::new(WarnWindow {
                started: Instant::now(),
                emitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if a warning may be written now, `n` being how many were suppressed since the
    /// last one written; `None` if this one is suppressed.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock();
        if now.saturating_duration_since(s.started) >= self.window {
            s.started = now;
            s.emitted = 0;
        }
        if s.emitted >= self.per_window {
            s.suppressed = s.suppressed.saturating_add(1);
            return None;
        }
        s.emitted += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_capped_per_window_and_the_suppressed_are_reported() {
        let l = WarnLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let admitted = (0..1000).filter(|_| l.admit(t0).is_some()).count();
        assert_eq!(admitted, 3);
        // The next window lets warnings through again, the first one carrying the count.
        assert_eq!(l.admit(t0 + Duration::from_secs(11)), Some(997));
        assert_eq!(l.admit(t0 + Duration::from_secs(11)), Some(0));
    }

    #[tokio::test]
    async fn reservations_are_bounded_and_returned() {
        let m = RequestMemory::new(4 * 1024 * 1024);
        let a = m.reserve(3 * 1024 * 1024).await;
        assert_eq!(m.available_bytes(), 1024 * 1024);
        // A second large frame waits until the first is released.
        let waiting = tokio::time::timeout(Duration::from_millis(50), m.reserve(2 * 1024 * 1024));
        assert!(waiting.await.is_err());
        drop(a);
        let b = tokio::time::timeout(Duration::from_millis(50), m.reserve(2 * 1024 * 1024)).await;
        assert!(b.is_ok());
        // A frame above the whole bound takes all of it once free, rather than never.
        drop(b);
        let huge = tokio::time::timeout(Duration::from_millis(50), m.reserve(64 << 20)).await;
        assert!(huge.is_ok());
        assert_eq!(m.available_bytes(), 0);
    }
}
