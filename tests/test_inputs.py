"""Bad class folders, images and masks: found before training, named, or skipped and counted."""
import os
import shutil

import numpy as np
import pytest
from conftest import tiny_args
from PIL import Image

import main
from checkpoints import checkpoint_path
from prepare.demo import write_demo_class


def test_missing_class_folder_is_reported_before_training(tmp_path, toy_class, capsys):
    code = main.main(tiny_args(tmp_path, class_names=["toy", "candle"], make_demo_data=False))
    err = capsys.readouterr().err
    assert code == 1
    assert "class folder of 'candle'" in err and "prepare_visa.py" in err
    assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))  # nothing trained
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_test_set_without_anomalies_gives_na_not_a_crash(tmp_path, toy_class):
    shutil.rmtree(toy_class / "test" / "anomaly")
    shutil.rmtree(toy_class / "ground_truth")
    with pytest.warns(UserWarning, match="AUROC is undefined"):
        rows = main.train_all(tiny_args(tmp_path))
    assert rows[0]["auroc_last"] != rows[0]["auroc_last"]  # NaN
    assert "| toy | n/a | n/a |" in (tmp_path / "results" / "results.md").read_text()


@pytest.mark.slow
def test_corrupt_image_stops_or_is_skipped_and_counted(tmp_path, toy_class, capsys):
    (toy_class / "train" / "good" / "broken.JPG").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main.main(tiny_args(tmp_path)) == 1
    assert "broken.JPG" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="broken.JPG"):
        rows = main.train_all(tiny_args(tmp_path, skip_bad_images=True))
    assert rows[0]["skipped_images"] == 1 and rows[0]["train_images"] == 16


@pytest.mark.slow
def test_zero_byte_mask_stops_before_training_or_is_skipped(tmp_path, toy_class, capsys):
    write_demo_class(tmp_path / "data" / "toy2", 1, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    bad = tmp_path / "data" / "toy2" / "ground_truth" / "anomaly" / "002.png"
    bad.write_bytes(b"")
    assert main.main(tiny_args(tmp_path, class_names=["toy", "toy2"], meta_epochs=1)) == 1
    assert f"error: cannot read mask '{bad}'" in capsys.readouterr().err
    assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))  # found before any work
    with pytest.warns(UserWarning, match="002.png"):
        rows = main.train_all(tiny_args(tmp_path, class_names=["toy2"], meta_epochs=1,
                                  skip_bad_images=True))
    assert rows[0]["status"] == "ok"
    assert rows[0]["skipped_images"] == 1 and rows[0]["test_anomalous"] == 2


@pytest.mark.slow
def test_anomalous_images_without_mask_are_counted(tmp_path, toy_class):
    (toy_class / "ground_truth" / "anomaly" / "001.png").unlink()
    with pytest.warns(UserWarning, match="1 anomalous test image.*have no mask"):
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=1))
    assert rows[0]["masks_missing"] == 1 and rows[0]["pixel_images"] == 11


@pytest.mark.slow
def test_oversized_image_is_named_or_skipped(tmp_path, toy_class, monkeypatch, capsys):
    big = toy_class / "train" / "good" / "huge.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)  # 64 px images pass, 200 px do not
    assert main.main(tiny_args(tmp_path, meta_epochs=1)) == 1
    assert f"image '{big}' is too large to decode safely" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="huge.png"):
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=1, skip_bad_images=True))
    assert rows[0]["skipped_images"] == 1 and rows[0]["train_images"] == 16
