"""Outputs never become inputs: main.py refuses output folders in the data's class folders."""
import pytest

import main
from configurator import check_outputs_outside_data, resolve_config
from conftest import tiny_args
from layout import list_class


@pytest.mark.parametrize("setting, where", [
    ("results_dir", "data/toy/results"),
    ("checkpoint_dir", "data/toy/test/anomaly"),
    ("cache_mmap", "data/other/cache"),  # a class folder of dataset_path not being trained
])
def test_an_output_folder_in_a_class_folder_is_refused_before_anything_is_written(
        tmp_path, toy_class, capsys, setting, where):
    (tmp_path / "data" / "other" / "train").mkdir(parents=True)
    assert main.main(tiny_args(tmp_path, **{setting: str(tmp_path / where)})) == 1
    err = capsys.readouterr().err
    class_dir = (tmp_path / where).parents[len(where.split("/")) - 3]
    assert err.startswith(f"error: config '{setting}'='{tmp_path / where}' lies inside class "
                          f"folder '{class_dir}' of dataset_path")
    assert f"choose a {setting} outside the class folders of dataset_path" in err
    assert not (tmp_path / where).exists() or setting == "checkpoint_dir"
    assert not (tmp_path / "results").exists() and not (tmp_path / "ckpt").exists()


def test_dataset_path_itself_is_refused_as_an_output(tmp_path, toy_class, capsys):
    assert main.main(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "data"))) == 1
    assert "error: config 'checkpoint_dir' is dataset_path itself" in capsys.readouterr().err
    assert not (tmp_path / "data" / "toy" / "checkpoint.pt").exists()


def test_an_output_folder_beside_the_classes_is_fine(tmp_path, toy_class):
    cfg = resolve_config(tiny_args(tmp_path, results_dir=str(tmp_path / "data" / "results"),
                                   cache_mmap=str(tmp_path / "data" / "cache")))
    listed = list_class(cfg["dataset_path"], "toy")
    before = listed.train + listed.test + listed.masks
    assert check_outputs_outside_data(cfg) is None  # accepted
    (tmp_path / "data" / "results" / "toy" / "seed0").mkdir(parents=True)
    (tmp_path / "data" / "results" / "toy" / "seed0" / "auroc.png").write_bytes(b"png")
    listed = list_class(cfg["dataset_path"], "toy")
    assert listed.train + listed.test + listed.masks == before  # not the class's data
