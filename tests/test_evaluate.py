"""evaluate.py as a deployed scorer: a score depends on its image only, the threshold is
comparable with it, every image keeps its own map, and outputs are never scored."""
import csv
import shutil

import numpy as np
import pytest
import torch

import evaluate
from helpers import some_test_images
from data import load_resized
from localization import gradient_map


def scores_of(run, target, out, *extra):
    assert evaluate.main([str(run.checkpoint), str(target), "--out", str(out), *extra]) == 0
    with open(out / "scores.csv") as f:
        return {row["image"]: float(row["score"]) for row in csv.DictReader(f)}


def test_a_score_does_not_depend_on_the_other_files(finished_run, tmp_path):
    folder = finished_run.class_dir / "test" / "anomaly"
    image = sorted(folder.iterdir())[-1]
    alone = scores_of(finished_run, image, tmp_path / "alone")[str(image)]
    in_folder = scores_of(finished_run, folder, tmp_path / "folder")[str(image)]
    pair = tmp_path / "pair"
    pair.mkdir()
    shutil.copy(image, pair / "b.png")
    shutil.copy(sorted((finished_run.class_dir / "test" / "good").iterdir())[0], pair / "a.png")
    beside_one = scores_of(finished_run, pair, tmp_path / "pair_out")[str(pair / "b.png")]
    assert alone == in_folder == beside_one


def test_stored_threshold_uses_the_rotations_new_images_are_scored_with(finished_run, tmp_path):
    train_scores = scores_of(finished_run, finished_run.class_dir / "train" / "good",
                             tmp_path / "e")
    state = finished_run.state
    expected = np.percentile(list(train_scores.values()), state["config"]["threshold_percentile"])
    assert state["threshold"] == pytest.approx(expected, rel=1e-6)


def test_every_image_keeps_its_own_map(finished_run, tmp_path):
    source = sorted((finished_run.class_dir / "test" / "anomaly").iterdir())
    folder = tmp_path / "images"
    (folder / "good").mkdir(parents=True)
    for image, name in zip(source, ("good/x.jpg", "good/x.png", "good_x.png", "good/y.png")):
        shutil.copy(image, folder / name)
    out = tmp_path / "out"
    assert len(scores_of(finished_run, folder, out, "--maps=True")) == 4
    maps = sorted(str(p.relative_to(out / "maps")) for p in (out / "maps").rglob("*.png"))
    assert maps == ["good/x.jpg.png", "good/x.png.png", "good/y.png.png", "good_x.png.png"]


@pytest.mark.parametrize("inside", ["eval", "."])
def test_a_rerun_never_scores_its_own_outputs(finished_run, tmp_path, inside):
    folder = some_test_images(finished_run.class_dir, tmp_path / "images")
    out = folder / inside
    first = scores_of(finished_run, folder, out, "--maps=True")
    second = scores_of(finished_run, folder, out, "--maps=True")
    assert len(first) == 4 and list(second) == list(first)
    assert len(list((out / "maps").rglob("*.png"))) == 4


def test_the_maps_of_an_earlier_run_elsewhere_in_the_folder_are_not_scored(finished_run, tmp_path):
    folder = some_test_images(finished_run.class_dir, tmp_path / "images")
    first = scores_of(finished_run, folder, folder / "eval1", "--maps=True")
    scores_csv = folder / "eval1" / "scores.csv"  # as a spreadsheet saves it again
    scores_csv.write_bytes(b"\xef\xbb\xbf" + scores_csv.read_bytes().replace(b"\r\n", b"\n")
                           .replace(b"\n", b"\r\n"))
    second = scores_of(finished_run, folder, tmp_path / "eval2", "--maps=True")
    assert list(second) == list(first) and len(first) == 4


def test_evaluate_scores_a_folder_applies_threshold_and_reports_bad_files(finished_run, tmp_path,
                                                                        capsys):
    folder = tmp_path / "new"
    shutil.copytree(finished_run.class_dir / "test", folder)
    (folder / "anomaly" / "fake.png").write_text("not an image")
    (folder / "notes.txt").write_text("ignored")
    ckpt = finished_run.checkpoint
    out = tmp_path / "eval"
    assert evaluate.main([ckpt, str(folder), "--out", str(out), "--maps=True"]) == 0
    printed = capsys.readouterr()
    assert "fake.png" in printed.err and "cannot read image" in printed.err
    assert "skip_bad_images" not in printed.err  # main.py's option means nothing here
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and not any("fake" in r["image"] for r in rows)
    threshold = finished_run.state["threshold"]
    for r in rows:
        assert float(r["threshold"]) == pytest.approx(threshold, rel=1e-5)
        assert r["verdict"] == ("anomalous" if float(r["score"]) > float(r["threshold"]) else "normal")
    assert sum(r["verdict"] == "anomalous" for r in rows if "/anomaly/" in r["image"]) >= 10
    maps = sorted(str(p.relative_to(out / "maps")) for p in (out / "maps").rglob("*.png"))
    assert len(maps) == 18 and maps[0] == "anomaly/000.JPG.png" and maps[-1] == "good/005.JPG.png"
    assert evaluate.main([ckpt, str(folder), "--out", str(out), "--threshold=1e9"]) == 0
    with open(out / "scores.csv") as f:
        assert all(r["verdict"] == "normal" for r in csv.DictReader(f))


def test_a_map_comes_from_the_rotations_of_the_score(finished_run):
    image = sorted((finished_run.class_dir / "test" / "anomaly").iterdir())[0]
    expected = gradient_map(finished_run.model, load_resized(image, 64), 4, torch.device("cpu"))
    heat = evaluate.map_of(finished_run.model, finished_run.cfg, image, torch.device("cpu"))
    assert finished_run.cfg["n_transforms_test"] == 4 and torch.equal(heat, expected)
