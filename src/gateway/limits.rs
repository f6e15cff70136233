//! Flow control of a gateway: each client's rates (token buckets of messages and bytes per
//! second) and why its reading is paused; each worker link's congestion state (high and low
//! water, the clients waiting for it to drain). Plain fields, time given in milliseconds of
//! the gateway's clock, so the rules are tested without sleeping and the state copies as is.
//!
//! A paused client is simply not read: its readiness stays in its `Conn` as data, the kernel
//! buffers fill and TCP pushes back on the sender. It is resumed from a list (the link's
//! waiting clients, the throttled clients) without waiting for a new epoll edge.

use crate::config::FlowLimits;

/// Reading paused: the client's worker link is congested and the client queued its share.
pub const LINK: u8 = 1;
/// Reading paused: the client is over its rate.
pub const RATE: u8 = 2;

/// A client may queue `high_water / SHARE_DIVISOR` bytes on a congested link per drain cycle
/// before it waits; a client that sends a little now and then is never held up by one that
/// floods.
const SHARE_DIVISOR: usize = 16;

/// A token bucket of `rate` tokens per second holding one second's worth, kept as what was
/// used: 0 is a full bucket (also the state of a new client). Counted in thousandths of a
/// token so a millisecond's refill is exact. The message that crosses the limit is still
/// delivered; the client then waits until the bucket is back to 7/8 of its capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Thousandths of a token used and not refilled yet.
    pub used: u64,
    /// Clock (ms) of the last refill.
    pub at_ms: u64,
}

impl Bucket {
    fn refill(&mut self, rate: u64, now_ms: u64) {
        // A clock behind `at_ms` (the state came from another process) counts from now.
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = now_ms;
        // `rate` tokens per second is `rate` thousandths per millisecond.
        self.used = self.used.saturating_sub(elapsed.saturating_mul(rate));
    }

    /// Take `n` tokens; true when the bucket is now over its capacity. Rate 0: no limit.
    pub fn take(&mut self, rate: u64, n: u64, now_ms: u64) -> bool {
        if rate == 0 {
            return false;
        }
        self.refill(rate, now_ms);
        self.used = self.used.saturating_add(n.saturating_mul(1000));
        self.used > rate.saturating_mul(1000)
    }

    /// Refill; true when the bucket is back to 7/8 of its capacity.
    pub fn ready(&mut self, rate: u64, now_ms: u64) -> bool {
        if rate == 0 {
            self.used = 0;
            return true;
        }
        self.refill(rate, now_ms);
        let cap = rate.saturating_mul(1000);
        self.used <= cap - cap / 8
    }
}

/// A client's flow state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub msgs: Bucket,
    pub bytes: Bucket,
    /// `LINK` and/or `RATE`: why reading is paused (0: reading). The lists that resume a
    /// client belong to its process: a client carried over to another one starts at 0.
    pub paused: u8,
    /// The drain cycle of its worker link that `queued` counts in.
    pub epoch: u64,
    /// Bytes of its events queued on its worker link during `epoch`.
    pub queued: u64,
}

impl Flow {
    /// Account for one message of `len` bytes; true when it put the client over a rate.
    pub fn charge(&mut self, l: &FlowLimits, len: usize, now_ms: u64) -> bool {
        let msgs = self.msgs.take(l.max_messages_per_second, 1, now_ms);
        let bytes = self.bytes.take(l.max_bytes_per_second, len as u64, now_ms);
        msgs || bytes
    }

    /// Both buckets refilled enough to read again.
    pub fn refilled(&mut self, l: &FlowLimits, now_ms: u64) -> bool {
        let msgs = self.msgs.ready(l.max_messages_per_second, now_ms);
        let bytes = self.bytes.ready(l.max_bytes_per_second, now_ms);
        msgs && bytes
    }

    /// Clear pause reason `why`; true when the client may read again.
    pub fn resume(&mut self, why: u8) -> bool {
        let was = self.paused;
        self.paused &= !why;
        was != 0 && self.paused == 0
    }
}

/// The water marks of worker links, fixed for the life of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    /// Congested from here (`worker_high_water`, at most half of the hard limit).
    pub high: usize,
    /// Every client of the link waits from here (`send_to_worker_buffer_size`).
    pub hard: usize,
}

impl Marks {
    pub fn new(high_water: usize, buffer_size: usize) -> Marks {
        Marks { high: high_water.min(buffer_size / 2).max(1), hard: buffer_size }
    }

    /// Drained: below a quarter of the high-water mark.
    fn low(&self) -> usize {
        self.high / 4
    }
}

/// A worker link's congestion state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFlow {
    /// Went above the high-water mark and has not drained below the low-water mark since.
    pub congested: bool,
    /// Drain cycles so far.
    pub epoch: u64,
    /// Connection ids of the clients paused until it drains.
    pub waiting: Vec<u32>,
}

impl LinkFlow {
    /// A client's event of `n` bytes was queued; `len` bytes are queued now. True when
    /// this made the link congested.
    pub fn queued(&mut self, flow: &mut Flow, n: usize, len: usize, marks: Marks) -> bool {
        if flow.epoch != self.epoch {
            flow.epoch = self.epoch;
            flow.queued = 0;
        }
        flow.queued += n as u64;
        let was = self.congested;
        self.congested |= len >= marks.high;
        !was && self.congested
    }

    /// Must the client with `flow` wait before its next message, `len` bytes being queued?
    pub fn must_wait(&self, flow: &Flow, len: usize, marks: Marks) -> bool {
        let share = (marks.high / SHARE_DIVISOR) as u64;
        len >= marks.hard || (self.congested && flow.epoch == self.epoch && flow.queued >= share)
    }

