"""What evaluate.py checks about its arguments and its --out folder before it writes there:
the checkpoint argument is a file (a run's folder is named as one), the CSV files it would
replace are its own, and what an earlier evaluation left in --out (another target's
metrics.csv and maps) is removed, only files of its names and content.
"""
from pathlib import Path

from layout import IMAGE_EXTENSIONS

SCORES_CSV = "scores.csv"
SCORES_HEADER = ("image", "score", "verdict", "threshold")

METRICS_CSV = "metrics.csv"
METRICS_HEADER = ("auroc", "aupr", "f1_max", "f1_threshold")  # image_metrics' keys, in order


def check_checkpoint_argument(path):
    """The checkpoint argument must be a file; a folder (a run's checkpoint folder) is named as
    one, with the checkpoint(s) inside it, instead of a bare 'not found'."""
    path = Path(path)
    if path.is_file():
        return
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist; pass the checkpoint.pt "
                                f"written by main.py (checkpoints/<class>/seed<k>/checkpoint.pt)")
    inside = sorted(path.glob("checkpoint.pt")) + sorted(path.glob("*/checkpoint.pt")) + \
        sorted(path.glob("*/*/checkpoint.pt"))
    found = (f"; pass the checkpoint inside it: {', '.join(str(p) for p in inside[:3])}"
             + (" ..." if len(inside) > 3 else "")) if inside else \
        "; it holds no checkpoint.pt (checkpoints/<class>/seed<k>/checkpoint.pt)"
    raise ValueError(f"checkpoint '{path}' is a folder, not a checkpoint file{found}")


def is_our_metrics_csv(path):
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            return f.readline().strip() == ",".join(METRICS_HEADER)
    except OSError:
        return False


def is_our_map(path):
    """A map evaluate.py writes: '<image name with its extension>.png' (x.jpg -> x.jpg.png)."""
    return path.suffix == ".png" and Path(path.stem).suffix.lower() in IMAGE_EXTENSIONS


def is_our_scores_csv(path):
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return f.readline().strip() == ",".join(SCORES_HEADER)


def check_outputs_are_ours(out):
    """scores.csv and metrics.csv in --out are replaced: refuse when such a file is not one
    evaluate.py wrote (another tool's scores.csv), naming it, before any work."""
    for name, ours in ((SCORES_CSV, is_our_scores_csv), (METRICS_CSV, is_our_metrics_csv)):
        path = Path(out) / name
        if path.exists() and not (path.is_file() and ours(path)):
            raise ValueError(f"--out '{out}' holds {name}, which evaluate.py did not write and "
                             f"would replace; choose another --out or move that file away")


def remove_earlier_outputs(out):
    """Before writing, remove what an earlier evaluate.py wrote into out and this run would
    not replace (another target's metrics.csv, its maps): nothing stale stays beside the new
    scores.csv. Only files of our names and content go; the user's own files stay."""
    out = Path(out)
    if is_our_metrics_csv(out / METRICS_CSV):
        (out / METRICS_CSV).unlink()
    maps = out / "maps"
    if not maps.is_dir():
        return
    for path in sorted(maps.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not path.is_symlink() and is_our_map(path):
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    if not any(maps.iterdir()):
        maps.rmdir()
