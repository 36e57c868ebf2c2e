//! Exact building blocks: an order-independent float sum, an order-preserving integer key for
//! `f32`, and a radix sort for those keys.

/// The exact sum of a multiset of finite `f64` values, rounded once at the end.
///
/// Shewchuk's algorithm ("Adaptive precision floating-point arithmetic", 1997), as used by
/// Python's `math.fsum`: the running sum is kept exactly as a short list of non-overlapping
/// partials; [`value`](Self::value) rounds the exact sum correctly to the nearest `f64`. Since
/// the result is a function of the exact sum only, it does not depend on the order in which the
/// values were added or on how they were split among merged accumulators. This is what makes
/// every streaming accumulator of this crate give bit-identical results for any chunking.
///
/// Values must be finite (callers validate inputs); sums must stay below `f64::MAX`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
}

impl ExactSum {
    /// Adds one finite value.
    #[inline]
    pub(crate) fn add(&mut self, mut x: f64) {
        debug_assert!(x.is_finite());
        let mut i = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        self.partials.truncate(i);
        self.partials.push(x);
    }

    /// Adds everything `other` holds.
    pub(crate) fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add(p);
        }
    }

    /// The exact sum, correctly rounded (ties to even).
    pub(crate) fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        // Add the partials from the largest down until the sum becomes inexact.
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Rounding `hi + lo` sent the sum halfway between two floats only if the remaining
        // partials push it further in the same direction: then round the other way.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

