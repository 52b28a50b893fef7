"""Entry points as shells and launchers call them: half-set torchrun environments and
output cut short by a closed pipe."""
import os
import subprocess
import sys

import pytest

import main
from conftest import ROOT

TORCHRUN = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize("present, missing", [
    (["WORLD_SIZE"], "RANK, MASTER_ADDR, MASTER_PORT"),
    (["RANK"], "WORLD_SIZE, MASTER_ADDR, MASTER_PORT"),
    (["WORLD_SIZE", "RANK", "MASTER_PORT"], "MASTER_ADDR"),
])
def test_half_set_launcher_environment_is_one_line_naming_what_is_missing(
        monkeypatch, capsys, present, missing):
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    for name in present:
        monkeypatch.setenv(name, TORCHRUN[name])
    assert main.main(["--device=cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: incomplete launcher environment: {', '.join(present)} set "
                          f"but {missing} missing; launch several processes with torchrun")
    assert len(err.strip().splitlines()) == 1


def test_single_process_environments_pass(monkeypatch):
    main.check_launcher_environment({})
    main.check_launcher_environment({"WORLD_SIZE": "1"})
    main.check_launcher_environment({"MASTER_ADDR": "10.0.0.1"})  # a cluster's profile
    main.check_launcher_environment(dict(TORCHRUN, LOCAL_RANK="0"))
    with pytest.raises(ValueError, match="RANK='x' is not a number"):
        main.check_launcher_environment(dict(TORCHRUN, RANK="x"))
    with pytest.raises(ValueError, match="RANK=2 and WORLD_SIZE=2 do not fit"):
        main.check_launcher_environment(dict(TORCHRUN, RANK="2"))
    with pytest.raises(ValueError, match="RANK=0 and WORLD_SIZE=0 do not fit"):
        main.check_launcher_environment(dict(TORCHRUN, WORLD_SIZE="0"))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["main.py", "--help"], ["evaluate.py", "--help"]])
def test_output_cut_short_by_a_closed_pipe_ends_quietly(command):
    child = subprocess.Popen([sys.executable, *command], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=dict(os.environ, COLUMNS="80"))
    child.stdout.close()  # the reader is gone before the child writes, as `| head` does
    err = child.stderr.read().decode()
    child.wait(timeout=120)
    assert err == "" and child.returncode in (0, 141)


def test_more_torchrun_processes_than_gpus_is_one_line():
    with pytest.raises(ValueError, match=r"LOCAL_RANK=2 on a machine with 2 GPU\(s\): one "
                                         r"process per GPU; use --nproc_per_node=2"):
        main.check_gpu_per_process(2, 2)
    main.check_gpu_per_process(1, 2)  # rank 1 of 2 has its GPU


def test_bf16_on_a_gpu_without_it_is_refused_once_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(main, "lacks_bf16", lambda device: True)  # as on a GPU before Ampere
    args = [f"--dataset_path={str(tmp_path / 'data')!r}", "--class_names=['toy']",
            "--make_demo_data=True", f"--results_dir={str(tmp_path / 'results')!r}",
            f"--checkpoint_dir={str(tmp_path / 'ckpt')!r}", "--device='cpu'", "--amp_bf16=True"]
    assert main.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config 'amp_bf16'=True, but device cpu has no bfloat16 support; "
                   "set --amp_bf16=False"]
    assert not any(tmp_path.iterdir())  # nothing written: no demo data, no output folders
