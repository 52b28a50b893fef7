"""Score new images with a trained class checkpoint.

    python evaluate.py CHECKPOINT IMAGE_OR_FOLDER [--maps=True] [--out DIR] [--threshold=X]
                       [--device=auto]

One line per image (score and verdict) and OUT/scores.csv; with --maps, one
gradient-map figure per image in OUT/maps, at the image's path below the target with
'.png' appended (good/x.jpg -> maps/good/x.jpg.png), so no two images share a map. The
verdict threshold is the one stored in the checkpoint (a percentile of the training
images' scores, config threshold_percentile) unless --threshold is given. When the folder
is laid out like a class's test set (good/ and defect sub-folders), the image AUROC, AUPR
and F1-max are printed too and written to OUT/metrics.csv.

An image's score depends on that image alone: it is scored on its own, with
n_transforms_test evenly spaced rotations (i*360/n, test_rotations' 'fixed' mode), whatever
else is scored with it. The stored threshold comes from the same rotations of the training images.
The per-epoch AUROC of training uses config test_rotations (seeded random angles by
default), so on a class's test folder the AUROC here can differ slightly from results.csv.
What evaluate.py wrote below the scored folder (--out, and the maps/ beside an earlier
run's scores.csv) is never scored itself.
"""
import argparse
import ast
import math
import sys
from pathlib import Path

import numpy as np
from torchvision.models import alexnet

from checkpoints import load_checkpoint
from batches import rotation_angles
from data import BadImageError, load_resized
from layout import IMAGE_EXTENSIONS
from localization import gradient_map
from metrics import image_metrics
from harness.figures import save_map_figure
from scoring import score_images
from train import build_model, speed_of
from evaluate_outputs import (METRICS_CSV, SCORES_CSV, SCORES_HEADER, check_checkpoint_argument,
                              check_outputs_are_ours, remove_earlier_outputs)
from files import bounded_name, check_writable, write_csv
from utils import exit_with, lacks_bf16, resolve_device


REQUIRED_CONFIG = ("img_size", "n_scales", "n_coupling_blocks", "fc_internal", "dropout",
                   "clamp_alpha", "n_transforms_test", "test_rotations", "seed", "backbone_batch")


