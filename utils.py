"""Configuration, seeding, devices, checkpoints and result tables.

Only the entry points (main.py, evaluate.py, bench.py) call resolve_config;
everything else takes plain arguments.
"""
import ast
import ctypes
import csv
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

import config as default_config

ALEXNET_MIN_SIDE = 63  # smallest input AlexNet's `features` maps to a non-empty output
POSITIVE_INTS = ("img_size", "n_scales", "n_coupling_blocks", "fc_internal", "n_transforms",
                 "n_transforms_test", "batch_size", "meta_epochs", "sub_epochs", "backbone_batch")
TEST_ROTATIONS = ("random", "fixed")
CACHE_DEVICES = ("cpu", "device")
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
ARCHITECTURE_KEYS = ("img_size", "n_scales", "n_coupling_blocks", "fc_internal", "clamp_alpha")


def default_values():
    """The constants of config.py as a dict (names without a leading underscore)."""
    return {k: v for k, v in vars(default_config).items()
            if not k.startswith("_") and not callable(v) and not isinstance(v, type(os))}


def _check_type(name, value, default):
    """Raise TypeError when an override's type differs from the default's (int may stand for float)."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"config '{name}': expected {type(default).__name__} like {default!r}, "
                        f"got {type(value).__name__} {value!r}")


def _apply(cfg, name, value, source):
    if name not in cfg:
        raise KeyError(f"unknown config name '{name}' (from {source}); "
                       f"known names are listed in config.py")
    _check_type(name, value, cfg[name])
    cfg[name] = float(value) if isinstance(cfg[name], float) else value


def _apply_preset(cfg, path):
    """Execute a preset file (plain assignments, like config.py) and apply what it sets."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"preset file '{path}' not found; pass an existing .py file "
                                f"of assignments, or only --name=value arguments")
    scope = {}
    exec(compile(Path(path).read_text(), path, "exec"), scope)
    for name, value in scope.items():
        if not name.startswith("_") and not isinstance(value, type(os)):
            _apply(cfg, name, value, path)


def _parse_override(arg):
    if not arg.startswith("--") or "=" not in arg:
        raise ValueError(f"cannot read argument '{arg}': use --name=value "
                         f"(value a Python literal) or a preset .py file")
    name, text = arg[2:].split("=", 1)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word such as --device=cpu is taken as a string
    return name, value


def resolve_config(argv=()):
    """Defaults, then a preset file, then --name=value overrides; validated, with derived values."""
    cfg = default_values()
    for arg in argv:
        if arg.endswith(".py") and not arg.startswith("--"):
            _apply_preset(cfg, arg)
        else:
            name, value = _parse_override(arg)
            _apply(cfg, name, value, "command line")
    validate_config(cfg)
    cfg["n_feat"] = 256 * cfg["n_scales"]  # AlexNet's last conv layer has 256 channels per scale
    return cfg


def validate_config(cfg):
    """Reject impossible settings before any work, naming the setting and the fix."""
    for name in POSITIVE_INTS:
        if cfg[name] <= 0:
            raise ValueError(f"config '{name}' must be a positive integer, got {cfg[name]}")
    smallest = cfg["img_size"] // 2 ** (cfg["n_scales"] - 1)
    if smallest < ALEXNET_MIN_SIDE:
        raise ValueError(
            f"img_size={cfg['img_size']} with n_scales={cfg['n_scales']} gives a smallest scale of "
            f"{smallest} px; AlexNet needs at least {ALEXNET_MIN_SIDE} px: raise img_size to "
            f"{ALEXNET_MIN_SIDE * 2 ** (cfg['n_scales'] - 1)} or lower n_scales")
    if cfg["test_rotations"] not in TEST_ROTATIONS:
        raise ValueError(f"config 'test_rotations' must be one of {TEST_ROTATIONS}, "
                         f"got {cfg['test_rotations']!r}")
    if cfg["cache_device"] not in CACHE_DEVICES:
        raise ValueError(f"config 'cache_device' must be one of {CACHE_DEVICES}, "
                         f"got {cfg['cache_device']!r}")
    if not cfg["class_names"] or not all(isinstance(c, str) for c in cfg["class_names"]):
        raise ValueError(f"config 'class_names' must be a non-empty list of folder names, "
                         f"got {cfg['class_names']!r}")
    if not 0 <= cfg["threshold_percentile"] <= 100:
        raise ValueError(f"config 'threshold_percentile' must lie in [0, 100], "
                         f"got {cfg['threshold_percentile']}")
    for name in ("dropout", "transf_brightness", "transf_contrast", "transf_saturation",
                 "pixel_samples_per_image", "num_workers"):
        if cfg[name] < 0:
            raise ValueError(f"config '{name}' must not be negative, got {cfg[name]}")
    if cfg["clamp_alpha"] <= 0 or cfg["lr_init"] <= 0:
        raise ValueError("config 'clamp_alpha' and 'lr_init' must be positive")
    resolve_device(cfg["device"])


