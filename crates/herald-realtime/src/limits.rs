//! Fixed-window rate limits keyed by user or tenant (seed 2's `RATE_LIMIT_WINDOW` seconds and
//! `RATE_LIMIT_MAX_REQUESTS`). The table is bounded: expired windows are swept when it grows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const MAX_KEYS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: refuse this request.
    Limited,
    /// Far over the limit (twice it): close the connection.
    Abuse,
}

pub struct RateLimiter {
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(window: Duration) -> RateLimiter {
        RateLimiter {
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request for `key` against `max` per window.
    pub fn hit(&self, key: &str, max: u32) -> Verdict {
        if max == 0 {
            return Verdict::Allow;
        }
        let now = Instant::now();
        let mut map = self.windows.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
            if map.len() >= MAX_KEYS {
                // Still full of live windows: refuse new keys rather than grow without bound.
                return Verdict::Limited;
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 <= max {
            Verdict::Allow
        } else if entry.1 <= max.saturating_mul(2) {
            Verdict::Limited
        } else {
            Verdict::Abuse
        }
    }

    /// Seconds until `key`'s window resets (for `Retry-After`).
    pub fn retry_after(&self, key: &str) -> u64 {
        let map = self.windows.lock();
        map.get(key)
            .map(|(start, _)| {
                self.window
                    .saturating_sub(Instant::now().duration_since(*start))
                    .as_secs()
                    .max(1)
            })
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_allow_then_limit_then_flag_abuse_and_reset() {
        let rl = RateLimiter::new(Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(rl.hit("u1", 3), Verdict::Allow);
        }
        assert_eq!(rl.hit("u1", 3), Verdict::Limited);
        assert_eq!(rl.hit("u2", 3), Verdict::Allow, "keys are independent");
        assert_eq!(rl.hit("u1", 3), Verdict::Limited);
        assert_eq!(rl.hit("u1", 3), Verdict::Limited);
        assert_eq!(rl.hit("u1", 3), Verdict::Abuse);
        assert!(rl.retry_after("u1") >= 1);
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(rl.hit("u1", 3), Verdict::Allow, "a new window starts");
        assert_eq!(rl.hit("u1", 0), Verdict::Allow, "0 disables the limit");
    }
}
