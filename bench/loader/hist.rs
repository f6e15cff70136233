//! A log-linear latency histogram in the manner of HdrHistogram: values are microseconds,
//! exact below 256 µs, then 128 buckets per power of two (relative error under 0.8 %), up to
//! `MAX_VALUE`. Larger values are clamped and counted apart.

/// The largest value kept exactly: 60 s in µs.
pub const MAX_VALUE: u64 = 60_000_000;
/// Sub-buckets per power of two above the linear range.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are their own bucket.
const LINEAR: u64 = 1 << (SUB_BITS + 1);

fn index_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) as usize;
    LINEAR as usize + (shift as usize - 1) * SUB + (sub - SUB)
}

/// Lowest and highest value that fall into bucket `idx`.
fn bucket_range(idx: usize) -> (u64, u64) {
    if (idx as u64) < LINEAR {
        return (idx as u64, idx as u64);
    }
    let k = idx - LINEAR as usize;
    let shift = (k / SUB + 1) as u32;
    let sub = (k % SUB + SUB) as u64;
    let lo = sub << shift;
    (lo, lo + (1 << shift) - 1)
}

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
    clamped: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; index_of(MAX_VALUE) + 1],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
            clamped: 0,
        }
    }

    pub fn record(&mut self, value: u64) {
        let v = if value > MAX_VALUE {
            self.clamped += 1;
            MAX_VALUE
        } else {
            value
        };
        self.counts[index_of(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.sum as f64 / self.total as f64 }
    }

    /// Values above [`MAX_VALUE`] that were recorded as `MAX_VALUE`.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The value at percentile `q` (0..=100): the highest value equivalent to the bucket that
    /// holds the `ceil(q% * count)`-th smallest recorded value, never above the exact maximum.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_range(idx).1.min(self.max);
            }
        }
        self.max
    }

    /// Adds `other` into this one (e.g. histograms of several loader processes).
    #[allow(dead_code)]
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.clamped += other.clamped;
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
        self.clamped = 0;
    }

    /// The usual summary as JSON: count, mean, min, p50, p90, p99, p99.9, max.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count(),
            "mean": (self.mean() * 10.0).round() / 10.0,
            "min": self.min(),
            "p50": self.percentile(50.0),
            "p90": self.percentile(90.0),
            "p99": self.percentile(99.0),
            "p999": self.percentile(99.9),
            "max": self.max(),
            "clamped": self.clamped(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        let mut prev_hi = None;
        for idx in 0..=index_of(MAX_VALUE) {
            let (lo, hi) = bucket_range(idx);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "gap before bucket {idx}");
            }
            assert_eq!(index_of(lo), idx);
            assert_eq!(index_of(hi), idx);
            assert!((hi - lo) as f64 <= lo as f64 * 0.008, "bucket {idx} too wide: {lo}..{hi}");
            prev_hi = Some(hi);
        }
    }

    #[test]
    fn exact_below_linear_range() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.count(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=1_000_000u64 {
            h.record(v * 10);
        }
        for (q, exact) in [(50.0, 5_000_000u64), (90.0, 9_000_000), (99.0, 9_900_000), (99.9, 9_990_000)] {
            let got = h.percentile(q);
            let err = (got as f64 - exact as f64).abs() / exact as f64;
            assert!(err < 0.01, "p{q}: got {got}, exact {exact}");
            assert!(got >= exact, "p{q} must not under-report: {got} < {exact}");
        }
        assert_eq!(h.percentile(100.0), 10_000_000);
    }

    #[test]
    fn clamps_and_merges() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(MAX_VALUE * 2);
        b.record(1000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.clamped(), 1);
        assert_eq!(a.max(), MAX_VALUE);
        assert_eq!(a.min(), 10);
        assert_eq!(a.percentile(50.0), bucket_range(index_of(1000)).1);
        a.clear();
        assert_eq!(a.count(), 0);
        assert_eq!(a.percentile(99.0), 0);
    }
}