    /// Client `id` waits for this link to drain; true when that made the link congested
    /// (bytes queued by other means, replies or parked events, may fill it too).
    pub fn hold(&mut self, id: u32) -> bool {
        self.waiting.push(id);
        !std::mem::replace(&mut self.congested, true)
    }

    /// After a flush left `len` bytes queued: when the link drained, a new cycle starts and
    /// the waiting clients are returned (to be resumed).
    pub fn drained(&mut self, len: usize, marks: Marks) -> Option<Vec<u32>> {
        if !self.congested || len > marks.low() {
            return None;
        }
        self.congested = false;
        self.epoch += 1;
        Some(std::mem::take(&mut self.waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RatePolicy;

    fn limits(msgs: u64, bytes: u64) -> FlowLimits {
        FlowLimits {
            worker_high_water: 1 << 16,
            max_messages_per_second: msgs,
            max_bytes_per_second: bytes,
            rate_policy: RatePolicy::Throttle,
        }
    }

    #[test]
    fn a_bucket_lets_one_second_through_then_refills_at_the_rate() {
        let mut b = Bucket::default();
        // A new client starts with a full bucket: 10 at once, the 11th crosses.
        for i in 0..10 {
            assert!(!b.take(10, 1, 5), "message {i}");
        }
        assert!(b.take(10, 1, 5), "the 11th is over");
        assert!(!b.ready(10, 5), "in debt");
        // 10/s: one token per 100 ms; back to 7/8 (1.25 tokens free) after 225 ms.
        assert!(!b.ready(10, 5 + 224));
        assert!(b.ready(10, 5 + 225));
        // A clock that goes back (state carried over from another process) refills nothing
        // and counts from there on.
        assert!(b.ready(10, 0));
        assert_eq!((b.at_ms, b.used), (0, 8750));
        assert!(b.ready(10, 100));
        assert_eq!(b.used, 7750, "100 ms of refill on the new clock");
        // Idle for long: full again, never more than full.
        assert!(b.ready(10, 1_000_000));
        for _ in 0..10 {
            assert!(!b.take(10, 1, 1_000_000));
        }
        assert!(b.take(10, 1, 1_000_000));
    }

    #[test]
    fn rate_zero_is_no_limit_and_huge_values_saturate() {
        let mut b = Bucket::default();
        assert!(!b.take(0, u64::MAX, 1));
        assert!(b.ready(0, 1));
        let mut b = Bucket::default();
        assert!(b.take(1, u64::MAX, u64::MAX), "saturates instead of overflowing");
        assert!(!b.ready(1, u64::MAX), "no time passed: still over");
    }

    #[test]
    fn either_rate_pauses_and_both_must_refill() {
        let l = limits(100, 1000);
        let mut f = Flow::default();
        assert!(!f.charge(&l, 1000, 0), "exactly one second of bytes");
        assert!(f.charge(&l, 1, 0), "one byte more");
        assert!(!f.refilled(&l, 100), "bytes: 1001 used, 100/100 ms back");
        assert!(f.refilled(&l, 126));
        let l = limits(2, 0);
        let mut f = Flow::default();
        assert!(!f.charge(&l, 1 << 30, 0) && !f.charge(&l, 1, 0), "bytes unlimited");
        assert!(f.charge(&l, 1, 0), "third message in the same instant");
    }

    #[test]
    fn resume_says_when_the_last_reason_is_gone() {
        let mut f = Flow { paused: LINK | RATE, ..Flow::default() };
        assert!(!f.resume(LINK), "still over its rate");
        assert!(f.resume(RATE));
        assert!(!f.resume(RATE), "was not paused");
    }

    #[test]
    fn marks_keep_room_between_high_water_and_the_hard_limit() {
        assert_eq!(Marks::new(1 << 18, 10 << 20), Marks { high: 1 << 18, hard: 10 << 20 });
        assert_eq!(Marks::new(1 << 18, 4096), Marks { high: 2048, hard: 4096 });
        assert_eq!(Marks::new(1 << 18, 4096).low(), 512);
    }

    #[test]
    fn a_congested_link_holds_the_client_that_filled_it_and_not_a_quiet_one() {
        let marks = Marks::new(1600, 100_000);
        let mut link = LinkFlow::default();
        let (mut flooder, mut quiet) = (Flow::default(), Flow::default());
        assert!(!link.queued(&mut quiet, 10, 10, marks));
        let mut len = 10;
        let mut became = 0;
        while len < 1600 {
            len += 100;
            became += usize::from(link.queued(&mut flooder, 100, len, marks));
        }
        assert_eq!(became, 1, "congested once, when crossing the high-water mark");
        assert!(link.must_wait(&flooder, len, marks), "over its share (100 bytes)");
        assert!(!link.must_wait(&quiet, len, marks), "10 bytes queued: goes on");
        assert!(link.must_wait(&quiet, 100_000, marks), "at the hard limit everyone waits");
        link.waiting.push(7);
        assert_eq!(link.drained(401, marks), None, "still above the low-water mark (400)");
        assert_eq!(link.drained(400, marks), Some(vec![7]));
        assert!(!link.congested && link.waiting.is_empty());
        assert!(!link.must_wait(&flooder, 400, marks), "a new cycle: shares start again");
        assert_eq!(link.drained(0, marks), None, "not congested: nothing to resume");
        link.queued(&mut flooder, 5, 405, marks);
        assert_eq!((flooder.epoch, flooder.queued), (1, 5), "counted in the new cycle");
    }
}
