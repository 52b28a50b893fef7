"""metrics.py against hand-computed values and slow brute-force references."""
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

import metrics
from helpers import aupro, pixel_auroc, pixel_metrics
from metrics import PixelMetrics, image_metrics


# ---------------------------------------------------------------- image level

def test_image_metrics_hand_computed():
    labels = [0, 1, 0, 1, 1]
    scores = [0.1, 0.3, 0.4, 0.6, 0.9]
    # Descending: 0.9(+) 0.6(+) 0.4(-) 0.3(+) 0.1(-); 3 positives.
    #   t=0.9: TP1 FP0 -> P=1   R=1/3 F1=0.5
    #   t=0.6: TP2 FP0 -> P=1   R=2/3 F1=0.8
    #   t=0.4: TP2 FP1 -> P=2/3 R=2/3 F1=2/3
    #   t=0.3: TP3 FP1 -> P=3/4 R=1   F1=2*(3/4)/(7/4)=6/7   <- max
    #   t=0.1: TP3 FP2 -> P=3/5 R=1   F1=0.75
    # AP = sum dR * P = 1/3*1 + 1/3*1 + 0 + 1/3*3/4 + 0 = 11/12.
    # AUROC: positive-negative pairs won: 0.9 beats 2, 0.6 beats 2, 0.3 beats 1 -> 5/6.
    result = image_metrics(labels, scores)
    assert set(result) == {"auroc", "aupr", "f1_max", "f1_threshold"}
    assert result["auroc"] == pytest.approx(5 / 6)
    assert result["aupr"] == pytest.approx(11 / 12)
    assert result["f1_max"] == pytest.approx(6 / 7)
    assert result["f1_threshold"] == pytest.approx(0.3)
    assert all(isinstance(v, float) for v in result.values())


def test_f1_threshold_is_the_smallest_of_two_exactly_tied_thresholds():
    # ascending scores 0..8; at t=7: TP 2, FP 0 and at t=4: TP 3, FP 2, with 4 anomalous:
    # F1 = 4/6 = 6/9 exactly, but 2PR/(P+R) in floating point ranks t=7 higher
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 1, 1])
    result = image_metrics(labels, np.arange(9.0))
    assert result["f1_max"] == 2 / 3
    assert result["f1_threshold"] == 4.0


def test_image_metrics_ties():
    labels = [0, 1, 0, 1]
    scores = [0.2, 0.5, 0.5, 0.9]
    # t=0.9: P=1 R=1/2 F1=2/3; t=0.5 (tie, both flagged): P=2/3 R=1 F1=0.8 <- max;
    # t=0.2: P=1/2 R=1 F1=2/3. AP = 1/2*1 + 1/2*2/3 = 5/6.
    # AUROC: 0.9 beats 2; 0.5 beats 0.2 and ties 0.5 (half) -> 3.5/4.
    result = image_metrics(labels, scores)
    assert result["f1_max"] == pytest.approx(0.8)
    assert result["f1_threshold"] == pytest.approx(0.5)
    assert result["aupr"] == pytest.approx(5 / 6)
    assert result["auroc"] == pytest.approx(3.5 / 4)


def test_image_metrics_single_class_is_nan_with_one_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = image_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert len(caught) == 1
    assert all(math.isnan(v) for v in result.values())
    assert set(result) == {"auroc", "aupr", "f1_max", "f1_threshold"}


def test_image_metrics_rejects_bad_input():
    with pytest.raises(ValueError):
        image_metrics([0, 1], [0.1])
    with pytest.raises(ValueError):
        image_metrics([0, 2], [0.1, 0.2])


# ---------------------------------------------------------------- AUPRO, hand cases

# One image, one region of two pixels (top-left), four normal pixels.
ONE_REGION_MASK = np.array([[1, 1, 0],
                            [0, 0, 0]], dtype=bool)
ONE_REGION_MAP = np.array([[0.9, 0.5, 0.7],
                           [0.3, 0.2, 0.1]], dtype=np.float32)


def test_aupro_one_region():
    # Descending: 0.9(R) 0.7(N) 0.5(R) 0.3(N) 0.2(N) 0.1(N); region size 2, 4 normals.
    # (FPR, PRO): (0,0) (0,.5) (.25,.5) (.25,1) (.5,1) (.75,1) (1,1)
    # limit 0.5: .25*.5 + .25*1 = .375 -> /.5 = 0.75
    # limit 0.3: .25*.5 + .05*1 = .175 -> /.3 = 7/12
    assert aupro([ONE_REGION_MAP], [ONE_REGION_MASK], fpr_limit=0.5) == pytest.approx(0.75)
    assert aupro([ONE_REGION_MAP], [ONE_REGION_MASK], fpr_limit=0.3) == pytest.approx(7 / 12)


