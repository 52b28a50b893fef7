"""reports.py on the session's finished toy run: per-defect table, worst misses, pixel metrics
(exact, masks at img_size, images without a mask left out) and figures written atomically."""
import csv
import errno
import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

import harness.reports as reports
import harness.figures as figures
from data import build_image_set
from layout import find_class_files
from prepare.demo import DEFECTS
from localization import gradient_map
from helpers import pixel_metrics, read_csv
from metrics import image_metrics
from scoring import evaluation_generator, score_set
from train import Trained

PNG = b"\x89PNG\r\n\x1a\n"
CPU = torch.device("cpu")


def copy_class(finished_run, tmp_path, name="toy"):
    """A fresh copy of the trained class's data, to be edited by the test."""
    shutil.copytree(finished_run.root / "data" / "toy", tmp_path / "data" / name)
    return tmp_path / "data" / name


def report(finished_run, tmp_path, name="toy", **extra):
    """class_reports on the class under tmp_path/data/name with the trained model."""
    cfg = dict(finished_run.cfg, dataset_path=str(tmp_path / "data"),
               **{"grad_map_viz": False, **extra})  # the shared run's maps: only when asked
    _, (paths, labels, masks) = find_class_files(cfg["dataset_path"], name)
    test_set = build_image_set(paths, labels, masks, cfg["img_size"])
    scores = score_set(finished_run.model, test_set.images, cfg, CPU, evaluation_generator(0, 0))
    state = {"test_scores": torch.from_numpy(scores), "threshold": finished_run.state["threshold"],
             "auroc_history": [0.5, float(image_metrics(labels, scores)["auroc"])],
             "class_name": name, "loss_history": [1.0, 0.5]}
    out = tmp_path / "results" / name
    run = Trained(finished_run.model, None, None, state, None, test_set, False)
    metrics = reports.class_reports(run, cfg, CPU, out)
    return metrics, state, test_set, scores, out


