"""The run's settings: config.py's defaults, then a preset file, then --name=value overrides;
every value checked (type, range, choice) before any work, plus the derived values.

Only the entry points (main.py, evaluate.py, bench.py) call resolve_config; the resolved dict
is the one shape every module reads (its names are those of config.py, plus `seed`, the seed
of the current run, and `n_feat`).
"""
import ast
import math
import os
import traceback
from pathlib import Path

import config as default_config
from harness.references import REFERENCES
from utils import resolve_device

ALEXNET_MIN_SIDE = 63  # smallest input AlexNet's `features` maps to a non-empty output
POSITIVE_INTS = ("img_size", "n_scales", "n_coupling_blocks", "fc_internal", "n_transforms",
                 "n_transforms_test", "batch_size", "meta_epochs", "sub_epochs", "backbone_batch")
TEST_ROTATIONS = ("random", "fixed")
CACHE_DEVICES = ("auto", "cpu", "device")
ADAM_KERNELS = ("auto", "fused", "single")
NON_NEGATIVE = ("transf_brightness", "transf_contrast", "transf_saturation",
                "num_workers", "weight_decay", "n_misses")
MAX_SEED = 2 ** 32 - 1  # numpy's SeedSequence / np.random.seed accept 0 .. 2**32 - 1
COMMAND_LINE = "command line"  # the source of --name=value overrides in messages


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


RENAMED = {"seed": "config 'seed' is now 'seeds', a list of seeds, one run each: "
                   "write --seeds=[N] (or seeds = [N] in a preset)",
           "pixel_samples_per_image": "config 'pixel_samples_per_image' is gone: pixel metrics "
                                      "now use every pixel at img_size; drop the setting"}


def _apply(cfg, name, value, source):
    if name in RENAMED:
        raise KeyError(f"{RENAMED[name]} (from {source})")
    if name not in cfg:
        private = ("" if source == COMMAND_LINE else f"; if '{name}' only helps compute other "
                   f"settings, name it '_{name}': a leading underscore keeps it private")
        raise KeyError(f"unknown config name '{name}' (from {source}); "
                       f"known names are listed in config.py{private}")
    _check_type(name, value, cfg[name])
    cfg[name] = float(value) if isinstance(cfg[name], float) else value


def _error_line(exc, path):
    """Line of the preset file where an exception was raised."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    return frames[-1].lineno if frames else "?"


def _run_preset(path):
    """Execute a preset; a syntax or runtime error is one line naming the file and line."""
    try:
        # from bytes, as Python reads a script: a UTF-8 byte-order mark (Windows editors) and
        # \r\n line endings are accepted
        code = compile(Path(path).read_bytes(), path, "exec")
    except SyntaxError as e:
        raise ValueError(f"preset '{path}', line {e.lineno}: syntax error: {e.msg}") from None
    scope = {}
    try:
        exec(code, scope)
    except Exception as e:  # whatever the preset's own code raises, reported with its line
        raise ValueError(f"preset '{path}', line {_error_line(e, path)}: "
                         f"{type(e).__name__}: {e}") from None
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as e:
        # a preset is settings: sys.exit(0) must not end the command as if it had succeeded,
        # nor a KeyboardInterrupt read as a Ctrl-C during training
        what = f"sys.exit({e.code!r})" if isinstance(e, SystemExit) else type(e).__name__
        raise ValueError(f"preset '{path}', line {_error_line(e, path)}: {what}; a preset holds "
                         f"settings and must not exit or stop the command. Remove that line"
                         ) from None
    return scope


def _is_setting(name, value):
    """A preset's plain values are settings; its imports, functions and classes are helpers."""
    return not (name.startswith("_") or callable(value) or isinstance(value, type(os)))


