"""Evaluation metrics for anomaly detection: image level and exact pixel level.

Image level (one score per image): AUROC, AUPR, F1-max and its threshold.
Pixel level (one score per pixel, all pixels, no sampling): AUROC and AUPRO.

Conventions: label 1 / mask nonzero = anomalous = positive class; a sample or pixel
is predicted anomalous when its score >= threshold.

AUPRO follows the MVTec AD paper (Bergmann et al., IJCV 2021) and its official
evaluation code: ground-truth regions are the 8-connected components of each mask
(scipy.ndimage.label with a 3x3 structure of ones; anomalib's cv2/kornia labelling is
8-connected as well). Components never span two images.
"""
import warnings

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)
# Keys sorted together per step of the descending sweep; bounds the temporaries (~60 MB).
SWEEP_CHUNK = 1 << 20
# Keys of recent images are sorted into one block once this many have gathered.
BLOCK_KEYS = 1 << 20
# The sweep splits the uint64 key space into N_BINS bins of the top 16 bits, and a bin
# holding more than SWEEP_CHUNK keys into bins of one exact float32 score (2**32 keys).
N_BINS = 1 << 16
SCORE_BIN_WIDTH = 1 << 48
EXACT_SCORE_WIDTH = 1 << 32


def image_metrics(labels, scores):
    """Image-level metrics of anomaly scores against binary labels (1 = anomalous).

    Returns a dict of floats:
      auroc:        area under the ROC curve (sklearn roc_auc_score).
      aupr:         average precision, sum_n (R_n - R_{n-1}) P_n over thresholds
                    (sklearn average_precision_score, anomalous = positive).
      f1_max:       max over thresholds t of F1 = 2PR/(P+R), where P and R are the
                    precision and recall of the rule "anomalous iff score >= t" and t runs
                    over the distinct scores (computed from integer counts).
      f1_threshold: the smallest such t attaining f1_max.
    When labels hold a single class every value is nan (with one warning).
    """
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    names = ("auroc", "aupr", "f1_max", "f1_threshold")
    if np.unique(labels).size < 2:
        warnings.warn("image_metrics: labels hold a single class; returning nan", stacklevel=2)
        return dict.fromkeys(names, float("nan"))
    thresholds, f1 = f1_per_threshold(labels, scores)
    # exact ties: the largest index with f1 == max is the smallest threshold attaining it
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return {"auroc": float(roc_auc_score(labels, scores)),
            "aupr": float(average_precision_score(labels, scores)),
            "f1_max": float(f1[best]),
            "f1_threshold": float(thresholds[best])}


