"""Images with an EXIF orientation are used as stored (as in the reference code), and named in
one warning per class, since masks drawn on the displayed image would not line up."""
import warnings

import pytest
from PIL import Image

from data import exif_orientation, load_resized
from masks import checked_class_files
from prepare.demo import write_demo_class


def tag_orientation(path, value):
    image = Image.open(path)
    image.load()
    exif = Image.Exif()
    exif[0x0112] = value
    image.save(path, exif=exif)


@pytest.fixture
def class_dir(tmp_path):
    folder = tmp_path / "data" / "toy"
    write_demo_class(folder, seed=0, size=32, n_train=4, n_test_good=2, n_test_bad=2)
    return folder


def test_one_warning_per_class_names_the_rotated_images(class_dir, tmp_path):
    rotated = [class_dir / "train" / "good" / "000.JPG", class_dir / "test" / "good" / "001.JPG"]
    for path in rotated:
        tag_orientation(path, 6)
    with pytest.warns(UserWarning) as caught:
        checked_class_files(str(tmp_path / "data"), "toy", skip_bad=False)
    messages = [str(w.message) for w in caught if "EXIF" in str(w.message)]
    assert len(messages) == 1
    assert "class 'toy': 2 image(s) carry an EXIF orientation other than 1" in messages[0]
    assert f"'{rotated[0]}' (6)" in messages[0] and "not rotated" in messages[0]


def test_no_warning_for_orientation_1_and_pixels_are_read_as_stored(class_dir, tmp_path):
    path = class_dir / "train" / "good" / "000.JPG"
    before = load_resized(path, 32)
    tag_orientation(path, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checked_class_files(str(tmp_path / "data"), "toy", skip_bad=False)
    tag_orientation(path, 8)
    assert exif_orientation(path) == 8
    after = load_resized(path, 32)  # not rotated: the same pixels as stored (re-saved JPEG)
    assert after.shape == before.shape
    assert (after.float() - before.float()).abs().mean() < 8
