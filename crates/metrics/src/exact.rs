//! Exact building blocks: an order-independent float sum, an order-preserving integer key for
//! `f32`, and a radix sort for those keys.

/// The exact sum of a multiset of finite `f64` values, rounded once at the end.
///
/// A fixed-point "superaccumulator" (in the spirit of Neal, "Fast exact summation using small and
/// large superaccumulators", 2015): every finite `f64` is an integer multiple of 2^-1074, so the
/// running sum is kept exactly as a 2144-bit integer in 67 signed 32-bit-digit chunks (each held
/// in an `i64`, carries propagated lazily). An addition touches three chunks: O(1), no branches
/// on the data. [`value`](Self::value) rounds the exact sum correctly (to nearest, ties to even).
/// Since the result is a function of the exact sum only, it does not depend on the order in
/// which values were added or on how they were split among merged accumulators: this is what
/// makes every streaming accumulator of this crate bit-identical for any chunking.
///
/// Values must be finite (callers validate inputs); the final sum must be below `f64::MAX`
/// (intermediate sums may exceed it).
#[derive(Debug, Clone)]
pub(crate) struct ExactSum {
    /// Chunk i holds digit i (bits 32i..32i+32 of the sum in units of 2^-1074); digits may
    /// temporarily leave [0, 2^32) until `normalize` propagates carries.
    chunks: [i64; CHUNKS],
    /// Additions since the last normalization (each moves a chunk by less than 2^32).
    pending: u32,
}

const CHUNKS: usize = 67;
/// Normalize before a chunk could overflow: |chunk| < (pending + 1) 2^32 must stay below 2^63.
const MAX_PENDING: u32 = 1 << 30;
const _: () = assert!(((MAX_PENDING as i128) + 1) << 32 < i64::MAX as i128);

impl Default for ExactSum {
    fn default() -> Self {
        Self {
            chunks: [0; CHUNKS],
            pending: 0,
        }
    }
}

impl ExactSum {
    /// Adds one finite value.
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        debug_assert!(x.is_finite());
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as usize;
        let frac = bits & ((1 << 52) - 1);
        // x = m 2^(shift - 1074) with an integer m < 2^53.
        let (m, shift) = if exp == 0 {
            (frac, 0)
        } else {
            (frac | (1 << 52), exp - 1)
        };
        let (idx, off) = (shift / 32, shift % 32);
        let v = (m as u128) << off; // < 2^84: three 32-bit digits
        let d0 = (v & 0xffff_ffff) as i64;
        let d1 = ((v >> 32) & 0xffff_ffff) as i64;
        let d2 = (v >> 64) as i64;
        let c = &mut self.chunks[idx..idx + 3];
        if bits >> 63 == 0 {
            c[0] += d0;
            c[1] += d1;
            c[2] += d2;
        } else {
            c[0] -= d0;
            c[1] -= d1;
            c[2] -= d2;
        }
        self.pending += 1;
        if self.pending >= MAX_PENDING {
            self.normalize();
        }
    }

    /// Propagates carries: every chunk but the last in [0, 2^32), the last holding the sign.
    /// This form is unique for a given sum.
    fn normalize(&mut self) {
        for i in 0..CHUNKS - 1 {
            let carry = self.chunks[i] >> 32; // floor division by 2^32
            self.chunks[i] -= carry << 32;
            self.chunks[i + 1] += carry;
        }
        self.pending = 0;
    }

    /// Adds everything `other` holds.
    pub(crate) fn merge(&mut self, other: &ExactSum) {
        let mut o = other.clone();
        o.normalize();
        self.normalize();
        for (a, b) in self.chunks.iter_mut().zip(o.chunks) {
            *a += b;
        }
        self.pending = 2; // every chunk is now below 2 * 2^32 in magnitude
    }

    /// The exact sum, correctly rounded to the nearest `f64` (ties to even).
    pub(crate) fn value(&self) -> f64 {
        let mut s = self.clone();
        s.normalize();
        let negative = s.chunks[CHUNKS - 1] < 0;
        if negative {
            for c in s.chunks.iter_mut() {
                *c = -*c;
            }
            s.normalize();
        }
        let Some(h) = s.chunks.iter().rposition(|&c| c != 0) else {
            return 0.0;
        };
        // The top three digits as one integer w, so the sum is w 2^(32 base - 1074) plus the
        // digits below `base` (summarized by `sticky`).
        let base = h.saturating_sub(2);
        let w = (base..=h).fold(0u128, |w, i| {
            w | ((s.chunks[i] as u128) << (32 * (i - base)))
        });
        let sticky = s.chunks[..base].iter().any(|&c| c != 0);
        let top_bit = 127 - w.leading_zeros() as usize;
        let (mut mant, mut e) = (w, 32 * base as i64 - 1074);
        if top_bit > 52 {
            let cut = top_bit - 52;
            let rest = w & ((1u128 << cut) - 1);
            let half = 1u128 << (cut - 1);
            mant = w >> cut;
            e += cut as i64;
            if rest > half || (rest == half && (sticky || mant & 1 == 1)) {
                mant += 1; // may reach 2^53: still exact in f64
            }
        }
        // mant <= 2^53 is exact; scaling by a power of two is exact here (the result is either
        // normal, or a subnormal integer multiple of 2^-1074).
        let v = mant as f64 * pow2(e);
        if negative { -v } else { v }
    }
}

