use std::collections::HashSet;

use parking_lot::Mutex;

/// Keeps a per-tenant metric label set bounded: the first `max` distinct tenants seen get their
/// own label, every later one is reported as `_other`, so 100,000 tenants cannot explode the
/// series count of `/metrics`.
pub struct LabelLimiter {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

pub const OTHER: &str = "_other";

impl LabelLimiter {
    pub fn new(max: usize) -> LabelLimiter {
        LabelLimiter {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    pub fn label(&self, tenant: &str) -> String {
        let mut seen = self.seen.lock();
        if seen.contains(tenant) {
            return tenant.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OTHER.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded() {
        let l = LabelLimiter::new(2);
        assert_eq!(l.label("a"), "a");
        assert_eq!(l.label("b"), "b");
        assert_eq!(l.label("c"), OTHER);
        assert_eq!(l.label("a"), "a");
    }
}
