"""Time and peak memory of the exact pixel metrics (PixelMetrics) on synthetic maps.

Default: 200 maps of 448x448 (40M pixels); half the images carry a few disk-shaped
defects, whose pixels score higher on average. Usage:
    .venv/bin/python bench_metrics.py [--images 200] [--size 448] [--sklearn-check]
Peak memory is reported two ways: tracemalloc (numpy buffers allocated in the timed
phase) and ru_maxrss (whole process, including the interpreter and libraries).
"""
import argparse
import os
import platform
import resource
import time
import tracemalloc

import numpy as np

from metrics import PixelMetrics


def synthetic_pair(rng, size, defective):
    """A noisy float32 heat map and a mask with 1-4 random disks (or an empty mask)."""
    mask = np.zeros((size, size), dtype=bool)
    if defective:
        yy, xx = np.ogrid[:size, :size]
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.integers(0, size, 2)
            radius = rng.integers(4, size // 8)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    heat = rng.random((size, size), dtype=np.float32)
    heat[mask] += np.float32(0.5)
    return heat, mask


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--fpr-limit", type=float, default=0.3)
    parser.add_argument("--sklearn-check", action="store_true",
                        help="also compare pixel AUROC with sklearn (needs several GB)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rss_before = max_rss_mb()
    tracemalloc.start()
    accumulator = PixelMetrics(args.fpr_limit)
    add_seconds = 0.0
    for index in range(args.images):
        heat, mask = synthetic_pair(rng, args.size, defective=index % 2 == 1)
        start = time.perf_counter()
        accumulator.add(heat, mask)
        add_seconds += time.perf_counter() - start
    start = time.perf_counter()
    result = accumulator.compute()
    compute_seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    n_pixels = args.images * args.size ** 2
    print(f"machine: {platform.machine()} {platform.processor() or ''} "
          f"os.cpu_count()={os.cpu_count()} usable={len(os.sched_getaffinity(0))} "
          f"numpy {np.__version__}")
    print(f"data: {args.images} maps of {args.size}x{args.size} = {n_pixels / 1e6:.1f}M pixels, "
          f"{accumulator.n_regions} regions, fpr_limit {args.fpr_limit}")
    rows = [("add() total, s", f"{add_seconds:.2f}"),
            ("compute(), s", f"{compute_seconds:.2f}"),
            ("total, s", f"{add_seconds + compute_seconds:.2f}"),
            ("tracemalloc peak, MB", f"{traced_peak / 2**20:.0f}"),
            ("ru_maxrss before, MB", f"{rss_before:.0f}"),
            ("ru_maxrss peak, MB", f"{max_rss_mb():.0f}"),
            ("pixel_auroc", f"{result['pixel_auroc']:.6f}"),
            ("aupro", f"{result['aupro']:.6f}")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")

    if args.sklearn_check:
        from sklearn.metrics import roc_auc_score
        rng = np.random.default_rng(0)
        pairs = [synthetic_pair(rng, args.size, index % 2 == 1) for index in range(args.images)]
        reference = roc_auc_score(np.concatenate([m.ravel() for _, m in pairs]),
                                  np.concatenate([h.ravel() for h, _ in pairs]))
        print(f"  sklearn roc_auc_score {reference:.12f} vs {result['pixel_auroc']:.12f}")


if __name__ == "__main__":
    main()
