"""Nothing lost, nothing cryptic: locks, owned folders, per-class failures, checks up front."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main
import harness.reports as reports
import train
from checkpoints import checkpoint_path, load_checkpoint
from conftest import ROOT, loss_that_turns_nan_at, tiny_args
from prepare.demo import ensure_demo_data, write_demo_class
from harness.locks import LOCK_NAME, RunLockedError, acquire_lock, release_lock
from configurator import resolve_config


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


def test_second_run_on_the_same_class_refuses_naming_the_first(tmp_path, toy_class, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "ckpt" / "toy" / "seed0" / LOCK_NAME
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(),
                                    "started": "2026-11-29 10:00:00",
                                    "command": "main.py --meta_epochs=6"}))
        assert main.main(tiny_args(tmp_path)) == 1
        err = capsys.readouterr().err
        assert f"is in use by another run (pid {other.pid} on {socket.gethostname()}" in err
        assert "main.py --meta_epochs=6" in err and "another checkpoint_dir" in err
        assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))  # nothing trained
        assert json.loads(lock.read_text())["pid"] == other.pid  # the other run's lock kept
    finally:
        other.kill()
        other.wait()


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, toy_class):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "ckpt" / "toy" / "seed0" / LOCK_NAME
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match="removing the stale lock"):
        rows = main.run(tiny_args(tmp_path, meta_epochs=1))
    assert rows[0]["status"] == "ok" and not lock.exists()  # released at the end


def test_lock_in_one_process_refuses_another_claim(tmp_path):
    path = acquire_lock(tmp_path / "run", "checkpoint_dir")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from harness.locks import acquire_lock; "
            "acquire_lock(sys.argv[2], 'checkpoint_dir')")
    out = subprocess.run([sys.executable, "-c", code, ROOT, str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "RunLockedError" in out.stderr
    release_lock(path)
    assert not path.exists()
    assert issubclass(RunLockedError, RuntimeError)


def test_temp_files_of_a_killed_write_are_removed_by_the_next_run(tmp_path, toy_class):
    leftovers = [tmp_path / "ckpt" / "toy" / "seed0" / ".checkpoint.pt.abc123.tmp",
                 tmp_path / "results" / "toy" / "seed0" / ".auroc.png.x1.tmp",
                 tmp_path / "results" / ".results.csv.y2.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
        os.utime(path, (1e9, 1e9))  # written long ago by a run that was killed
    main.run(tiny_args(tmp_path, meta_epochs=1))
    assert not any(p.exists() for p in leftovers)


def test_failure_in_the_reports_fails_that_class_only(tmp_path, toy_class, monkeypatch, capsys):
    write_demo_class(tmp_path / "data" / "toy2", 1, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    real = reports.class_reports

    def reports_that_break_for_toy(trained, cfg, device, out):
        if trained.state["class_name"] == "toy":
            raise RuntimeError("Input contains NaN")
        return real(trained, cfg, device, out)
    monkeypatch.setattr("harness.runs.class_reports", reports_that_break_for_toy)
    code = main.main(tiny_args(tmp_path, class_names=["toy", "toy2"], meta_epochs=1))
    err = capsys.readouterr().err
    assert code == 1
    assert "ERROR [toy] RuntimeError: Input contains NaN" in err
    assert "error: 1 of 2 run(s) failed: toy (seed 0)" in err
    table = (tmp_path / "results" / "results.csv").read_text()
    assert "failed: Input contains NaN" in table and table.count(",ok") == 1
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))["epoch"] == 1  # kept


def test_non_finite_scores_fail_the_class_without_claiming_a_checkpoint(tmp_path, toy_class,
                                                                       monkeypatch, capsys):
    monkeypatch.setattr(train, "anomaly_score", lambda z: torch.full(z.shape[:1], float("inf")))
    rows = main.run(tiny_args(tmp_path))
    err = capsys.readouterr().err
    assert rows[0]["status"] == "failed: non-finite test scores"
    assert "in meta epoch 1; no checkpoint was written" in err
    assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))


def test_zero_byte_mask_stops_before_training_or_is_skipped(tmp_path, toy_class, capsys):
    write_demo_class(tmp_path / "data" / "toy2", 1, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    bad = tmp_path / "data" / "toy2" / "ground_truth" / "anomaly" / "002.png"
    bad.write_bytes(b"")
    assert main.main(tiny_args(tmp_path, class_names=["toy", "toy2"], meta_epochs=1)) == 1
    assert f"error: cannot read mask '{bad}'" in capsys.readouterr().err
    assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))  # found before any work
    with pytest.warns(UserWarning, match="002.png"):
        rows = main.run(tiny_args(tmp_path, class_names=["toy2"], meta_epochs=1,
                                  skip_bad_images=True))
    assert rows[0]["status"] == "ok"
    assert rows[0]["skipped_images"] == 1 and rows[0]["test_anomalous"] == 2


def test_anomalous_images_without_mask_are_counted(tmp_path, toy_class):
    (toy_class / "ground_truth" / "anomaly" / "001.png").unlink()
    with pytest.warns(UserWarning, match="1 anomalous test image.*have no mask"):
        rows = main.run(tiny_args(tmp_path, meta_epochs=1))
    assert rows[0]["masks_missing"] == 1 and rows[0]["pixel_images"] == 11


def test_oversized_image_is_named_or_skipped(tmp_path, toy_class, monkeypatch, capsys):
    big = toy_class / "train" / "good" / "huge.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)  # 64 px images pass, 200 px do not
    assert main.main(tiny_args(tmp_path, meta_epochs=1)) == 1
    assert f"image '{big}' is too large to decode safely" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="huge.png"):
        rows = main.run(tiny_args(tmp_path, meta_epochs=1, skip_bad_images=True))
    assert rows[0]["skipped_images"] == 1 and rows[0]["train_images"] == 16


def test_resume_after_the_data_changed_is_refused_before_work(tmp_path, toy_class, capsys):
    main.run(tiny_args(tmp_path, meta_epochs=1))
    extra = toy_class / "train" / "good" / "extra.JPG"
    extra.write_bytes((toy_class / "train" / "good" / "000.JPG").read_bytes())
    assert main.main(tiny_args(tmp_path, meta_epochs=2, resume=True)) == 1
    err = capsys.readouterr().err
    assert "the data of 'toy' changed since checkpoint" in err
    assert "then train images 16, test normal 6" in err and "now train images 17" in err
    extra.unlink()
    (toy_class / "test" / "good" / "000.JPG").write_bytes(b"x" * 10)  # same count, other bytes
    assert main.main(tiny_args(tmp_path, meta_epochs=2, resume=True)) == 1
    assert "same counts, but files were added, removed, renamed or resized" in \
        capsys.readouterr().err
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))["epoch"] == 1


def test_extended_checkpoint_never_keeps_a_stale_threshold(tmp_path, toy_class, monkeypatch):
    main.run(tiny_args(tmp_path, meta_epochs=1))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    assert "threshold" in load_checkpoint(ckpt)
    # the resumed run's 2nd epoch (meta epoch 3) diverges: calls 1-2 are meta epoch 2
    monkeypatch.setattr(train, "nll_loss", loss_that_turns_nan_at(3, train.nll_loss))
    rows = main.run(tiny_args(tmp_path, meta_epochs=3, resume=True))
    state = load_checkpoint(ckpt)
    assert rows[0]["status"] == "failed: non-finite loss"
    assert state["epoch"] == 2 and "threshold" not in state and "metrics" not in state


def test_checkpoint_trained_further_than_asked_is_refused(tmp_path, toy_class, capsys):
    main.run(tiny_args(tmp_path, meta_epochs=2))
    assert main.main(tiny_args(tmp_path, meta_epochs=1, resume=True)) == 1
    assert "holds 2 meta epochs, more than meta_epochs=1" in capsys.readouterr().err


@pytest.mark.parametrize("arg, message", [
    ("--adam_betas=(0.8,)", "config 'adam_betas' must be two numbers in \\[0, 1\\)"),
    ("--adam_betas=(0.8, 1.0)", "config 'adam_betas' must be two numbers in \\[0, 1\\)"),
    ("--seeds=[-1]", "config 'seeds' must be a non-empty list of integers in \\[0, 4294967295\\]"),
    ("--seeds=[1099511627776]", "config 'seeds'"),
    ("--seeds=[]", "config 'seeds' must be a non-empty list"),
    ("--seeds=[1, 1]", "config 'seeds' must be a list without repeats"),
    ("--adam_eps=0", "config 'adam_eps' must be a finite number > 0"),
    ("--weight_decay=-1", "config 'weight_decay' must be a finite number >= 0"),
    ("--class_names=['../x']", "config 'class_names' must be a non-empty list of class folder"),
    ("--reference='imagenet'", "config 'reference' must be one of"),
    ("--n_misses=-2", "config 'n_misses' must be a finite number >= 0"),
])
def test_values_are_checked_in_shape_and_range(arg, message):
    with pytest.raises(ValueError, match=message):
        resolve_config([arg])


def test_old_seed_name_says_the_new_spelling():
    with pytest.raises(KeyError, match="'seed' is now 'seeds'.*--seeds=\\[N\\]"):
        resolve_config(["--seed=3"])


def test_preset_errors_name_file_and_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("img_size = 224\nn_scales = (2\n")
    with pytest.raises(ValueError, match=f"preset '{broken}', line 2: syntax error"):
        resolve_config([str(broken)])
    typo = tmp_path / "typo.py"
    typo.write_text("img_size = 224\n\nn_scales = two\n")
    with pytest.raises(ValueError, match=f"preset '{typo}', line 3: NameError: name 'two'"):
        resolve_config([str(typo)])


def test_preset_may_import_helpers_and_define_functions(tmp_path):
    preset = tmp_path / "helpers.py"
    preset.write_text("import math\nfrom os.path import join\n\n"
                      "def classes(prefix):\n    return [prefix + str(i) for i in range(2)]\n\n"
                      "class_names = classes('pcb')\nlr_init = 2e-4 * math.sqrt(4)\n"
                      "dataset_path = join('data', 'visa')\n")
    cfg = resolve_config([str(preset)])
    assert cfg["class_names"] == ["pcb0", "pcb1"] and cfg["lr_init"] == pytest.approx(4e-4)
    assert cfg["dataset_path"] == os.path.join("data", "visa")


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    if not files:
        pytest.skip("not a git checkout")
    outside = ".." + "/shared"  # spelled in two parts so that this file does not match itself
    offenders = [f for f in files.split() if f.endswith((".py", ".md", ".txt", ".csv", "run"))
                 and outside in open(os.path.join(ROOT, f), errors="ignore").read()]
    assert offenders == []


def test_evaluate_names_partial_or_incompatible_checkpoints(tmp_path, toy_class, capsys):
    import evaluate
    main.run(tiny_args(tmp_path, meta_epochs=1))
    state = load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if k != "backbone"}, partial)
    assert evaluate.main([str(partial), str(toy_class / "test"), "--out", str(tmp_path / "e")]) == 1
    assert f"error: checkpoint '{partial}' is incomplete (no backbone)" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({**state, "config": {**state["config"], "fc_internal": 16}}, other)
    assert evaluate.main([str(other), str(toy_class / "test"), "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert f"error: checkpoint '{other}' does not fit this version's model" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()  # a refused run creates no output folder


def test_evaluate_checks_its_output_before_work_and_reports_metrics(tmp_path, toy_class, capsys):
    import evaluate
    main.run(tiny_args(tmp_path, meta_epochs=1))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert evaluate.main([ckpt, str(toy_class / "test"), "--out", str(blocker / "out")]) == 1
    err = capsys.readouterr()
    assert "cannot write into" in err.err and "--out=PATH" in err.err and "score" not in err.out
    assert evaluate.main([ckpt, str(toy_class / "test"), "--out", str(tmp_path / "e")]) == 0
    assert "labels from the folder layout" in capsys.readouterr().out
    lines = (tmp_path / "e" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "auroc,aupr,f1_max,f1_threshold"
    values = [float(v) for v in lines[1].split(",")]
    assert all(0 <= v <= 1 for v in values[:3])
    assert values[0] == pytest.approx(load_checkpoint(ckpt)["auroc_history"][-1], abs=0.2)


def test_an_existing_checkpoint_is_never_overwritten_without_resume(tmp_path, toy_class, capsys):
    main.run(tiny_args(tmp_path, meta_epochs=2))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    before = open(ckpt, "rb").read()
    assert main.main(tiny_args(tmp_path, meta_epochs=2)) == 1
    err = capsys.readouterr().err
    assert f"error: checkpoint '{ckpt}' exists already; continue it with --resume=True" in err
    assert open(ckpt, "rb").read() == before


def test_results_folder_is_locked_too(tmp_path, toy_class, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "results" / "toy" / "seed0" / LOCK_NAME
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        assert main.main(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "elsewhere"))) == 1
        assert "another results_dir" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()


def test_unavailable_weights_stop_before_any_class(tmp_path, toy_class, capsys):
    assert main.main(tiny_args(tmp_path, weights_path=str(tmp_path / "none.pth"))) == 1
    assert "none.pth' not found" in capsys.readouterr().err
    assert not (tmp_path / "ckpt" / "toy").exists()


def test_outputs_get_ordinary_file_permissions(tmp_path, toy_class):
    main.run(tiny_args(tmp_path, meta_epochs=1))
    mask = os.umask(0)
    os.umask(mask)
    for path in (checkpoint_path(tmp_path / "ckpt", "toy", 0), tmp_path / "results" / "results.csv",
                 tmp_path / "results" / "toy" / "seed0" / "auroc.png"):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_dropout_and_evaluate_threshold_ranges(tmp_path, toy_class, capsys):
    import evaluate
    with pytest.raises(ValueError, match="config 'dropout' must be a probability in \\[0, 1\\)"):
        resolve_config(["--dropout=1.5"])
    main.run(tiny_args(tmp_path, meta_epochs=1))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    assert evaluate.main([ckpt, str(toy_class), "--threshold=nan", "--out",
                          str(tmp_path / "e")]) == 1
    assert "--threshold must be a finite number" in capsys.readouterr().err


def test_sigterm_ends_like_ctrl_c_and_releases_the_lock(tmp_path, toy_class):
    import signal
    import time
    args = tiny_args(tmp_path, meta_epochs=50)
    proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not os.path.exists(ckpt):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: every checkpoint written so far" in err
    assert not (tmp_path / "ckpt" / "toy" / "seed0" / LOCK_NAME).exists()
    assert not (tmp_path / "results" / "toy" / "seed0" / LOCK_NAME).exists()
    assert 1 <= load_checkpoint(ckpt)["epoch"] < 50