def test_per_defect_table_from_defects_csv(finished_run, tmp_path):
    class_dir = copy_class(finished_run, tmp_path)
    labelled = {f"{i:03d}": DEFECTS[i % 3] for i in range(1, 12)}  # 000 unlisted: folder name
    with open(class_dir / "defects.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "defect"]] + [[k, v] for k, v in labelled.items()])
    metrics, state, test_set, scores, out = report(finished_run, tmp_path, pixel_auroc=False)
    rows = {r["defect"]: r for r in read_csv(out / "per_defect.csv")}
    assert sorted(rows) == ["anomaly", "hole", "scratch", "stain"]
    assert [int(rows[d]["images"]) for d in ("anomaly", "hole", "scratch", "stain")] == [1, 4, 3, 4]
    normal = scores[test_set.labels == 0]
    for defect, row in rows.items():
        own = np.array([s for s, p in zip(scores, test_set.paths)
                        if "/anomaly/" in p and labelled.get(p[-7:-4], "anomaly") == defect])
        assert float(row["mean_score"]) == pytest.approx(own.mean())
        assert int(row["below_threshold"]) == int((own <= finished_run.state["threshold"]).sum())
        expected = np.mean([(a > n) + 0.5 * (a == n) for a in own for n in normal])
        assert float(row["auroc"]) == pytest.approx(expected)
    image = image_metrics(test_set.labels, scores)
    assert {k: metrics[k] for k in ("aupr", "f1_max", "f1_threshold")} == \
        {k: image[k] for k in ("aupr", "f1_max", "f1_threshold")}
    assert metrics["pixel_auroc"] is None
    for name in ("auroc.png", "roc.png", "scores.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_per_defect_types_from_mvtec_folders(finished_run, tmp_path):
    src = finished_run.root / "data" / "toy"
    dst = tmp_path / "data" / "mv"
    shutil.copytree(src / "train", dst / "train")
    shutil.copytree(src / "test" / "good", dst / "test" / "good")
    for i in range(12):
        defect = "crack" if i < 5 else "scratch"
        for sub in ("test", "ground_truth"):
            (dst / sub / defect).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "test" / "anomaly" / f"{i:03d}.JPG", dst / "test" / defect / f"{i:03d}.JPG")
        shutil.copy(src / "ground_truth" / "anomaly" / f"{i:03d}.png",
                    dst / "ground_truth" / defect / f"{i:03d}_mask.png")
    metrics, _, _, _, out = report(finished_run, tmp_path, name="mv")
    rows = read_csv(out / "per_defect.csv")
    assert [(r["defect"], r["images"]) for r in rows] == [("crack", "5"), ("scratch", "7")]
    assert metrics["pixel_images"] == 18 and metrics["masks_missing"] == 0
    # the same images and masks in other folders: the finished run's pixel metrics
    assert (metrics["pixel_auroc"], metrics["aupro"]) == pytest.approx(
        (finished_run.rows[0]["pixel_auroc"], finished_run.rows[0]["aupro"]), rel=1e-9)


def test_worst_misses_figures_and_table(finished_run, tmp_path):
    copy_class(finished_run, tmp_path)
    _, _, test_set, scores, out = report(finished_run, tmp_path, n_misses=3, pixel_auroc=False)
    figures = sorted(p for p in (out / "misses").iterdir() if p.suffix == ".png")
    assert len(figures) == 6 and all(p.read_bytes()[:8] == PNG for p in figures)
    rows = read_csv(out / "misses" / "misses.csv")
    assert [(r["kind"], int(r["rank"])) for r in rows] == \
        [("lowest_scored_anomalous", k) for k in (1, 2, 3)] + \
        [("highest_scored_normal", k) for k in (1, 2, 3)]
    anomalous = np.sort(scores[test_set.labels == 1])
    normal = np.sort(scores[test_set.labels == 0])[::-1]
    assert [float(r["score"]) for r in rows[:3]] == pytest.approx(anomalous[:3].tolist())
    assert [float(r["score"]) for r in rows[3:]] == pytest.approx(normal[:3].tolist())
    for r in rows:
        i = test_set.paths.index(r["image"])
        assert float(r["score"]) == pytest.approx(scores[i])
        assert r["defect"] == ("anomaly" if r["kind"] == "lowest_scored_anomalous" else "good")
        assert float(r["threshold"]) == pytest.approx(finished_run.state["threshold"])
        # the lowest-scored anomalous images are not all missed: the column says which are
        assert r["vs_threshold"] == ("above" if scores[i] > finished_run.state["threshold"] else "below")
        assert (out / "misses" / r["figure"]).read_bytes()[:8] == PNG


def test_misses_and_maps_of_an_earlier_run_are_replaced(finished_run, tmp_path):
    copy_class(finished_run, tmp_path)
    _, _, _, _, out = report(finished_run, tmp_path, n_misses=3, pixel_auroc=False,
                             grad_map_viz=True)
    assert len(list((out / "maps").glob("*.png"))) == 12
    (out / "misses" / "notes.txt").write_text("mine")  # not ours: stays
    report(finished_run, tmp_path, n_misses=1, pixel_auroc=False)
    assert len(list((out / "misses").glob("*.png"))) == 2
    assert len(read_csv(out / "misses" / "misses.csv")) == 2
    assert not (out / "maps").exists()
    report(finished_run, tmp_path, n_misses=0, pixel_auroc=False)
    assert sorted(p.name for p in (out / "misses").iterdir()) == ["notes.txt"]


def test_defects_csv_with_a_byte_order_mark_keeps_the_breakdown(finished_run, tmp_path):
    class_dir = copy_class(finished_run, tmp_path)
    rows = "image,defect\r\n" + "".join(f"{i:03d},hole\r\n" for i in range(12))
    (class_dir / "defects.csv").write_text(rows, encoding="utf-8-sig")  # as spreadsheets save
    report(finished_run, tmp_path, n_misses=0, pixel_auroc=False)
    out = tmp_path / "results" / "toy"
    rows = read_csv(out / "per_defect.csv")
    assert [(r["defect"], r["images"]) for r in rows] == [("hole", "12")]


def test_history_and_divergence_come_with_the_reports(finished_run, tmp_path):
    copy_class(finished_run, tmp_path)
    metrics, _, _, _, out = report(finished_run, tmp_path, n_misses=0, pixel_auroc=False)
    assert metrics["divergence"] is None
    assert [r["meta_epoch"] for r in read_csv(out / "history.csv")] == ["1", "2"]


def test_anomalous_image_without_mask_is_left_out_of_pixel_metrics(finished_run, tmp_path):
    class_dir = copy_class(finished_run, tmp_path)
    os.remove(class_dir / "ground_truth" / "anomaly" / "004.png")
    metrics, _, test_set, _, _ = report(finished_run, tmp_path, n_misses=0)
    assert metrics["masks_missing"] == 1 and metrics["pixel_images"] == 17
    size = finished_run.cfg["img_size"]
    maps, masks = [], []
    for image, label, mask_path in zip(test_set.images, test_set.labels, test_set.mask_paths):
        if label == 1 and mask_path is None:
            continue
        maps.append(gradient_map(finished_run.model, image, finished_run.cfg["n_transforms_test"], CPU))
        masks.append(np.zeros((size, size), bool) if mask_path is None else
                     np.asarray(Image.open(mask_path).resize((size, size), Image.NEAREST)) > 0)
    expected = pixel_metrics([m.numpy() for m in maps], masks)
    assert metrics["pixel_auroc"] == pytest.approx(expected["pixel_auroc"], abs=1e-6)
    assert metrics["aupro"] == pytest.approx(expected["aupro"], abs=1e-6)
    assert metrics["pixel_auroc"] > 0.8  # the planted defects are found


def test_pixel_metrics_off_or_without_masks(finished_run, tmp_path):
    class_dir = copy_class(finished_run, tmp_path)
    shutil.rmtree(class_dir / "ground_truth")
    metrics, _, _, _, out = report(finished_run, tmp_path, n_misses=1)
    assert metrics["pixel_auroc"] is None and metrics["aupro"] is None
    assert metrics["pixel_images"] == 0 and metrics["masks_missing"] == 12
    assert len(list((out / "misses").glob("*.png"))) == 2


def test_save_figure_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "results" / "toy" / "seed0" / "roc.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    figures.save_figure(fig, path)
    before = path.read_bytes()
    assert before[:8] == PNG

    def full_disk(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG + b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plt.Figure, "savefig", full_disk)
    fig, ax = plt.subplots()
    with pytest.raises(OSError) as e:
        figures.save_figure(fig, path)
    message = str(e.value)
    assert f"cannot write '{path}'" in message and "No space left on device" in message
    assert "results_dir" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["roc.png"]