def load_trained_model(path, device):
    """Model, config and threshold from a checkpoint, backbone weights included (no download).
    A partial or incompatible checkpoint is one error naming the file."""
    state = load_checkpoint(path)
    missing = [k for k in ("backbone",) if k not in state]
    missing += [f"config['{k}']" for k in REQUIRED_CONFIG if k not in state["config"]]
    if missing:
        raise ValueError(f"checkpoint '{path}' is incomplete (no {', '.join(missing)}); pass a "
                         f"checkpoint.pt written by main.py")
    cfg = state["config"]
    if cfg.get("amp_bf16") and lacks_bf16(device):
        raise ValueError(f"checkpoint '{path}' was trained and its threshold computed with "
                         f"amp_bf16=True, which {device} cannot run; score with --device=cpu "
                         f"(bfloat16 autocast on the CPU) or on a GPU with bfloat16")
    try:
        # the checkpoint's numerics (channels_last, amp_bf16, tf32, backbone_batch): its stored
        # threshold and AUROCs were computed with them
        model = build_model(cfg, alexnet(weights=None).features, speed_of(cfg))
        model.flow.load_state_dict(state["flow"])
        model.features.backbone.load_state_dict(state["backbone"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"checkpoint '{path}' does not fit this version's model "
                         f"({str(e).splitlines()[0]}); retrain it with main.py") from None
    return model.to(device).eval(), cfg, state.get("threshold")


def is_inside(path, folder):
    """Whether path is folder or lies below it (links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def earlier_outputs(target, out):
    """Folders below the target that evaluate.py wrote: `out` (only its maps/ when it is the
    target itself) and the maps/ beside every scores.csv of an earlier run."""
    found = []
    if is_inside(out, target):
        found.append(Path(out) / "maps" if is_inside(target, out) else Path(out))
    for scores in target.rglob(SCORES_CSV):
        if not scores.is_file():
            continue
        # utf-8-sig: the header matches also after a spreadsheet saved the file with a BOM
        with open(scores, encoding="utf-8-sig", errors="replace") as f:
            if f.readline().strip() == ",".join(SCORES_HEADER):
                found.append(scores.parent / "maps")
    return found


def collect_images(target, out):
    """A single file, or every image file below a folder (non-image files ignored). What
    evaluate.py wrote below the target is left out, so a rerun never scores earlier maps."""
    target = Path(target)
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FileNotFoundError(f"'{target}' is neither an image file nor a folder")
    outputs = earlier_outputs(target, out)
    # a class folder's ground_truth/ holds masks, not images to score
    files = sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and "ground_truth" not in p.relative_to(target).parts
                   and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(is_inside(p, folder) for folder in outputs))
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                                f"below '{target}'")
    return files


def decode(paths, size):
    """Decoded images, and one message per file that could not be read."""
    images, good, errors = [], [], []
    for path in paths:
        try:
            images.append(load_resized(path, size))
            good.append(path)
        except BadImageError as e:
            errors.append(e.problem)  # main.py's remedy does not apply: evaluate.py skips it
    return images, good, errors


def score_files(model, cfg, paths, device):
    """One score per readable file, each from evenly spaced rotations of that image alone:
    batches never mix images, so no other file can change a score."""
    images, good, errors = decode(paths, cfg["img_size"])
    angles = rotation_angles(1, cfg["n_transforms_test"], "fixed", None)
    scores = [float(score_images(model, image.unsqueeze(0), angles, device)[0])
              for image in images]
    return good, scores, errors


def map_name(path, target):
    """good/000.JPG -> good/000.JPG.png: the image's path below the target, '.png' appended,
    so good/x.jpg, good/x.png and good_x.png keep three maps."""
    relative = Path(path).relative_to(target) if Path(target).is_dir() else Path(Path(path).name)
    name = Path(relative.name)  # a name too long for '.png' is cut, keeping its extension
    return relative.with_name(bounded_name(name.stem, name.suffix + ".png"))


def parse_bool(text):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


parse_bool.__name__ = "True/False"  # argparse names the kind, not this function


def known_labels(paths, target):
    """Labels from a class's test layout (target/good/* normal, target/<other>/* anomalous),
    or None when the folder is not laid out that way."""
    if not Path(target).is_dir():
        return None
    folders = [Path(p).relative_to(target).parts[0] if len(Path(p).relative_to(target).parts) > 1
               else None for p in paths]
    if None in folders or "good" not in folders or set(folders) == {"good"}:
        return None
    return np.array([int(f != "good") for f in folders])


def report_metrics(paths, scores, target, out):
    """With known labels: image AUROC, AUPR and F1-max printed and written to metrics.csv."""
    labels = known_labels(paths, target)
    if labels is None:
        return None
    metrics = image_metrics(labels, np.asarray(scores))
    print("labels from the folder layout (good = normal): " + "  ".join(
        f"{k} {v:.4f}" for k, v in metrics.items()))
    write_csv(Path(out) / METRICS_CSV, list(metrics), [[repr(v) for v in metrics.values()]],
              setting="--out")
    return metrics


def verdict_rows(paths, scores, threshold):
    rows = []
    for path, score in zip(paths, scores):
        verdict = "anomalous" if score > threshold else "normal"
        print(f"{path}  score {score:.4f}  {verdict}")
        rows.append([str(path), repr(score), verdict, repr(float(threshold))])
    return rows


def map_of(model, cfg, path, device):
    """An image's gradient map, from the rotations its score averages (n_transforms_test)."""
    return gradient_map(model, load_resized(path, cfg["img_size"]), cfg["n_transforms_test"],
                        device)


def write_maps(model, cfg, paths, scores, threshold, args, device):
    for path, score in zip(paths, scores):
        heat = map_of(model, cfg, path, device)
        save_map_figure(Path(args.out) / "maps" / map_name(path, args.target), path, heat,
                        None, score, threshold, setting="--out")


def score_target(args):
    """Everything checkable first (device, images, checkpoint, output folder), then scoring."""
    device = resolve_device(args.device)
    check_checkpoint_argument(args.checkpoint)
    check_outputs_are_ours(args.out)  # before --out is created or anything loaded or scored
    files = collect_images(args.target, args.out)
    model, cfg, stored = load_trained_model(args.checkpoint, device)
    check_writable(args.out, "out", kind="option")  # creates --out: only once the inputs are known to be good
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be a finite number, got {args.threshold}")
    threshold = args.threshold if args.threshold is not None else stored
    if threshold is None:
        raise ValueError(f"checkpoint '{args.checkpoint}' holds no threshold (training did not "
                         f"finish); pass --threshold=X")
    paths, scores, errors = score_files(model, cfg, files, device)
    for message in errors:
        print(f"skipped: {message}", file=sys.stderr)
    rows = verdict_rows(paths, scores, threshold)
    remove_earlier_outputs(args.out)  # scored: the new outputs replace the old ones now
    if args.maps:
        write_maps(model, cfg, paths, scores, threshold, args, device)
    write_csv(Path(args.out) / SCORES_CSV, SCORES_HEADER, rows, setting="--out")
    report_metrics(paths, scores, args.target, args.out)
    print(f"{len(rows)} image(s) scored (threshold {threshold:.4f}), {len(errors)} skipped; "
          f"wrote {Path(args.out) / 'scores.csv'}")
    return rows, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint.pt written by main.py")
    parser.add_argument("target", help="an image file or a folder of images")
    parser.add_argument("--maps", type=parse_bool, default=False, help="write gradient maps")
    parser.add_argument("--out", default="evaluation", help="folder for scores.csv and maps/")
    parser.add_argument("--threshold", type=float, help="verdict threshold (default: stored)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    args = parser.parse_args(argv)
    try:
        rows, errors = score_target(args)
    except BrokenPipeError:
        raise  # stdout's reader stopped reading (| head): exit_with ends quietly
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0 if rows or not errors else 1


if __name__ == "__main__":
    exit_with(main)
