#!/usr/bin/env python3
"""Time scikit-learn's roc_auc_score on the data of `cargo bench -p rec-benches --bench metrics`.

The data is regenerated here with the same SplitMix64 stream as benches/benches/metrics.rs
(vectorised in NumPy; uint64 arithmetic wraps exactly like Rust's wrapping_mul/wrapping_add), so
both sides see bit-identical float32 scores and labels; the printed AUC must equal the one the
Rust benchmark prints. Not part of CI.

    pip install numpy scikit-learn
    OMP_NUM_THREADS=1 python3 benches/reference/auc_sklearn.py [--n 10000000] [--repeats 5]
        [--rust-seconds 0.123]   # the Rust median, to print the ratio
"""

import argparse
import statistics
import time

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(seed: int, k: np.ndarray) -> np.ndarray:
    """Output number k (k >= 1) of the SplitMix64 stream started at `seed`."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        return z ^ (z >> np.uint64(31))


def binary_data(n: int, seed: int):
    """Sample i: score = top 24 bits of output 2i+1 / 2^24; label = (top 24 bits of 2i+2) < those."""
    i = np.arange(n, dtype=np.uint64)
    a = splitmix64(seed, np.uint64(2) * i + np.uint64(1)) >> np.uint64(40)
    b = splitmix64(seed, np.uint64(2) * i + np.uint64(2)) >> np.uint64(40)
    scores = (a.astype(np.float32) / np.float32(1 << 24)).astype(np.float32)
    labels = (b < a).astype(np.float32)
    return scores, labels


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney U from average ranks in integer arithmetic, divided exactly (Fraction), then
    rounded once: the correctly rounded AUC, which rec-metrics must match to the last bit."""
    from fractions import Fraction

    from scipy.stats import rankdata

    twice_ranks = (2 * rankdata(scores, method="average")).astype(np.int64)  # exact integers
    pos = labels > 0.5
    p, n = int(pos.sum()), int((~pos).sum())
    twice_u = int(twice_ranks[pos].sum()) - p * (p + 1)
    return float(Fraction(twice_u, 2 * p * n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rust-seconds", type=float, default=None)
    args = p.parse_args()

    import sklearn
    from sklearn.metrics import roc_auc_score

    scores, labels = binary_data(args.n, args.seed)
    times = []
    value = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        value = roc_auc_score(labels, scores)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"numpy {np.__version__}, scikit-learn {sklearn.__version__}")
    print(f"n = {args.n}, seed = {args.seed}, positives = {int(labels.sum())}")
    print(f"roc_auc_score = {value:.17f}")
    print(f"exact AUC     = {exact_auc(scores, labels):.17f} (rank-sum, integer arithmetic)")
    print(f"time: median {med:.3f} s, min {min(times):.3f} s over {args.repeats} runs")
    if args.rust_seconds:
        print(f"ratio scikit-learn / rec-metrics (medians): {med / args.rust_seconds:.1f}x")


if __name__ == "__main__":
    main()