def test_aupro_tie_between_region_and_normal_pixels_interpolates():
    heat = np.array([[0.9, 0.5, 0.5],
                     [0.5, 0.1, 0.1]], dtype=np.float32)
    # Descending: 0.9(R) then the tie {0.5(R), 0.5(N), 0.5(N)} then 0.1(N) x2.
    # Points: (0,0) (0,.5) (.5,1) (1,1); the tie gives the diagonal (0,.5)-(.5,1).
    # limit .25: PRO(.25) = .75 by interpolation; area = .25*(.5+.75)/2 = .15625 -> /.25 = .625
    assert aupro([heat], [ONE_REGION_MASK], fpr_limit=0.25) == pytest.approx(0.625)


SEVERAL_REGIONS_MASK = np.array([[1, 0, 0, 1, 1],
                                 [0, 1, 0, 0, 1],
                                 [0, 0, 0, 0, 0]], dtype=bool)
SEVERAL_REGIONS_MAP = np.array([[0.9, 0.0, 0.0, 0.8, 0.6],
                                [0.0, 0.65, 0.4, 0.0, 0.1],
                                [0.7, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)


def test_aupro_several_regions_diagonal_is_one_region():
    # 8-connectivity: R1 = {(0,0),(1,1)} (diagonal neighbours), R2 = {(0,3),(0,4),(1,4)}.
    # Pixel weights 1/(n_regions*size): R1 1/4 each, R2 1/6 each. 10 normal pixels.
    # Descending: .9 R1, .8 R2, .7 N, .65 R1, .6 R2, .4 N, .1 R2, 0 N x8
    # Points: (0,1/4) (0,5/12) (.1,5/12) (.1,8/12) (.1,10/12) (.2,10/12) (.2,1) (1,1)
    # limit .3: .1*5/12 + .1*10/12 + .1*1 = .225 -> /.3 = 0.75
    # (4-connectivity would split R1 and give .1*(4/9 + 8/9 + 1)/.3 = 7/9.)
    accumulator = PixelMetrics(fpr_limit=0.3)
    accumulator.add(SEVERAL_REGIONS_MAP, SEVERAL_REGIONS_MASK)
    assert accumulator.n_regions == 2
    assert accumulator.compute()["aupro"] == pytest.approx(0.75)


def test_normal_image_adds_false_positives_only():
    normal_map = np.full((2, 3), 0.6, dtype=np.float32)
    normal_mask = np.zeros((2, 3), dtype=bool)
    maps, masks = [ONE_REGION_MAP, normal_map], [ONE_REGION_MASK, normal_mask]
    # Normals: .7 .3 .2 .1 from image 1 and six .6 from image 2 -> 10 normal pixels.
    # Descending: .9 R, .7 N, .6 N x6, .5 R, .3 N, .2 N, .1 N
    # Points: (0,.5) (.1,.5) (.7,.5) (.7,1) (.8,1) (.9,1) (1,1)
    # limit .3: .3*.5 = .15 -> /.3 = 0.5;  limit 1: .7*.5 + .3*1 = .65
    # Pixel AUROC: .9 beats all 10 normals, .5 beats 3 -> 13/20 = .65 (one region: PRO = TPR).
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(0.5)
    result = pixel_metrics(maps, masks, fpr_limit=1.0)
    assert result["aupro"] == pytest.approx(0.65)
    assert result["pixel_auroc"] == pytest.approx(0.65)


@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_all_scores_tied(fpr_limit):
    # No threshold separates tied pixels: the only points are (0,0) (nothing flagged) and
    # (1,1) (everything flagged), joined by the diagonal. Area up to L is L*L/2, so
    # aupro = L/2 (0.15 for L = 0.3), which is also the expected PRO area under random
    # tie-breaking. Pixel AUROC of a constant map is 0.5.
    heat = np.full(SEVERAL_REGIONS_MASK.shape, 0.5, dtype=np.float32)
    result = pixel_metrics([heat], [SEVERAL_REGIONS_MASK], fpr_limit=fpr_limit)
    assert result["aupro"] == pytest.approx(fpr_limit / 2)
    assert result["pixel_auroc"] == pytest.approx(0.5)


def test_perfect_and_inverted_maps():
    perfect = SEVERAL_REGIONS_MASK.astype(np.float32)
    assert pixel_metrics([perfect], [SEVERAL_REGIONS_MASK]) == pytest.approx(
        {"pixel_auroc": 1.0, "aupro": 1.0})
    assert pixel_metrics([1 - perfect], [SEVERAL_REGIONS_MASK]) == pytest.approx(
        {"pixel_auroc": 0.0, "aupro": 0.0})


def test_undefined_cases_are_nan():
    no_defect = np.zeros((2, 3), dtype=bool)
    all_defect = np.ones((2, 3), dtype=bool)
    with pytest.warns(UserWarning):
        result = pixel_metrics([ONE_REGION_MAP], [no_defect])
    assert math.isnan(result["aupro"]) and math.isnan(result["pixel_auroc"])
    with pytest.warns(UserWarning):
        result = pixel_metrics([ONE_REGION_MAP], [all_defect])
    assert math.isnan(result["aupro"]) and math.isnan(result["pixel_auroc"])
    with pytest.warns(UserWarning):
        assert math.isnan(PixelMetrics().compute()["aupro"])


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        PixelMetrics(fpr_limit=0)
    with pytest.raises(ValueError):
        PixelMetrics().add(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        PixelMetrics().add(np.full((2, 3), np.nan), np.zeros((2, 3)))


# ---------------------------------------------------------------- randomized checks

def random_case(seed, n_images=6, shape=(12, 15)):
    """Maps rounded to 1 decimal (many ties, negatives too) and blobby masks; image 0 normal."""
    rng = np.random.default_rng(seed)
    maps = np.round(rng.normal(size=(n_images, *shape)), 1).astype(np.float32)
    smooth = ndimage.gaussian_filter(rng.normal(size=(n_images, *shape)), sigma=(0, 1.2, 1.2))
    masks = smooth > np.quantile(smooth, 0.8)
    masks[0] = False
    maps[masks] += np.float32(0.5)  # some signal, so curves are not trivial
    return maps, masks


def brute_force_aupro(maps, masks, fpr_limit):
    """Slow reference: loop over every distinct threshold and every region."""
    region_masks, normal_scores = [], []
    for heat, mask in zip(maps, masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        region_masks += [(heat, labelled == k) for k in range(1, n + 1)]
        normal_scores.append(heat[~mask])
    normal_scores = np.concatenate(normal_scores)
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = np.mean(normal_scores >= t)
        pro = np.mean([np.mean(heat[region] >= t) for heat, region in region_masks])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_cut = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_cut) / 2
    return area / fpr_limit


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.3, 0.02, 1.0])
def test_aupro_matches_brute_force(seed, fpr_limit):
    maps, masks = random_case(seed)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(
        brute_force_aupro(maps, masks, fpr_limit), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_pixel_auroc_equals_sklearn_with_ties(seed):
    maps, masks = random_case(seed)
    assert pixel_auroc(maps, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_accumulator_order_batches_and_small_chunks(monkeypatch):
    maps, masks = random_case(7, n_images=8)
    one_shot = pixel_metrics(maps, masks)
    reversed_order = PixelMetrics()
    for heat, mask in zip(maps[::-1], masks[::-1]):
        reversed_order.add(heat, mask)
    batched = PixelMetrics()
    batched.add(maps[:3], masks[:3])     # NxHxW batches: regions stay per image
    first = batched.compute()            # compute, then keep adding
    batched.add(maps[3:], masks[3:])
    assert first == pytest.approx(pixel_metrics(maps[:3], masks[:3]))
    assert reversed_order.compute() == pytest.approx(one_shot, abs=1e-12)
    assert batched.compute() == pytest.approx(one_shot, abs=1e-12)
    assert batched.compute() == pytest.approx(one_shot, abs=1e-12)  # repeatable
    # Small blocks: many sorted blocks to merge. Tiny windows: score bins overflow, are
    # split into exact scores, and scores held by more than 7 pixels take the counting path.
    monkeypatch.setattr(metrics, "BLOCK_KEYS", 100)
    assert pixel_metrics(maps, masks) == pytest.approx(one_shot, abs=1e-12)
    monkeypatch.setattr(metrics, "SWEEP_CHUNK", 7)
    assert pixel_metrics(maps, masks) == pytest.approx(one_shot, abs=1e-12)
    assert aupro(maps, masks, 0.02) == pytest.approx(brute_force_aupro(maps, masks, 0.02))


def test_regions_do_not_join_across_batched_images():
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[0, 3, :] = True   # bottom row of image 0
    mask[1, 0, :] = True   # top row of image 1: adjacent in a 3-D array, not in reality
    accumulator = PixelMetrics()
    accumulator.add(np.zeros((2, 4, 4), dtype=np.float32), mask)
    assert accumulator.n_regions == 2


def test_negative_zero_ties_with_zero():
    # -0.0 and +0.0 are equal scores and must form one tie group.
    heat = np.array([[0.0, -0.0]], dtype=np.float32)
    mask = np.array([[True, False]])
    assert pixel_metrics([heat], [mask])["pixel_auroc"] == pytest.approx(0.5)
