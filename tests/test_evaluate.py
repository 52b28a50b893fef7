"""evaluate.py as a deployed scorer: a score depends on its image only, the threshold is
comparable with it, every image keeps its own map, and outputs are never scored."""
import csv
import shutil

import numpy as np
import pytest

import evaluate
import main
from checkpoints import checkpoint_path, load_checkpoint
from conftest import tiny_args
from prepare.demo import write_demo_class


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    write_demo_class(tmp / "data" / "toy", 0, size=64, n_train=16, n_test_good=4, n_test_bad=4)
    main.train_all(tiny_args(tmp, meta_epochs=1, make_demo_data=False, pixel_auroc=False, n_misses=0))
    return dict(class_dir=tmp / "data" / "toy", ckpt=checkpoint_path(tmp / "ckpt", "toy", 0))


def scores_of(trained, target, out, *extra):
    assert evaluate.main([trained["ckpt"], str(target), "--out", str(out), *extra]) == 0
    with open(out / "scores.csv") as f:
        return {row["image"]: float(row["score"]) for row in csv.DictReader(f)}


def test_a_score_does_not_depend_on_the_other_files(trained, tmp_path):
    folder = trained["class_dir"] / "test" / "anomaly"
    image = sorted(folder.iterdir())[-1]
    alone = scores_of(trained, image, tmp_path / "alone")[str(image)]
    in_folder = scores_of(trained, folder, tmp_path / "folder")[str(image)]
    pair = tmp_path / "pair"
    pair.mkdir()
    shutil.copy(image, pair / "b.png")
    shutil.copy(sorted((trained["class_dir"] / "test" / "good").iterdir())[0], pair / "a.png")
    beside_one = scores_of(trained, pair, tmp_path / "pair_out")[str(pair / "b.png")]
    assert alone == in_folder == beside_one


def test_stored_threshold_uses_the_rotations_new_images_are_scored_with(trained, tmp_path):
    train_scores = scores_of(trained, trained["class_dir"] / "train" / "good", tmp_path / "e")
    state = load_checkpoint(trained["ckpt"])
    expected = np.percentile(list(train_scores.values()), state["config"]["threshold_percentile"])
    assert state["threshold"] == pytest.approx(expected, rel=1e-6)


def test_every_image_keeps_its_own_map(trained, tmp_path):
    source = sorted((trained["class_dir"] / "test" / "anomaly").iterdir())
    folder = tmp_path / "images"
    (folder / "good").mkdir(parents=True)
    for image, name in zip(source, ("good/x.jpg", "good/x.png", "good_x.png", "good/y.png")):
        shutil.copy(image, folder / name)
    out = tmp_path / "out"
    assert len(scores_of(trained, folder, out, "--maps=True")) == 4
    maps = sorted(str(p.relative_to(out / "maps")) for p in (out / "maps").rglob("*.png"))
    assert maps == ["good/x.jpg.png", "good/x.png.png", "good/y.png.png", "good_x.png.png"]


@pytest.mark.parametrize("inside", ["eval", "."])
def test_a_rerun_never_scores_its_own_outputs(trained, tmp_path, inside):
    folder = tmp_path / "images"
    shutil.copytree(trained["class_dir"] / "test", folder)
    out = folder / inside
    first = scores_of(trained, folder, out, "--maps=True")
    second = scores_of(trained, folder, out, "--maps=True")
    assert len(first) == 8 and list(second) == list(first)
    assert len(list((out / "maps").rglob("*.png"))) == 8


def test_the_maps_of_an_earlier_run_elsewhere_in_the_folder_are_not_scored(trained, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(trained["class_dir"] / "test", folder)
    first = scores_of(trained, folder, folder / "eval1", "--maps=True")
    scores_csv = folder / "eval1" / "scores.csv"  # as a spreadsheet saves it again
    scores_csv.write_bytes(b"\xef\xbb\xbf" + scores_csv.read_bytes().replace(b"\r\n", b"\n")
                           .replace(b"\n", b"\r\n"))
    second = scores_of(trained, folder, tmp_path / "eval2", "--maps=True")
    assert list(second) == list(first) and len(first) == 8
