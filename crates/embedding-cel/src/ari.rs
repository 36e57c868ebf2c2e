//! The adjusted Rand index (Hubert & Arabie 1985) of two clusterings: 1 for identical
//! partitions (up to renaming), about 0 for independent ones.

use std::collections::HashMap;

/// ARI of the labelings `a` and `b` of the same items. Returns 1 when both put everything in
/// one cluster (or both make every item its own cluster), and 0 for empty input.
pub fn adjusted_rand_index(a: &[u32], b: &[u32]) -> f64 {
    assert_eq!(a.len(), b.len(), "labelings of different lengths");
    let n = a.len();
    if n == 0 {
        return 0.0;
    }
    let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
    let mut ra: HashMap<u32, u64> = HashMap::new();
    let mut rb: HashMap<u32, u64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *pairs.entry((x, y)).or_default() += 1;
        *ra.entry(x).or_default() += 1;
        *rb.entry(y).or_default() += 1;
    }
    let c2 = |k: u64| (k * k.saturating_sub(1)) as f64 / 2.0;
    let index: f64 = pairs.values().map(|&k| c2(k)).sum();
    let sa: f64 = ra.values().map(|&k| c2(k)).sum();
    let sb: f64 = rb.values().map(|&k| c2(k)).sum();
    let total = c2(n as u64);
    let expected = if total > 0.0 { sa * sb / total } else { 0.0 };
    let max = (sa + sb) / 2.0;
    if (max - expected).abs() < 1e-12 {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // scikit-learn's documented examples.
        assert!((adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
        assert!(
            (adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]) - 0.571_428_571_428_571_4).abs()
                < 1e-12
        );
        assert!((adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-12);
        assert_eq!(adjusted_rand_index(&[], &[]), 0.0);
    }

    /// ARI from the pair confusion matrix, counting every pair of items (O(n^2)): Hubert &
    /// Arabie's index as `2 (n00 n11 - n01 n10) / ((n00 + n01)(n01 + n11) + (n00 + n10)(n10 +
    /// n11))`, 1 when no pair is split differently.
    fn ari_by_pairs(a: &[u32], b: &[u32]) -> f64 {
        let (mut n11, mut n10, mut n01, mut n00) = (0f64, 0f64, 0f64, 0f64);
        for i in 0..a.len() {
            for j in i + 1..a.len() {
                match (a[i] == a[j], b[i] == b[j]) {
                    (true, true) => n11 += 1.0,
                    (true, false) => n10 += 1.0,
                    (false, true) => n01 += 1.0,
                    (false, false) => n00 += 1.0,
                }
            }
        }
        if n01 == 0.0 && n10 == 0.0 {
            return 1.0;
        }
        2.0 * (n00 * n11 - n01 * n10) / ((n00 + n01) * (n01 + n11) + (n00 + n10) * (n10 + n11))
    }

    proptest! {
        #[test]
        fn equals_the_pair_counting_definition(
            ab in (1usize..40).prop_flat_map(|n| (
                proptest::collection::vec(0u32..6, n),
                proptest::collection::vec(0u32..6, n),
            )),
            degenerate in 0u8..4,
        ) {
            let (mut a, mut b) = ab;
            // All in one cluster or all singletons, on either side.
            match degenerate {
                1 => a.iter_mut().for_each(|x| *x = 0),
                2 => a.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32),
                3 => b.iter_mut().for_each(|x| *x = 7),
                _ => {}
            }
            let (got, want) = (adjusted_rand_index(&a, &b), ari_by_pairs(&a, &b));
            prop_assert!((got - want).abs() < 1e-9, "{a:?} {b:?}: {got} vs pairs {want}");
        }

        #[test]
        fn symmetric_bounded_and_invariant_to_renaming(
            a in proptest::collection::vec(0u32..5, 2..60),
            seed in 0u32..1000,
        ) {
            let b: Vec<u32> = a.iter().enumerate().map(|(i, &x)| (x * 7 + (i as u32 * seed) % 3) % 4).collect();
            let ab = adjusted_rand_index(&a, &b);
            prop_assert!((ab - adjusted_rand_index(&b, &a)).abs() < 1e-12);
            prop_assert!(ab <= 1.0 + 1e-12);
            // Renaming labels changes nothing; a clustering agrees perfectly with itself.
            let renamed: Vec<u32> = a.iter().map(|&x| 100 - x * 3).collect();
            prop_assert!((adjusted_rand_index(&a, &renamed) - 1.0).abs() < 1e-12);
            prop_assert!((adjusted_rand_index(&renamed, &b) - ab).abs() < 1e-12);
        }
    }
}
