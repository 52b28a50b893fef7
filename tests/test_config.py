"""Overrides of config.py and their errors, caught before any work."""
import os
import subprocess
import sys

import pytest

import config
from configurator import resolve_config
from conftest import ROOT


def test_defaults_reproduce_the_spec():
    cfg = resolve_config([])
    spec = dict(img_size=448, n_scales=3, clamp_alpha=3.0, n_coupling_blocks=8, fc_internal=2048,
                dropout=0.0, lr_init=2e-4, adam_betas=(0.8, 0.8), adam_eps=1e-4,
                weight_decay=1e-5, n_transforms=4, n_transforms_test=64, batch_size=24,
                meta_epochs=24, sub_epochs=8, transf_rotations=True, transf_brightness=0.0,
                transf_contrast=0.0, transf_saturation=0.0, test_rotations="random",
                pretrained=True, n_feat=768)
    assert {k: cfg[k] for k in spec} == spec
    assert len(cfg["class_names"]) == 12
    assert cfg["threshold_percentile"] == 99.0  # this repository's verdicts (docs/method.md)


def test_overrides_and_preset(tmp_path):
    preset = tmp_path / "p.py"
    preset.write_text("img_size = 224\nn_scales = 2\nclass_names = ['pcb1']\n")
    cfg = resolve_config([str(preset), "--class_names=['candle', 'pcb2']", "--lr_init=1",
                          "--device=cpu", "--pretrained=False"])
    assert cfg["img_size"] == 224 and cfg["class_names"] == ["candle", "pcb2"]
    assert cfg["lr_init"] == 1.0 and isinstance(cfg["lr_init"], float)
    assert cfg["device"] == "cpu" and cfg["pretrained"] is False
    assert config.img_size == 448  # the module itself is never modified


@pytest.mark.parametrize("arg, error, message", [
    ("--img_sise=224", KeyError, "unknown config name 'img_sise'"),
    ("--img_size='big'", TypeError, "config 'img_size': expected int"),
    ("--pretrained=1", TypeError, "config 'pretrained': expected bool"),
    ("--class_names='candle'", TypeError, "config 'class_names': expected list"),
    ("--batch_size=0", ValueError, "'batch_size' must be a positive integer"),
    ("--n_transforms_test=-4", ValueError, "'n_transforms_test' must be a positive integer"),
    ("--img_size=200", ValueError, "smallest scale of 50 px.*raise img_size to 252"),
    ("--test_rotations='spiral'", ValueError, "'test_rotations' must be one of"),
    ("--device='tpu'", ValueError, "config 'device'"),
    ("img_size=3", ValueError, "use --name=value"),
    ("missing.py", FileNotFoundError, "preset file 'missing.py' not found"),
])
def test_bad_overrides_are_named(arg, error, message):
    with pytest.raises(error, match=message):
        resolve_config([arg])


@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_absent_gpu_is_rejected(device, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    if device == "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=f"'{device}'.*usable CUDA"):
        resolve_config([f"--device='{device}'"])


@pytest.mark.slow
def test_config_import_has_no_side_effects():
    code = "import sys, config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_main_prints_one_clear_error_and_exits_1(tmp_path):
    out = subprocess.run([sys.executable, "main.py", "--n_scales=4"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "error: img_size=448 with n_scales=4" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_help_lists_every_config_name():
    out = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "python main.py [preset.py]" in out.stdout
    assert all(f"  {name} " in out.stdout for name in vars(config) if not name.startswith("_"))


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


def test_the_printed_config_shows_seeds_and_not_the_internal_seed():
    from configurator import format_config, resolve_config
    text = format_config(resolve_config(["--seeds=[0, 1]"]))
    assert "seeds " in text and "= [0, 1]" in text
    assert not [line for line in text.splitlines() if line.split()[0] == "seed"]
