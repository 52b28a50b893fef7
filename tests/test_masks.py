"""Ground-truth masks as users' tools write them: transparency, empty masks, masks of another
shape than their image; every warning names the class and counts correctly."""
import warnings

import numpy as np
import pytest
from PIL import Image

import main
from conftest import tiny_args
from localization import mask_at
from masks import checked_class_files


def warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught]


def test_every_non_zero_mask_value_is_a_defect_pixel(tmp_path):
    values = np.zeros((4, 4), np.uint8)
    values[0, :] = [1, 2, 7, 255]  # VisA's class ids 1..K and the usual 255
    Image.fromarray(values).save(tmp_path / "mask.png")
    assert np.array_equal(mask_at(str(tmp_path / "mask.png"), 4), values > 0)


def test_transparent_masks_read_like_grey_ones(tmp_path):
    truth = np.zeros((16, 16), bool)
    truth[3:9, 5:12] = True
    grey = np.where(truth, 255, 0).astype(np.uint8)
    black = np.zeros_like(grey)
    white = np.full_like(grey, 255)
    files = {"grey.png": Image.fromarray(grey),
             "alpha_only.png": Image.fromarray(np.dstack([black, black, black, grey]), "RGBA"),
             "white_on_clear.png": Image.fromarray(np.dstack([white, white, white, grey]), "RGBA"),
             "la.png": Image.fromarray(np.dstack([grey, white]), "LA")}
    for name, image in files.items():
        image.save(tmp_path / name)
        assert np.array_equal(mask_at(str(tmp_path / name), 16), truth), name


def test_masks_of_another_aspect_are_named(toy_class):
    mask = toy_class / "ground_truth" / "anomaly" / "002.png"
    with Image.open(mask) as m:
        m.resize((48, 80), Image.NEAREST).save(mask)
    same_shape_other_size = toy_class / "ground_truth" / "anomaly" / "003.png"
    with Image.open(same_shape_other_size) as m:
        m.resize((32, 32), Image.NEAREST).save(same_shape_other_size)
    files, messages = warnings_of(
        lambda: checked_class_files(toy_class.parent, "toy", skip_bad=False))
    masks = files.masks
    image = toy_class / "test" / "anomaly" / "002.JPG"
    assert messages == [f"1 mask(s) of 'toy' have another aspect ratio than their image and are "
                        f"stretched to it for the pixel metrics: mask '{mask}' 48x80 for image "
                        f"'{image}' 64x64. Check that each mask belongs to its image"]
    assert str(mask) in masks


def test_empty_masks_count_as_missing_and_every_warning_names_the_class(toy_class):
    empty = toy_class / "ground_truth" / "anomaly" / "001.png"
    Image.new("L", (64, 64), 0).save(empty)
    (toy_class / "ground_truth" / "anomaly" / "004.png").unlink()
    files, messages = warnings_of(
        lambda: checked_class_files(toy_class.parent, "toy", skip_bad=False))
    labels, masks = files.labels, files.masks
    assert str(empty) not in masks
    assert sum(m is None for m, label in zip(masks, labels) if label == 1) == 2
    assert messages == [
        f"1 mask(s) of 'toy' mark no defect pixel (all zero after transparency; defects must be "
        f"non-zero): '{empty}'; their images count as without mask",
        "2 anomalous test image(s) of 'toy' have no mask in ground_truth/ (or one that marks no "
        "defect); the pixel metrics cover only the 4 that have one"]


def test_a_class_without_any_mask_says_so(toy_class):
    for mask in (toy_class / "ground_truth" / "anomaly").iterdir():
        mask.unlink()
    _, messages = warnings_of(lambda: checked_class_files(toy_class.parent, "toy", False))
    assert messages == ["6 anomalous test image(s) of 'toy' have no mask in ground_truth/ (or one "
                        "that marks no defect); pixel AUROC and AUPRO are n/a"]


@pytest.mark.slow
def test_empty_and_transparent_masks_in_a_run(tmp_path, toy_class):
    Image.new("L", (64, 64), 0).save(toy_class / "ground_truth" / "anomaly" / "000.png")
    transparent = toy_class / "ground_truth" / "anomaly" / "001.png"
    with Image.open(transparent) as m:
        grey = np.asarray(m.convert("L"))
    Image.fromarray(np.dstack([np.zeros_like(grey)] * 3 + [grey]), "RGBA").save(transparent)
    with pytest.warns(UserWarning, match="1 anomalous test image.* of 'toy'"):
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=1, n_misses=0))
    assert rows[0]["masks_missing"] == 1 and rows[0]["pixel_images"] == 11
    Image.fromarray(grey).save(transparent)  # the same mask in grey: the same pixel metrics
    with pytest.warns(UserWarning, match="1 anomalous test image.* of 'toy'"):
        grey_rows = main.train_all(tiny_args(tmp_path, meta_epochs=1, n_misses=0,
                                             checkpoint_dir=str(tmp_path / "grey_ckpt"),
                                             results_dir=str(tmp_path / "grey_results")))
    assert (rows[0]["pixel_auroc"], rows[0]["aupro"]) == \
        (grey_rows[0]["pixel_auroc"], grey_rows[0]["aupro"])
    assert rows[0]["pixel_auroc"] > 0.6  # the planted defects are found (a constant map: 0.5)
