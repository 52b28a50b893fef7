"""The demo generator writes only folders it owns, aside first, and once."""
import os

import pytest

from prepare.demo import ensure_demo_data


def test_demo_generator_refuses_a_folder_it_did_not_write(tmp_path):
    user_class = tmp_path / "data" / "demo"
    (user_class / "train" / "good").mkdir(parents=True)
    precious = user_class / "train" / "good" / "000.JPG"
    precious.write_bytes(b"the user's own photograph")
    with pytest.raises(ValueError, match=f"'{user_class}' already exists and was not written by "
                                         f"the demo generator"):
        ensure_demo_data(tmp_path / "data", ["demo"])
    assert precious.read_bytes() == b"the user's own photograph"
    assert sorted(os.listdir(user_class / "train" / "good")) == ["000.JPG"]


def test_demo_generator_builds_aside_and_is_idempotent(tmp_path):
    ensure_demo_data(tmp_path / "data", ["demo"])
    first = (tmp_path / "data" / "demo" / "train" / "good" / "000.JPG").read_bytes()
    ensure_demo_data(tmp_path / "data", ["demo"])  # complete and ours: left alone
    assert (tmp_path / "data" / "demo" / "train" / "good" / "000.JPG").read_bytes() == first
    assert sorted(os.listdir(tmp_path / "data")) == ["demo"]  # no temp folder left
