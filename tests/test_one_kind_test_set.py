"""A test set of normal images only: one warning in the user's words, no internal ones."""
import shutil
import warnings

import pytest

import main
from conftest import tiny_args
from prepare.demo import write_demo_class


@pytest.mark.slow  # trains a tiny model
def test_a_good_only_test_set_gives_one_user_facing_warning(tmp_path):
    class_dir = tmp_path / "data" / "toy"
    write_demo_class(class_dir, 0, size=64, n_train=16, n_test_good=4, n_test_bad=4)
    for folder in (class_dir / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    shutil.rmtree(class_dir / "ground_truth", ignore_errors=True)
    (class_dir / "defects.csv").unlink(missing_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=1, make_demo_data=False,
                                        n_misses=2))
    messages = [str(w.message) for w in caught]
    assert rows[0]["status"] == "ok"
    assert len([m for m in messages if "holds only one kind of image" in m]) == 1
    assert not [m for m in messages if m.startswith(("image_metrics:", "PixelMetrics:"))]
