"""evaluate.py into an --out used before: the previous target's metrics.csv and maps go (only
files it wrote), and a checkpoint folder given for the checkpoint is named as a folder."""
import pytest

import evaluate
import evaluate_outputs
from helpers import some_test_images


def test_earlier_outputs_of_ours_are_removed_and_the_users_files_stay(tmp_path):
    out = tmp_path / "out"
    (out / "maps" / "good").mkdir(parents=True)
    (out / "metrics.csv").write_text("auroc,aupr,f1_max,f1_threshold\n0.5,0.5,0.5,0.5\n")
    (out / "maps" / "good" / "000.JPG.png").write_bytes(b"png")
    (out / "maps" / "x.png.png").write_bytes(b"png")
    (out / "maps" / "my_notes.png").write_bytes(b"mine")  # not a map's name: not ours
    (out / "notes.txt").write_text("mine")
    evaluate_outputs.remove_earlier_outputs(out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        ["maps", "maps/my_notes.png", "notes.txt"]


def test_a_metrics_csv_we_did_not_write_stays(tmp_path):
    (tmp_path / "metrics.csv").write_text("name,value\n")
    evaluate_outputs.remove_earlier_outputs(tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == "name,value\n"


def test_a_checkpoint_folder_is_named_as_a_folder_with_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "ckpt" / "toy" / "seed0"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "img.png").write_bytes(b"")
    assert evaluate.main([str(tmp_path / "ckpt" / "toy"), str(tmp_path / "img.png"),
                          "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint '{tmp_path / 'ckpt' / 'toy'}' is a folder, not a checkpoint file; " \
           f"pass the checkpoint inside it: {run / 'checkpoint.pt'}" in err
    assert evaluate.main([str(tmp_path / "empty_missing"), str(tmp_path / "img.png")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_a_second_evaluation_into_the_same_out_leaves_nothing_of_the_first(tmp_path,
                                                                           finished_run):
    ckpt, out = str(finished_run.checkpoint), tmp_path / "out"
    test = some_test_images(finished_run.class_dir, tmp_path / "test", per_kind=3)
    assert evaluate.main([ckpt, str(test), "--out", str(out), "--maps=True"]) == 0
    assert (out / "metrics.csv").is_file() and len(list((out / "maps").rglob("*.png"))) == 6
    (out / "notes.txt").write_text("mine")
    image = sorted((test / "good").iterdir())[0]
    assert evaluate.main([ckpt, str(image), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "scores.csv"]


@pytest.mark.parametrize("value", ["yes", "1", "tru e"])
def test_a_wrong_maps_value_names_the_option_not_a_function(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "c.pt"), str(tmp_path), f"--maps={value}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --maps: expected True or False, got" in err
    assert "parse_bool" not in err


def test_a_foreign_scores_or_metrics_csv_in_out_is_refused_before_work(tmp_path, capsys):
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"")
    image = tmp_path / "img" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"")
    for name in ("scores.csv", "metrics.csv"):
        out = tmp_path / f"out_{name}"
        out.mkdir()
        (out / name).write_text("my,own\n1,2\n")
        assert evaluate.main([str(ckpt), str(image), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"--out '{out}' holds {name}, which evaluate.py did not write" in err
        assert (out / name).read_text() == "my,own\n1,2\n"
