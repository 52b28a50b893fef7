"""One run per output folder: locks, stale locks (raced over), the tables' lock, clean-up after
killed writes, interrupts."""
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
from harness.tables import TABLES_LOCK, tables_lock
from helpers import lock_held_by_another_process


@pytest.mark.slow
def test_second_run_on_the_same_class_refuses_naming_the_first(tmp_path, toy_class, capsys):
    folder = tmp_path / "ckpt" / "toy" / "seed0"
    with lock_held_by_another_process(folder, ["main.py", "--meta_epochs=6"]) as other:
        owner = json.loads((folder / LOCK_NAME).read_text())
        assert main.main(tiny_args(tmp_path)) == 1
        err = capsys.readouterr().err
        assert (f"is in use by another run (pid {other.pid} on {socket.gethostname()}, "
                f"started {owner['started']}: main.py --meta_epochs=6)") in err
        assert "another checkpoint_dir" in err
        assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))  # nothing trained
        assert json.loads((folder / LOCK_NAME).read_text()) == owner  # the other run's lock kept


@pytest.mark.slow
def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, toy_class):
    lock = tmp_path / "ckpt" / "toy" / "seed0" / LOCK_NAME
    with lock_held_by_another_process(lock.parent) as killed:
        pass  # killed with SIGKILL while holding the lock: its file stays
    assert json.loads(lock.read_text())["pid"] == killed.pid
    with pytest.warns(UserWarning, match=f"taking over the stale lock .*pid {killed.pid} on "):
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=1))
    assert rows[0]["status"] == "ok" and not lock.exists()  # released at the end


RACER = """
import sys
sys.path.insert(0, sys.argv[1])
from harness.locks import RunLockedError, acquire_lock, release_lock
print("ready", flush=True)
input()  # the start signal, sent to every racer at once
try:
    lock = acquire_lock(sys.argv[2], "checkpoint_dir")
except RunLockedError:
    print("refused", flush=True)
    sys.exit(0)
print("won", flush=True)
sys.stdin.read()  # hold the lock until every racer has answered
release_lock(lock)
"""


def finish(process):
    """Wait for a process started with three pipes; its stderr."""
    if not process.stdin.closed:
        process.stdin.close()
    process.wait(30)
    err = process.stderr.read() if not process.stderr.closed else ""
    process.stdout.close()
    process.stderr.close()
    return err


@pytest.mark.slow  # starts processes
def test_processes_racing_over_a_stale_lock_exactly_one_wins(tmp_path):
    n_racers = 8  # with the earlier exclusive-create design, two of 8 won about once in 20 races
    folder = tmp_path / "run"
    with lock_held_by_another_process(folder) as killed:
        pass  # a stale lock file, left by a process killed while holding it
    racers = [subprocess.Popen([sys.executable, "-c", RACER, ROOT, str(folder)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(n_racers)]
    try:
        assert [r.stdout.readline() for r in racers] == ["ready\n"] * n_racers
        for racer in racers:
            racer.stdin.write("go\n")
            racer.stdin.flush()
        answers = [r.stdout.readline().strip() for r in racers]
        assert sorted(answers) == ["refused"] * (n_racers - 1) + ["won"]
        winner = racers[answers.index("won")]
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == winner.pid
        winner.stdin.close()  # lets it release and exit
        errors = {r.pid: finish(r) for r in racers}
        assert winner.returncode == 0 and not (folder / LOCK_NAME).exists()
        assert f"taking over the stale lock '{folder / LOCK_NAME}'" in errors.pop(winner.pid)
        assert f"pid {killed.pid} on" not in "".join(errors.values())  # nobody else took it over
    finally:
        for racer in racers:
            racer.kill()
            finish(racer)


@pytest.mark.slow
def test_lock_in_one_process_refuses_another_claim(tmp_path):
    path = acquire_lock(tmp_path / "run", "checkpoint_dir")
    assert acquire_lock(tmp_path / "run", "checkpoint_dir") == path  # held already: kept
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from harness.locks import acquire_lock; "
            "acquire_lock(sys.argv[2], 'checkpoint_dir')")
    out = subprocess.run([sys.executable, "-c", code, ROOT, str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "RunLockedError" in out.stderr
    assert f"in use by another run (pid {os.getpid()} on " in out.stderr
    release_lock(path)
    assert not path.exists() and not path.parent.exists()  # the emptied folder removed too
    out = subprocess.run([sys.executable, "-c", code, ROOT, str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr  # released: the next claim gets it, no warning
    assert "stale" not in out.stderr
    assert issubclass(RunLockedError, RuntimeError)


@pytest.mark.slow
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


@pytest.mark.slow
def test_results_folder_is_locked_too(tmp_path, toy_class, capsys):
    with lock_held_by_another_process(tmp_path / "results" / "toy" / "seed0"):
        assert main.main(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "elsewhere"))) == 1
        assert "another results_dir" in capsys.readouterr().err


@pytest.mark.slow
def test_an_existing_checkpoint_is_never_overwritten_without_resume(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=2))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    before = open(ckpt, "rb").read()
    assert main.main(tiny_args(tmp_path, meta_epochs=2)) == 1
    err = capsys.readouterr().err
    assert f"error: checkpoint '{ckpt}' exists already; continue it with --resume=True" in err
    assert open(ckpt, "rb").read() == before


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_refused_before_any_work_leaves_no_empty_folders(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    # a fresh results_dir, but the checkpoint exists and resume is off: refused after locking
    assert main.main(tiny_args(tmp_path, meta_epochs=1, results_dir=str(tmp_path / "R2"))) == 1
    assert "exists already" in capsys.readouterr().err
    assert not (tmp_path / "R2" / "toy").exists()
    assert (tmp_path / "ckpt" / "toy" / "seed0" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_one_seed_and_several_seeds_of_a_class_share_one_lock(tmp_path, toy_class, capsys):
    with lock_held_by_another_process(tmp_path / "ckpt" / "toy" / "seed0"):  # a one-seed run
        assert main.main(tiny_args(tmp_path, seeds=[0, 1])) == 1
        assert "is in use by another run" in capsys.readouterr().err


def test_a_lock_that_cannot_be_removed_is_a_warning_not_the_error(tmp_path, monkeypatch):
    path = acquire_lock(tmp_path / "run", "results_dir")

    def read_only(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(type(path), "unlink", read_only)
    with pytest.warns(UserWarning, match="could not remove the lock .*Permission denied"):
        release_lock(path)
    monkeypatch.undo()
    # released all the same: a new claim (a new open file, as another process has) gets it
    with pytest.warns(UserWarning, match=f"taking over the stale lock .*pid {os.getpid()} on "):
        assert acquire_lock(tmp_path / "run", "results_dir") == path
    release_lock(path)


@pytest.mark.slow  # starts a process
def test_a_rebuild_of_the_tables_waiting_is_told_for_whom(tmp_path):
    # the child takes the same lock as tables_lock does, without importing the table writers
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from harness.locks import held_lock\n"
            "with held_lock(sys.argv[2]): print('rebuilding', flush=True)")
    with tables_lock(tmp_path):
        waiting = subprocess.Popen([sys.executable, "-c", code, ROOT, str(tmp_path / TABLES_LOCK)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = waiting.stderr.readline()  # said before it waits
        assert line.startswith(f"waiting for the lock '{tmp_path / TABLES_LOCK}' held by pid "
                               f"{os.getpid()} on {socket.gethostname()}, started ")
        assert waiting.poll() is None  # still waiting while this process holds the lock
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out == "rebuilding\n"
    assert not (tmp_path / TABLES_LOCK).exists()