def f1_per_threshold(labels, scores):
    """(distinct scores in descending order, F1 of "anomalous iff score >= t" for each).

    F1 = 2 TP / (2 TP + FP + FN) from integer counts: one float division of exact integers,
    so two thresholds with equal F1 give bit-equal values (2PR/(P+R) in floating point can
    round an exact tie apart and pick the wrong one).
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order].astype(np.int64)
    last_of_each = np.flatnonzero(np.diff(sorted_scores, append=-np.inf))  # end of each tie run
    true_positives = np.cumsum(sorted_labels)[last_of_each]
    false_positives = last_of_each + 1 - true_positives
    positives = int(sorted_labels.sum())
    f1 = 2 * true_positives / (true_positives + false_positives + positives)
    return sorted_scores[last_of_each], f1


def _sortable_bits(scores):
    """Map float32 scores to uint32 whose unsigned order equals the float order.

    Why: packing these bits above a 32-bit region id gives one uint64 key per pixel,
    so a single in-place np.sort orders scores and carries the region ids along,
    without an int64 argsort permutation (8 more bytes per pixel).
    """
    scores = np.asarray(scores, dtype=np.float32) + np.float32(0)  # -0.0 + 0 -> +0.0
    if np.isnan(scores).any():
        raise ValueError("heat map contains NaN")
    bits = scores.view(np.uint32)
    negative = (bits >> 31).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


class PixelMetrics:
    """Accumulates heat maps and masks; computes exact pixel AUROC and AUPRO.

    Definitions, over all pixels of all added images (normal images have empty masks):
      pixel_auroc: area under the ROC curve of pixel scores against mask labels, ties
                   counted half as in sklearn.metrics.roc_auc_score.
      aupro:       for a threshold t, FPR(t) = share of all mask-normal pixels with
                   score >= t, PRO(t) = mean over all ground-truth regions (8-connected
                   components of each mask) of the share of the region's pixels with
                   score >= t. The points (FPR, PRO) at every distinct score, plus (0, 0),
                   are joined by straight lines; the curve is integrated (trapezoids) from
                   FPR 0 to fpr_limit, interpolating it at exactly fpr_limit, and the
                   area is divided by fpr_limit. With all scores tied the curve is the
                   segment (0,0)-(1,1), so aupro = fpr_limit / 2.
    A value is nan when it is undefined (no anomalous pixel or region, or no normal pixel).

    Memory: 8 bytes per pixel (float32 score and uint32 region id packed in one uint64
    key), kept in sorted blocks; compute() never copies them all at once, it walks them
    in score windows of at most SWEEP_CHUNK keys (~60 MB of temporaries). E.g. 200 maps
    of 448x448 hold 320 MB. Scores are compared as float32: exact for float32 maps.
    """

    def __init__(self, fpr_limit=0.3):
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
        self.fpr_limit = float(fpr_limit)
        self._blocks = []         # sorted uint64 keys: score bits << 32 | region id (0 = normal)
        self._pending = []        # unsorted keys of recent images, sorted into a block in bulk
        self._region_sizes = [0]  # index = global region id; 0 is the normal background

    @property
    def n_regions(self):
        return len(self._region_sizes) - 1

    def add(self, heat_map, mask):
        """Add one heat map (HxW, float) and its mask (HxW, nonzero = anomalous).

        A batch (NxHxW) is split into its images; regions never join across images.
        """
        heat_map, mask = np.asarray(heat_map), np.asarray(mask)
        if heat_map.shape != mask.shape:
            raise ValueError(f"heat map {heat_map.shape} and mask {mask.shape} differ in shape")
        if heat_map.ndim == 3:
            for one_map, one_mask in zip(heat_map, mask):
                self.add(one_map, one_mask)
            return
        if heat_map.ndim != 2:
            raise ValueError(f"expected an HxW map or NxHxW batch, got shape {heat_map.shape}")
        regions, n_new = ndimage.label(mask != 0, structure=EIGHT_CONNECTED)
        regions = regions.astype(np.uint64)
        first_id = self.n_regions + 1
        regions[regions > 0] += np.uint64(first_id - 1)  # global ids, unique over images
        self._region_sizes.extend(np.bincount(regions.ravel(), minlength=first_id + n_new)
                                  [first_id:].tolist())
        key = _sortable_bits(heat_map).astype(np.uint64) << np.uint64(32)
        key |= regions
        self._pending.append(key.ravel())
        if sum(k.size for k in self._pending) >= BLOCK_KEYS:
            self._sort_pending()

    def _sort_pending(self):
        # Blocks of ~BLOCK_KEYS keep the per-window loop over blocks short.
        if self._pending:
            block = np.concatenate(self._pending)
            block.sort()
            self._blocks.append(block)
            self._pending = []

    def compute(self):
        """Return {"pixel_auroc": float, "aupro": float} over everything added so far."""
        self._sort_pending()
        sizes = np.asarray(self._region_sizes, dtype=np.float64)
        weights = np.zeros_like(sizes)  # a region pixel weighs 1/(n_regions * region size)
        weights[1:] = 1.0 / (self.n_regions * sizes[1:]) if self.n_regions else 0.0
        n_positive = int(sizes[1:].sum())
        n_negative = sum(block.size for block in self._blocks) - n_positive
        if n_positive == 0 or n_negative == 0:
            warnings.warn("PixelMetrics: need both anomalous and normal pixels; returning nan",
                          stacklevel=2)
            return {"pixel_auroc": float("nan"), "aupro": float("nan")}
        sweep = _DescendingSweep(n_negative, self.fpr_limit, weights)
        for low, high, count in self._windows(0, SCORE_BIN_WIDTH):
            if count <= SWEEP_CHUNK:
                window = np.concatenate(self._slices(low, high))
                window.sort()
                sweep.step(window[::-1])
            else:  # an oversized window is a single score: one tie group, no sort needed
                sweep.tie_group(self._slices(low, high))
        return {"pixel_auroc": float(sweep.auc_twice / (2.0 * n_positive * n_negative)),
                "aupro": float(sweep.pro_area / self.fpr_limit)}

    def _slices(self, low, high):
        """Views of every block's keys in [low, high); high may be 2**64 (the end)."""
        def rank(block, key):
            return block.size if key >= 1 << 64 else np.searchsorted(block, np.uint64(key))
        return [block[rank(block, low):rank(block, high)] for block in self._blocks]

    def _windows(self, low, width):
        """Yield key ranges (low, high, count) in descending order covering
        [low, low + N_BINS * width), each holding at most SWEEP_CHUNK keys, except a
        range of width EXACT_SCORE_WIDTH (= one score), which may hold more.

        Ranges are unions of bins of `width` keys; since width is a multiple of 2**32
        a tie group (equal score bits) never straddles two ranges. A bin too full is
        split again into bins of one exact score each.
        """
        shift = np.uint64(width.bit_length() - 1)
        counts = np.zeros(N_BINS, dtype=np.int64)
        for keys in self._slices(low, low + N_BINS * width):
            offsets = ((keys - np.uint64(low)) >> shift).astype(np.intp)
            counts += np.bincount(offsets, minlength=N_BINS)
        window_low, high, pending = None, None, 0  # window being filled: [window_low, high)
        for bin_index in np.flatnonzero(counts)[::-1]:
            bin_low, bin_count = low + int(bin_index) * width, int(counts[bin_index])
            if pending and pending + bin_count > SWEEP_CHUNK:
                yield window_low, high, pending
                high, pending = None, 0
            if bin_count > SWEEP_CHUNK and width > EXACT_SCORE_WIDTH:
                yield from self._windows(bin_low, EXACT_SCORE_WIDTH)
                continue
            high = high or bin_low + width
            window_low, pending = bin_low, pending + bin_count
            if pending > SWEEP_CHUNK:  # a single oversized exact score
                yield window_low, high, pending
                high, pending = None, 0
        if pending:
            yield window_low, high, pending


