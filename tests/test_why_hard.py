"""Why a class is hard: image AUROC per defect-area bin, group mean rows and the test-time
rotation curve, each checked against values computed by hand; a two-class toy run shows them
in results.csv, results.md and index.html, and --report_only makes them for finished runs."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import main
from configurator import resolve_config
from conftest import tiny_args
from helpers import read_csv
from harness.analysis_report import size_summary
from harness.groups import group_rows
from harness.per_size import area_bin, mask_area, per_size_rows
from harness.results import MEAN_KEYS


def test_per_size_rows_match_a_hand_computed_case():
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.15, 0.25, 0.35, 0.05, 0.4]
    areas = [None, None, None, 0.0005, 0.005, 0.005, 0.5, None]  # the last has no mask
    rows = {r[0]: [float(v) if v != "" else None for v in r[1:]]
            for r in per_size_rows(labels, scores, areas, threshold=0.3)}
    assert list(rows) == ["< 0.1 %", "0.1-1 %", "1-10 %", "> 10 %", "no mask"]
    # AUROC of one bin against all normal images = share of (anomalous, normal) pairs ordered;
    # columns: area_from, area_to, images, auroc, mean_score, below_threshold
    assert rows["< 0.1 %"] == pytest.approx([0.0, 0.001, 1, 1 / 3, 0.15, 1])  # beats 0.1 only
    assert rows["0.1-1 %"] == pytest.approx([0.001, 0.01, 2, 5 / 6, 0.3, 1])  # 0.25: 2, 0.35: 3
    assert rows["1-10 %"] == [0.01, 0.1, 0, None, None, None]
    assert rows["> 10 %"] == pytest.approx([0.1, float("inf"), 1, 0.0, 0.05, 1])
    assert rows["no mask"] == pytest.approx([None, None, 1, 1.0, 0.4, 0])
    assert "no mask" not in {r[0] for r in per_size_rows(labels[:5], scores[:5], areas[:5], None)}


def test_mask_area_and_bin_edges(tmp_path):
    mask = np.zeros((10, 20), np.uint8)
    mask[2, 3:8] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert mask_area(tmp_path / "m.png") == 5 / 200
    assert [area_bin(a) for a in (0.0, 0.00099, 0.001, 0.0999, 0.1, 1.0, None)] == \
        ["< 0.1 %", "< 0.1 %", "0.1-1 %", "1-10 %", "> 10 %", "> 10 %", "no mask"]


def test_group_rows_average_their_finished_classes_beside_the_reference():
    rows = [{"class": "pcb1", "auroc_last": 0.8, "aupr": 0.7},
            {"class": "pcb2", "auroc_last": 0.6, "aupr": 0.5},
            {"class": "candle", "auroc_last": 0.9, "aupr": None},
            {"class": "capsules", "auroc_last": None, "status": "failed: x"}]
    groups = group_rows(rows, MEAN_KEYS, "visa")
    assert [g["class"] for g in groups] == ["mean: VisA complex structure",
                                            "mean: VisA multiple instances"]
    complex_, multiple = groups
    assert complex_["auroc_last"] == pytest.approx(0.7) and complex_["aupr"] == pytest.approx(0.6)
    assert complex_["classes_in_mean"] == "2 of 4"
    assert complex_["reference_auroc"] == pytest.approx((0.9004 + 0.9825) / 2)
    assert multiple["auroc_last"] == 0.9 and multiple["aupr"] is None
    assert multiple["classes_in_mean"] == "1 of 4" and multiple["reference_auroc"] == 0.8825
    textures = [{"class": "grid", "auroc_last": 0.5}, {"class": "wood", "auroc_last": 0.7}]
    mvtec = group_rows(textures, MEAN_KEYS, "none")
    assert [(g["class"], g["auroc_last"], g["classes_in_mean"], g["reference_auroc"])
            for g in mvtec] == [("mean: MVTec AD textures", 0.6, "2 of 5", None)]


def test_per_size_tables_are_averaged_over_seeds(tmp_path):
    records = []
    for seed, auroc in ((0, 0.6), (1, 0.9)):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        (folder / "per_size.csv").write_text(
            "area_bin,area_from,area_to,images,auroc,mean_score,below_threshold\n"
            f"< 0.1 %,0.0,0.001,3,{auroc},1.0,1\n1-10 %,0.01,0.1,0,,,\n")
        records.append({"class": "c", "seed": seed, "folder": str(folder),
                        "row": {"status": "ok"}})
    row, = size_summary(records, ["c"])
    assert row["seeds"] == 2 and row["< 0.1 %"] == (0.75, float(np.std([0.6, 0.9], ddof=1)), 3)
    assert row["1-10 %"] == (None, None, 0)


@pytest.mark.parametrize("counts", [[0], [2, 2], [1.5]])
def test_a_bad_transforms_curve_is_refused_with_its_name(tmp_path, counts):
    with pytest.raises((ValueError, TypeError), match="transforms_curve"):
        resolve_config(tiny_args(tmp_path, transforms_curve=counts))


def hand_scores(model, images, n):
    """Each image scored at each of its n angles alone, then averaged here."""
    from scoring import score_images
    angles = [i * 360.0 / n for i in range(n)]
    per_angle = [score_images(model, images, torch.tensor([[a]] * len(images)), "cpu")
                 for a in angles]
    return np.mean(per_angle, axis=0)


@pytest.mark.slow
@pytest.mark.filterwarnings("error:the transforms curve's scores")
def test_two_class_toy_run_shows_groups_sizes_and_curve(tmp_path, toy_class):
    import evaluate
    from checkpoints import checkpoint_path, load_checkpoint
    from data import build_image_set
    from layout import find_class_files
    from prepare.demo import write_demo_class
    toy_class.rename(tmp_path / "data" / "pcb1")
    write_demo_class(tmp_path / "data" / "candle", 1, size=64, n_train=16, n_test_good=6,
                     n_test_bad=6)
    args = tiny_args(tmp_path, class_names=["pcb1", "candle"], make_demo_data=False,
                     reference="visa", test_rotations="fixed", meta_epochs=1)
    runs = {r["class"]: r for r in main.train_all(args)}
    results = tmp_path / "results"
    table = {r["class"]: r for r in read_csv(results / "results.csv")}
    group = table["mean: VisA complex structure"]
    assert float(group["auroc_last"]) == runs["pcb1"]["auroc_last"]
    assert group["classes_in_mean"] == "1 of 4" and float(group["reference_auroc"]) == 0.9004
    assert float(table["mean: VisA multiple instances"]["reference_auroc"]) == 0.8825
    md = (results / "results.md").read_text()
    assert "| mean: VisA multiple instances (1 of 4 classes) |" in md
    assert "## Image AUROC by defect area" in md and "## Test-time rotations" in md
    page = (results / "index.html").read_text()
    for text in ("mean: VisA complex structure (1 of 4 classes)", "pcb1/seed0/score_vs_area.png",
                 "pcb1/seed0/transforms_curve.png", "image AUROC by defect area",
                 "test-time rotations"):
        assert text in page, text
    out = results / "pcb1" / "seed0"
    # the curve: at the run's own count and fixed angles, the run's AUROC; elsewhere by hand
    ckpt = checkpoint_path(tmp_path / "ckpt", "pcb1", 0)
    state = load_checkpoint(ckpt)
    model, _, _ = evaluate.load_trained_model(ckpt, torch.device("cpu"))
    _, (paths, labels, masks) = find_class_files(tmp_path / "data", "pcb1")
    test_set = build_image_set(paths, labels, masks, 64)
    curve = {int(r["rotations"]): r for r in read_csv(out / "transforms_curve.csv")}
    assert list(curve) == [1, 2, 4]
    assert float(curve[4]["auroc"]) == runs["pcb1"]["auroc_last"] == float(curve[4]["run_auroc"])
    assert curve[1]["run_auroc"] == curve[2]["run_auroc"] == ""
    for n in (1, 2, 4):
        expected = roc_auc_score(labels, hand_scores(model, test_set.images, n))
        assert float(curve[n]["auroc"]) == pytest.approx(expected, abs=1e-6)
    # per size: areas from the masks, each bin's AUROC against all normal test images
    scores = state["test_scores"].numpy()
    areas = {r["image"]: float(r["defect_area"]) for r in read_csv(out / "defect_areas.csv")}
    assert len(areas) == int(labels.sum())
    for path, mask in zip(paths, masks):
        if mask is not None:
            truth = np.asarray(Image.open(mask).convert("L")) > 0
            assert areas[str(path)] == truth.mean()
    normal = scores[labels == 0]
    for row in read_csv(out / "per_size.csv"):
        own = [scores[i] for i, p in enumerate(paths)
               if labels[i] == 1 and area_bin(areas[str(p)]) == row["area_bin"]]
        assert int(row["images"]) == len(own)
        if own:
            expected = np.mean([(a > normal).mean() + 0.5 * (a == normal).mean() for a in own])
            assert float(row["auroc"]) == pytest.approx(expected, abs=1e-12)
    # --report_only makes them again for a run finished before they existed
    kept = (out / "per_size.csv").read_text()
    for name in ("per_size.csv", "defect_areas.csv", "score_vs_area.png",
                 "transforms_curve.csv", "transforms_curve.png"):
        (out / name).unlink()
    main.train_all(args + ["--report_only=True", "--transforms_curve=[2, 4]"])
    assert (out / "per_size.csv").read_text() == kept
    remade = {int(r["rotations"]): r for r in read_csv(out / "transforms_curve.csv")}
    assert list(remade) == [2, 4] and remade[4]["auroc"] == curve[4]["auroc"]
    assert remade[2]["auroc"] == curve[2]["auroc"] and (out / "score_vs_area.png").is_file()
    # candle's curve has other counts than asked: made again too
    assert [int(r["rotations"]) for r in read_csv(results / "candle" / "seed0" /
                                                   "transforms_curve.csv")] == [2, 4]