def resolve_device(name):
    """'auto', 'cpu', 'cuda' or 'cuda:N' as a torch.device; an absent GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"config 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', "
                         f"got {name!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise ValueError(f"config 'device'={name!r}, but this machine has {count} usable "
                             f"CUDA device(s); use --device=auto or --device=cpu")
    elif device.type != "cpu":
        raise ValueError(f"config 'device' must be 'auto', 'cpu' or a CUDA device, got {name!r}")
    return device


def format_config(cfg):
    """The resolved config, one name per line, for printing once at the start."""
    width = max(len(k) for k in cfg)
    return "\n".join(f"  {k:<{width}} = {cfg[k]!r}" for k in sorted(cfg))


def return_freed_memory_to_os():
    """Have glibc serve every allocation of 128 KiB or more with mmap, so freed image batches
    and parameter-sized temporaries go back to the OS instead of staying in a fragmented heap
    (measured: 0.33 GB less peak RSS while training at the default size). No-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


def seed_everything(seed):
    """Seed Python, numpy and torch (CPU and CUDA) from one number."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path, write_fn):
    """Write through a temp file in the same folder, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_writable(folder, name):
    """Fail at start, not after hours of training, when an output folder cannot be written."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OSError(f"config '{name}': cannot write into '{folder}' ({e.strerror or e}); "
                      f"choose a writable folder with --{name}=PATH") from None


def save_checkpoint(path, state):
    """state: a dict of state_dicts, tensors and plain data (loadable with weights_only=True)."""
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except OSError as e:
        raise OSError(f"cannot write checkpoint '{path}': {e.strerror or e}. The previous "
                      f"checkpoint is unchanged; free disk space or set checkpoint_dir") from e


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint without unpickling code; a foreign file is refused with its name."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"'{path}' is not a DifferNet checkpoint (it cannot be read as plain "
                         f"tensors and data: {type(e).__name__}); pass a checkpoint.pt written by "
                         f"main.py") from None
    if not isinstance(state, dict) or not {"flow", "config", "class_name"} <= set(state):
        raise ValueError(f"'{path}' is not a DifferNet checkpoint (keys flow, config, class_name "
                         f"missing); pass a checkpoint.pt written by main.py")
    return state


def changed_training_settings(state, cfg):
    """Names whose value differs from the checkpoint's, other than the architecture and the
    run's own bookkeeping: a resumed run then no longer equals an uninterrupted one."""
    ignored = set(ARCHITECTURE_KEYS) | {
        "resume", "meta_epochs", "verbose", "device", "num_workers", "checkpoint_dir",
        "results_dir", "class_names", "dataset_path", "make_demo_data", "save_model",
        "cache_device", "cache_mmap", "grad_map_viz", "grad_map_all", "pixel_auroc",
        "pixel_samples_per_image", "threshold_percentile"}
    return sorted(k for k in cfg if k not in ignored and state["config"].get(k) != cfg[k])


def check_checkpoint_matches(state, cfg, class_name, path):
    """Refuse a checkpoint of another class or architecture, listing what differs."""
    diffs = [f"{k}: checkpoint {state['config'].get(k)!r} vs config {cfg[k]!r}"
             for k in ARCHITECTURE_KEYS if state["config"].get(k) != cfg[k]]
    if state["class_name"] != class_name:
        diffs.insert(0, f"class: checkpoint {state['class_name']!r} vs {class_name!r}")
    if diffs:
        raise ValueError(f"checkpoint '{path}' does not match this run; differing: "
                         + "; ".join(diffs) + ". Delete it, or set resume=False or checkpoint_dir")


def fmt(value, digits=4):
    """A number for tables, 'n/a' for a missing or undefined one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_results(rows, results_dir, columns):
    """results.csv and results.md, one row per class plus a mean row; written atomically."""
    rows = list(rows) + [mean_row(rows, columns)]

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[c for c, _ in columns], extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: fmt(row.get(c)) for c, _ in columns})

    def write_md(tmp):
        lines = ["| " + " | ".join(h for _, h in columns) + " |",
                 "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(fmt(row.get(c)) for c, _ in columns) + " |" for row in rows]
        Path(tmp).write_text("\n".join(lines) + "\n")

    try:
        atomic_write(Path(results_dir) / "results.csv", write_csv)
        atomic_write(Path(results_dir) / "results.md", write_md)
    except OSError as e:
        raise OSError(f"cannot write results into '{results_dir}': {e.strerror or e}; "
                      f"earlier results files are unchanged; set results_dir to a writable "
                      f"folder") from e
    return rows


def mean_row(rows, columns, mean_keys=("auroc_last", "auroc_max", "pixel_auroc", "seed_auroc")):
    """Mean of the AUROC columns over the classes that have a value in them."""
    mean = {columns[0][0]: "mean"}
    for key in mean_keys:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))
                  and not math.isnan(r[key])]
        mean[key] = float(np.mean(values)) if values else None
    return mean