/// Maps an `f32` (not NaN) to a `u32` whose unsigned order is the numeric order of the floats.
/// `-0.0` and `+0.0` map to the same key (they are equal scores); infinities are ordered.
#[inline]
pub(crate) fn f32_key(x: f32) -> u32 {
    debug_assert!(!x.is_nan());
    // Adding +0.0 turns -0.0 into +0.0 and leaves every other value unchanged.
    let b = (x + 0.0).to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Integer keys the radix sort handles.
pub(crate) trait RadixKey: Copy + Ord + Default {
    /// Number of 8-bit digits.
    const DIGITS: usize;
    /// Digit `d` (0 = least significant).
    fn digit(self, d: usize) -> usize;
}

impl RadixKey for u32 {
    const DIGITS: usize = 4;
    #[inline(always)]
    fn digit(self, d: usize) -> usize {
        ((self >> (8 * d)) & 0xff) as usize
    }
}

impl RadixKey for u64 {
    const DIGITS: usize = 8;
    #[inline(always)]
    fn digit(self, d: usize) -> usize {
        ((self >> (8 * d)) & 0xff) as usize
    }
}

/// Below this length a comparison sort is faster than the radix passes.
const RADIX_MIN_LEN: usize = 1024;

/// Sorts `keys` ascending: LSD radix sort with 8-bit digits (single-threaded, stable, O(n) per
/// digit). All digit histograms come from one pass; digits where every key agrees are skipped,
/// so small group ids in the upper half of a `u64` key cost nothing.
pub(crate) fn radix_sort<K: RadixKey>(keys: &mut Vec<K>) {
    let n = keys.len();
    if n < RADIX_MIN_LEN {
        keys.sort_unstable();
        return;
    }
    let mut hist = vec![[0usize; 256]; K::DIGITS];
    for &k in keys.iter() {
        for (d, h) in hist.iter_mut().enumerate() {
            h[k.digit(d)] += 1;
        }
    }
    let mut scratch: Vec<K> = vec![K::default(); n];
    for (d, h) in hist.iter().enumerate() {
        if h.contains(&n) {
            continue; // every key has the same digit: this pass would not move anything
        }
        let mut offsets = [0usize; 256];
        let mut acc = 0;
        for (o, &c) in offsets.iter_mut().zip(h.iter()) {
            *o = acc;
            acc += c;
        }
        for &k in keys.iter() {
            let o = &mut offsets[k.digit(d)];
            scratch[*o] = k;
            *o += 1;
        }
        std::mem::swap(keys, &mut scratch);
    }
}

/// Twice the Mann-Whitney U statistic of two ascending key lists: the sum over all
/// (positive, negative) pairs of 2 when the positive key is larger, 1 when they tie, 0 otherwise.
/// An exact integer, computed in one merge pass.
pub(crate) fn twice_u<K: Ord + Copy>(pos: &[K], neg: &[K]) -> u128 {
    let mut total: u128 = 0;
    let (mut i, mut j) = (0, 0);
    while i < pos.len() {
        let key = pos[i];
        let mut i_end = i + 1;
        while i_end < pos.len() && pos[i_end] == key {
            i_end += 1;
        }
        while j < neg.len() && neg[j] < key {
            j += 1;
        }
        let mut j_end = j;
        while j_end < neg.len() && neg[j_end] == key {
            j_end += 1;
        }
        total += (i_end - i) as u128 * (2 * j + (j_end - j)) as u128;
        i = i_end;
    }
    total
}

/// `num / den` for exact integers, as f64 (correctly rounded while both are below 2^53, which
/// holds for AUC of fewer than about 1.3e8 samples).
#[inline]
pub(crate) fn ratio(num: u128, den: u128) -> f64 {
    num as f64 / den as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exact_sum_cancels_exactly() {
        let mut s = ExactSum::default();
        for x in [1e100, 1.0, -1e100, 1e-30] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.0 + 1e-30);
        let mut t = ExactSum::default();
        for _ in 0..10 {
            t.add(0.1);
        }
        // Naive summation gives 0.9999999999999999; the exact sum of the ten doubles rounds to 1.
        assert_eq!(t.value(), 1.0);
        assert_eq!(ExactSum::default().value(), 0.0);
    }

    #[test]
    fn exact_sum_rounds_half_to_even_across_partials() {
        // 1 + 2^-53 is exactly halfway between 1 and 1 + 2^-52; the extra 2^-60 pushes it up.
        let mut s = ExactSum::default();
        for x in [1.0, 2f64.powi(-53), 2f64.powi(-60)] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.0 + 2f64.powi(-52));
        let mut s = ExactSum::default();
        for x in [1.0, 2f64.powi(-53)] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.0);
    }

    #[test]
    fn keys_follow_float_order() {
        let xs = [
            f32::NEG_INFINITY,
            -1e30,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            0.0,
            1e-45,
            0.5,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(f32_key(w[0]) < f32_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert_eq!(f32_key(-0.0), f32_key(0.0));
    }

    proptest! {
        #[test]
        fn exact_sum_is_order_independent(
            xs in prop::collection::vec(
                prop_oneof![-1e6f64..1e6, -1e-6f64..1e-6, -1e20f64..1e20], 0..60),
            split in 0usize..60,
        ) {
            let mut fwd = ExactSum::default();
            xs.iter().for_each(|&x| fwd.add(x));
            let mut rev = ExactSum::default();
            xs.iter().rev().for_each(|&x| rev.add(x));
            let k = split.min(xs.len());
            let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
            xs[..k].iter().for_each(|&x| a.add(x));
            xs[k..].iter().for_each(|&x| b.add(x));
            b.merge(&a);
            prop_assert_eq!(fwd.value().to_bits(), rev.value().to_bits());
            prop_assert_eq!(fwd.value().to_bits(), b.value().to_bits());
        }

        #[test]
        fn exact_sum_of_integers_is_exact(xs in prop::collection::vec(-(1i64 << 50)..(1i64 << 50), 0..100)) {
            let mut s = ExactSum::default();
            xs.iter().for_each(|&x| s.add(x as f64));
            let exact: i128 = xs.iter().map(|&x| x as i128).sum();
            prop_assert_eq!(s.value(), exact as f64);
        }

        #[test]
        fn radix_sort_sorts(mut xs in prop::collection::vec(any::<u32>(), 0..3000),
                            ys in prop::collection::vec(0u64..5, 0..3000)) {
            let mut expect = xs.clone();
            expect.sort_unstable();
            radix_sort(&mut xs);
            prop_assert_eq!(xs, expect);
            // u64 keys with constant upper digits (group ids), many skipped passes.
            let mut zs: Vec<u64> = ys.iter().enumerate().map(|(i, &g)| (g << 32) | (i as u64 * 2654435761 % 1000)).collect();
            let mut expect = zs.clone();
            expect.sort_unstable();
            radix_sort(&mut zs);
            prop_assert_eq!(zs, expect);
        }
    }
}
