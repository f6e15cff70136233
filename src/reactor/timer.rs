//! One-shot timers ordered by deadline (a binary heap), cancellable by id. Periodic work
//! re-arms itself from its handler. The payload type is the owning service's own enum.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Identifies an armed timer so it can be cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// The timer table of one process.
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    armed: HashMap<u64, T>,
    next_id: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers { heap: BinaryHeap::new(), armed: HashMap::new(), next_id: 0 }
    }
}

impl<T> Timers<T> {
    /// Arm `payload` to fire `after` from `now`.
    pub fn add(&mut self, now: Instant, after: Duration, payload: T) -> TimerId {
        self.next_id += 1;
        let id = self.next_id;
        self.heap.push(Reverse((now + after, id)));
        self.armed.insert(id, payload);
        TimerId(id)
    }

    /// Disarm; returns the payload if it had not fired yet.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.armed.remove(&id.0)
    }

    /// Number of armed timers (the `timers` column of `status`).
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Time until the earliest armed deadline (zero if already due), `None` with no timers.
    pub fn until_next(&mut self, now: Instant) -> Option<Duration> {
        while let Some(Reverse((at, id))) = self.heap.peek() {
            if self.armed.contains_key(id) {
                return Some(at.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    /// Pop one timer whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(payload) = self.armed.remove(&id) {
                return Some(payload);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_skips_cancelled() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.add(t0, Duration::from_millis(30), "c");
        let b = t.add(t0, Duration::from_millis(20), "b");
        t.add(t0, Duration::from_millis(10), "a");
        assert_eq!(t.len(), 3);
        assert_eq!(t.cancel(b), Some("b"));
        assert_eq!(t.until_next(t0), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0 + Duration::from_millis(5)), None);
        let later = t0 + Duration::from_millis(40);
        assert_eq!(t.pop_due(later), Some("a"));
        assert_eq!(t.pop_due(later), Some("c"));
        assert_eq!(t.pop_due(later), None);
        assert!(t.is_empty());
        assert_eq!(t.until_next(later), None);
    }
}
