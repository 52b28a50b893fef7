"""One run per output folder: locks, stale locks, clean-up after killed writes, interrupts."""
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_args

import main
from checkpoints import checkpoint_path, load_checkpoint
from harness.locks import LOCK_NAME, RunLockedError, acquire_lock, release_lock


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
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=1))
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
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    assert not any(p.exists() for p in leftovers)


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


def test_an_existing_checkpoint_is_never_overwritten_without_resume(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=2))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    before = open(ckpt, "rb").read()
    assert main.main(tiny_args(tmp_path, meta_epochs=2)) == 1
    err = capsys.readouterr().err
    assert f"error: checkpoint '{ckpt}' exists already; continue it with --resume=True" in err
    assert open(ckpt, "rb").read() == before


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


def test_a_run_refused_before_any_work_leaves_no_empty_folders(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    # a fresh results_dir, but the checkpoint exists and resume is off: refused after locking
    assert main.main(tiny_args(tmp_path, meta_epochs=1, results_dir=str(tmp_path / "R2"))) == 1
    assert "exists already" in capsys.readouterr().err
    assert not (tmp_path / "R2" / "toy").exists()
    assert (tmp_path / "ckpt" / "toy" / "seed0" / "checkpoint.pt").is_file()


def test_one_seed_and_several_seeds_of_a_class_share_one_lock(tmp_path, toy_class, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "ckpt" / "toy" / "seed0" / LOCK_NAME  # held by a one-seed run
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        assert main.main(tiny_args(tmp_path, seeds=[0, 1])) == 1
        assert "is in use by another run" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()


def test_a_lock_that_cannot_be_removed_is_a_warning_not_the_error(tmp_path, monkeypatch):
    path = acquire_lock(tmp_path / "run", "results_dir")

    def read_only(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(type(path), "unlink", read_only)
    with pytest.warns(UserWarning, match="could not remove the lock .*Permission denied"):
        release_lock(path)