class _DescendingSweep:
    """Consumes keys in descending score order, window by window.

    A curve point is emitted at the last pixel of each group of tied scores, since a
    threshold cannot split a tie; windows never split a tie group, so each window's
    last key ends a group.
    """

    def __init__(self, n_negative, fpr_limit, weights):
        self.n_negative, self.fpr_limit, self.weights = n_negative, fpr_limit, weights
        self.point = (0, 0, 0.0)       # last (tp, fp, pro) emitted; the curve starts at 0
        self.auc_twice = 0             # exact integer: sum of d(fp) * (tp_a + tp_b)
        self.pro_area = 0.0
        self.pro_done = False

    def step(self, keys):
        """Keys sorted by descending score, ending at a tie-group end."""
        score_bits = keys >> np.uint64(32)
        region_ids = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
        positive = region_ids != 0
        group_end = np.empty(keys.size, dtype=bool)
        group_end[:-1] = score_bits[:-1] != score_bits[1:]
        group_end[-1] = True
        tp0, fp0, pro0 = self.point
        self._emit(tp0 + np.cumsum(positive, dtype=np.int64)[group_end],
                   fp0 + np.cumsum(~positive, dtype=np.int64)[group_end],
                   pro0 + np.cumsum(self.weights[region_ids])[group_end])

    def tie_group(self, slices):
        """Keys that all share one score, possibly many: counted, not sorted."""
        tp, fp, pro = self.point
        for keys in slices:
            region_ids = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
            n_positive = int(np.count_nonzero(region_ids))
            tp, fp = tp + n_positive, fp + keys.size - n_positive
            pro += float(self.weights[region_ids].sum())
        self._emit(np.array([tp]), np.array([fp]), np.array([pro]))

    def _emit(self, tp, fp, pro):
        """Add the curve points (cumulative counts at group ends) to the areas."""
        tp = np.concatenate(([self.point[0]], tp))
        fp = np.concatenate(([self.point[1]], fp))
        pro = np.concatenate(([self.point[2]], pro))
        self.point = (int(tp[-1]), int(fp[-1]), float(pro[-1]))
        self.auc_twice += int(np.sum(np.diff(fp) * (tp[:-1] + tp[1:])))
        if not self.pro_done:
            self._add_pro_area(fp / self.n_negative, pro)

    def _add_pro_area(self, fpr, pro):
        """Trapezoids of the PRO curve up to fpr_limit; the crossing one is cut there."""
        inside = fpr[1:] <= self.fpr_limit
        n_inside = int(np.argmin(inside)) if not inside.all() else inside.size
        self.pro_area += float(np.sum(np.diff(fpr[:n_inside + 1])
                                      * (pro[:n_inside] + pro[1:n_inside + 1]) / 2))
        if n_inside < inside.size:  # segment n_inside crosses the limit (fpr is monotone)
            x0, x1 = fpr[n_inside], fpr[n_inside + 1]
            y0, y1 = pro[n_inside], pro[n_inside + 1]
            y_limit = y0 + (y1 - y0) * (self.fpr_limit - x0) / (x1 - x0)
            self.pro_area += (self.fpr_limit - x0) * (y0 + y_limit) / 2
            self.pro_done = True

