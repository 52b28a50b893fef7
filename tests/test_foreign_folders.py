"""Commands never overwrite a folder or file that is not theirs: --report_only and training
refuse a results_dir that holds files of the table's names but no run records."""
import os
import time

import pytest

import main
from conftest import tiny_args
from configurator import resolve_config
from harness.records import write_record
from harness.tables import check_results_folder, rebuild_results
from test_results_records import finished_row


def user_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "index.html").write_text("<html><body>my own site</body></html>")
    (folder / "results.csv").write_text("name,value\nmine,1\n")
    (folder / "notes.txt").write_text("keep me")
    return folder


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_only_refuses_a_folder_without_run_records(tmp_path, capsys):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    assert main.main(tiny_args(tmp_path, report_only=True)) == 1
    err = capsys.readouterr().err
    assert f"'{folder}' holds no run records" in err
    assert "results.csv" in err and "index.html" in err and "nothing was written" in err
    assert snapshot(folder) == before  # nothing overwritten, nothing added


def test_report_only_on_an_empty_folder_writes_nothing(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert main.main(tiny_args(tmp_path, report_only=True)) == 1
    assert "holds no run records" in capsys.readouterr().err
    assert list((tmp_path / "results").iterdir()) == []


def test_training_refuses_a_results_dir_of_foreign_table_files(tmp_path):
    folder = user_folder(tmp_path)
    with pytest.raises(ValueError, match=r"holds results.csv, index.html, not written by this "
                                         r"project.*choose another results_dir"):
        check_results_folder(folder)


def test_a_results_folder_of_ours_is_accepted_and_rebuilt(tmp_path, capsys):
    cfg = resolve_config(tiny_args(tmp_path))
    write_record(cfg, tmp_path / "results" / "toy" / "seed0", finished_row("toy", 0, 0.75))
    rebuild_results(cfg, echo=False)
    (tmp_path / "results" / "toy" / "seed0" / "run.json").unlink()  # tables of ours, no record
    check_results_folder(tmp_path / "results")  # training may rebuild them (an older folder)
    with pytest.raises(ValueError, match="holds no run records"):
        check_results_folder(tmp_path / "results", report_only=True)


def test_report_only_removes_the_temp_files_of_a_killed_rebuild(tmp_path, capsys):
    cfg = resolve_config(tiny_args(tmp_path))
    write_record(cfg, tmp_path / "results" / "toy" / "seed0", finished_row("toy", 0, 0.75))
    stale = tmp_path / "results" / ".results.csv.abc123.tmp"
    stale.write_text("half a table")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert main.main(tiny_args(tmp_path, report_only=True)) == 0
    assert not stale.exists()


def test_a_failed_run_is_not_shown_with_an_earlier_runs_figures(tmp_path, monkeypatch, capsys):
    from layout import ClassFiles
    from harness import runs
    cfg = resolve_config(tiny_args(tmp_path))
    folder = tmp_path / "results" / "toy" / "seed0"
    write_record(cfg, folder, finished_row("toy", 0, 0.75))
    (folder / "misses").mkdir()
    old_files = [folder / n for n in ("auroc.png", "roc.png", "per_defect.csv", "history.csv")]
    old_files += [folder / "misses" / "lowest_scored_anomalous_01_a_000.png",
                  folder / "misses" / "misses.csv"]
    for path in old_files:
        path.write_bytes(b"earlier run")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    (folder / "notes.txt").write_text("mine")

    def fails(cfg, files, seed, device, base):
        (folder / "scores.png").write_bytes(b"this run")  # written before it failed: kept
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(runs, "train_and_report", fails)
    files = ClassFiles("toy", str(tmp_path / "data" / "toy"), [], [], None, [])
    row = runs.run_one(cfg, files, 0, "cpu")
    assert row["status"] == "failed: disk on fire"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "run.json", "scores.png"]