/// 2^e for -1074 <= e <= 1023 (subnormal powers included), infinity above.
fn pow2(e: i64) -> f64 {
    if e > 1023 {
        f64::INFINITY
    } else if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
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

/// `num / den` for exact integers with `num <= den`, as f64, correctly rounded (one rounding)
/// at any size.
///
/// # Panics
/// If `den` is 0 or `num > den` (callers pass a pair count and its maximum).
#[inline]
pub(crate) fn ratio(num: u128, den: u128) -> f64 {
    assert!(den > 0 && num <= den, "ratio {num} / {den}");
    if den < 1 << 53 {
        // Both convert exactly: the division is the only rounding.
        return num as f64 / den as f64;
    }
    if num == 0 || num == den {
        return if num == 0 { 0.0 } else { 1.0 };
    }
    // Binary long division: the quotient's bits after the point, from the first 1 on, 64 of
    // them in `q`, and a sticky bit for a non-zero remainder. `q | sticky` converts to f64
    // with one correct rounding (bits 0..10 are below the rounding position; the sticky bit
    // breaks ties towards the true value), and scaling by a power of two is exact.
    let (mut r, mut q, mut bits, mut taken) = (num, 0u64, 0i32, 0u32);
    while taken < 64 {
        // r < den; doubling it without overflow: 2r >= den iff r >= den - r.
        let one = r >= den - r;
        r = if one { r - (den - r) } else { r << 1 };
        bits += 1;
        if one || taken > 0 {
            q = (q << 1) | u64::from(one);
            taken += 1;
        }
    }
    let sticky = u64::from(r != 0);
    // 2^-bits, bits <= 192: a normal f64 built from its exponent field.
    let scale = f64::from_bits(((1023 - bits) as u64) << 52);
    (q | sticky) as f64 * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: Shewchuk's exact partials with Python `math.fsum`'s final rounding (an
    /// independent, well-known correctly rounded summation).
    fn fsum(xs: &[f64]) -> f64 {
        let mut partials: Vec<f64> = Vec::new();
        for &x0 in xs {
            let mut x = x0;
            let mut i = 0;
            for j in 0..partials.len() {
                let mut y = partials[j];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    partials[i] = lo;
                    i += 1;
                }
                x = hi;
            }
            partials.truncate(i);
            partials.push(x);
        }
        let p = &partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let (mut hi, mut lo) = (p[n], 0.0);
        while n > 0 {
            let x = hi;
            n -= 1;
            hi = x + p[n];
            lo = p[n] - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }

    fn exact(xs: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        xs.iter().for_each(|&x| s.add(x));
        s.value()
    }

    #[test]
    fn extremes() {
        let tiny = f64::from_bits(1); // 2^-1074
        assert_eq!(exact(&[tiny, tiny]), 2.0 * tiny);
        assert_eq!(exact(&[tiny, -tiny]), 0.0);
        assert_eq!(exact(&[-tiny]), -tiny);
        assert_eq!(exact(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(exact(&[-3.5, 1.25]), -2.25);
        assert_eq!(exact(&[f64::MIN_POSITIVE, -tiny]), f64::MIN_POSITIVE - tiny);
        // Far apart magnitudes: the sticky digits decide the rounding.
        assert_eq!(exact(&[1.0, 2f64.powi(-53), tiny]), 1.0 + 2f64.powi(-52));
        assert_eq!(exact(&[1.0, 2f64.powi(-53), -tiny]), 1.0);
    }

    #[test]
    fn many_additions_normalize_without_overflow() {
        // Start just below the normalization threshold so that it triggers mid-way.
        let mut s = ExactSum {
            pending: MAX_PENDING - 3,
            ..Default::default()
        };
        for _ in 0..10 {
            s.add(f64::MAX / 16.0);
        }
        assert_eq!(s.value(), f64::MAX / 16.0 * 10.0);
    }

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
        fn exact_sum_is_correctly_rounded(
            xs in prop::collection::vec(
                prop_oneof![
                    any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| x / 64.0),
                    -1.0f64..1.0,
                    (-1e-300f64..1e-300),
                    (0u64..1 << 52).prop_map(|b| f64::from_bits(b) * if b % 2 == 0 { 1.0 } else { -1.0 }),
                ],
                0..40),
        ) {
            let got = exact(&xs);
            let want = fsum(&xs) + 0.0; // fsum may return -0.0; the sum of nothing is +0.0 here
            prop_assert_eq!(got.to_bits(), want.to_bits(), "{} vs {}", got, want);
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

    proptest! {
        /// `ratio` rounds once: a/b scaled by any common factor c gives the correctly rounded
        /// a/b of f64 division of the exact a and b, also when num and den exceed 2^53 (where
        /// converting each to f64 first would round three times).
        #[test]
        fn ratio_is_correctly_rounded(
            a in 0u64..(1 << 53),
            b in 1u64..(1 << 53),
            c in 1u128..(1 << 70),
        ) {
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            let want = a as f64 / b as f64;
            prop_assert_eq!(ratio(u128::from(a) * c, u128::from(b) * c), want);
        }
    }

    #[test]
    fn ratio_edge_cases() {
        assert_eq!(ratio(0, 1 << 100), 0.0);
        assert_eq!(ratio(1 << 100, 1 << 100), 1.0);
        assert_eq!(ratio(1, 3 << 100) * 3.0 * 2f64.powi(100), 1.0);
        assert_eq!(ratio(u128::MAX / 3, u128::MAX), 1.0 / 3.0);
        // Converting num and den to f64 first gives ...947 here; the correctly rounded ratio
        // (Python's float(Fraction(num, den))) is ...945.
        let (num, den) = (
            1_164_115_433_906_158_533u128,
            11_652_879_636_272_361_973u128,
        );
        assert_eq!(num as f64 / den as f64, 0.09989937854352947);
        assert_eq!(ratio(num, den), 0.09989937854352945);
    }
}