def _apply_preset(cfg, path):
    """Execute a preset file (assignments, like config.py) and apply the values it sets."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"preset file '{path}' not found; pass an existing .py file "
                                f"of assignments, or only --name=value arguments")
    for name, value in _run_preset(path).items():
        if _is_setting(name, value):
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
            _apply(cfg, name, value, COMMAND_LINE)
    validate_config(cfg)
    cfg["seed"] = cfg["seeds"][0]  # the seed of one run; main.py sets it per run
    cfg["n_feat"] = 256 * cfg["n_scales"]  # AlexNet's last conv layer has 256 channels per scale
    return cfg


def _fail(name, expected, value):
    raise ValueError(f"config '{name}' must be {expected}, got {value!r}")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_ranges(cfg):
    """Shapes and ranges of the numeric settings, naming the setting that is off."""
    for name in POSITIVE_INTS:
        if cfg[name] <= 0:
            _fail(name, "a positive integer", cfg[name])
    for name in NON_NEGATIVE:
        if not (cfg[name] >= 0 and math.isfinite(cfg[name])):
            _fail(name, "a finite number >= 0", cfg[name])
    if not 0 <= cfg["dropout"] < 1:
        _fail("dropout", "a probability in [0, 1)", cfg["dropout"])
    for name in ("clamp_alpha", "lr_init", "adam_eps"):
        if not (cfg[name] > 0 and math.isfinite(cfg[name])):
            _fail(name, "a finite number > 0", cfg[name])
    betas = cfg["adam_betas"]
    if len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
        _fail("adam_betas", "two numbers in [0, 1), e.g. (0.8, 0.8)", betas)
    if not 0 <= cfg["threshold_percentile"] <= 100:
        _fail("threshold_percentile", "a number in [0, 100]", cfg["threshold_percentile"])
    seeds = cfg["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                            and 0 <= s <= MAX_SEED for s in seeds):
        _fail("seeds", f"a non-empty list of integers in [0, {MAX_SEED}] (numpy's seed range)",
              seeds)
    if len(set(seeds)) != len(seeds):
        _fail("seeds", "a list without repeats", seeds)
    counts = cfg["transforms_curve"]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts) \
            or len(set(counts)) != len(counts):
        _fail("transforms_curve", "a list of distinct positive integers (rotations per test "
              "image), e.g. [1, 2, 4, 8, 16, 32, 64], or [] for no curve", counts)


def _check_choices(cfg):
    """Settings that name one of a few options, or a list of folder names."""
    for name, choices in (("test_rotations", TEST_ROTATIONS), ("cache_device", CACHE_DEVICES),
                          ("adam_kernel", ADAM_KERNELS),
                          ("reference", (*REFERENCES, "none"))):
        if cfg[name] not in choices:
            _fail(name, f"one of {choices}", cfg[name])
    names = cfg["class_names"]
    if not names or not all(isinstance(c, str) and c and "/" not in c and c not in (".", "..")
                            for c in names):
        _fail("class_names", "a non-empty list of class folder names", names)
    if len(set(names)) != len(names):
        _fail("class_names", "a list without repeats", names)


def validate_config(cfg):
    """Reject impossible settings before any work, naming the setting and the fix."""
    _check_ranges(cfg)
    smallest = cfg["img_size"] // 2 ** (cfg["n_scales"] - 1)
    if smallest < ALEXNET_MIN_SIDE:
        raise ValueError(
            f"img_size={cfg['img_size']} with n_scales={cfg['n_scales']} gives a smallest scale of "
            f"{smallest} px; AlexNet needs at least {ALEXNET_MIN_SIDE} px: raise img_size to "
            f"{ALEXNET_MIN_SIDE * 2 ** (cfg['n_scales'] - 1)} or lower n_scales")
    _check_choices(cfg)
    resolve_device(cfg["device"])


def format_config(cfg):
    """The resolved config, one name per line, for printing once at the start. The internal
    per-run `seed` (set from `seeds` for each run) is not a setting, so it is not shown."""
    shown = {k: v for k, v in cfg.items() if not (k == "seed" and "seeds" in cfg)}
    width = max(len(k) for k in shown)
    return "\n".join(f"  {k:<{width}} = {shown[k]!r}" for k in sorted(shown))


def output_settings(cfg):
    """(name, folder) of every folder a run writes into."""
    names = (["checkpoint_dir"] if cfg["save_model"] else []) + ["results_dir"]
    return [(name, cfg[name]) for name in names + (["cache_mmap"] if cfg["cache_mmap"] else [])]


def class_folders(dataset_path, class_names):
    """The class folders of dataset_path: those named in class_names, and every sub-folder laid
    out like a class (with train/ or test/)."""
    root = Path(dataset_path).resolve()
    found = {root / name for name in class_names}
    found |= {d for d in root.iterdir() if d.is_dir()
              and ((d / "train").is_dir() or (d / "test").is_dir())}
    return sorted(found)


def check_outputs_outside_data(cfg):
    """Outputs never become inputs: an output folder that is dataset_path itself or lies in a
    class folder would have its files read as data (or removed by a preparation re-run)."""
    root = Path(cfg["dataset_path"]).resolve()
    folders = class_folders(root, cfg["class_names"])
    for name, value in output_settings(cfg):
        out = Path(value).resolve()
        if out == root:
            raise ValueError(f"config '{name}' is dataset_path itself ('{value}'): its per-class "
                             f"folders would be the class folders of the data; choose a "
                             f"{name} outside dataset_path")
        inside = [d for d in folders if out == d or d in out.parents]
        if inside:
            raise ValueError(f"config '{name}'='{value}' lies inside class folder '{inside[0]}' "
                             f"of dataset_path: its files would mix with the data; choose a "
                             f"{name} outside the class folders of dataset_path")
