"""What the speed options change, measured at VisA's size: features and test scores of the plain
computation against channels_last and against other backbone_batch chunk sizes, and the time of
one gradient map (gradients, then the reference's back-rotation and blur).

Default: the synthetic demo class drawn at 448 px (8 normal, 8 anomalous test images), the
default architecture (3 scales, 8 coupling blocks of 2048), random AlexNet weights (ImageNet's
cannot be downloaded here) and an untrained flow (seed 0), 8 evenly spaced rotations. Usage:
    .venv/bin/python bench_options.py [--size 448] [--n 8] [--rotations 8] [--maps 1]
                                      [--options channels_last backbone_batch=7 backbone_batch=1]
"""
import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from configurator import resolve_config
from batches import make_batch, rotation_angles
from data import build_image_set
from layout import list_class
from localization import gradient_map
from metrics import image_metrics
from model import load_alexnet_features
from prepare.demo import write_demo_class
from scoring import score_images
from train import build_model

CPU = torch.device("cpu")
OPTIONS = {"channels_last": dict(channels_last=True, backbone_batch=64),  # each against the plain
           "backbone_batch=7": dict(channels_last=False, backbone_batch=7),
           "backbone_batch=1": dict(channels_last=False, backbone_batch=1)}


def demo_images(size, n):
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_class(Path(tmp) / "demo", 0, size=size, n_train=1, n_test_good=n, n_test_bad=n)
        files = list_class(tmp, "demo")
        test = build_image_set(files.test, files.labels, files.masks, size)
    return test.images, test.labels


def with_speed(model, **speed):
    """The same model (shared weights) run with other Speed settings."""
    model.speed = replace(model.speed, **speed)
    layout = torch.channels_last if model.speed.channels_last else torch.contiguous_format
    model.features.to(memory_format=layout)
    return model


def features(model, images, angles):
    x = torch.cat([make_batch(img[None].expand(len(a), -1, -1, -1), a, CPU,
                              channels_last=model.speed.channels_last)
                   for img, a in zip(images, angles)])
    with torch.no_grad():
        return torch.cat([model.embed(part) for part in torch.split(x, model.speed.backbone_batch)])


def relative(a, b):
    """(largest element-wise relative difference, largest difference over the largest value)."""
    a, b = a.double(), b.double()
    return (float(((a - b).abs() / b.abs().clamp_min(1e-30)).max()),
            float((a - b).abs().max() / b.abs().max()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rotations", type=int, default=8)
    parser.add_argument("--maps", type=int, default=1, help="gradient maps to time")
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    cfg = resolve_config(["--pretrained=False", f"--img_size={args.size}", "--channels_last=False"])
    images, labels = demo_images(args.size, args.n)
    torch.manual_seed(0)
    model = build_model(cfg, load_alexnet_features(False)).eval()
    angles = rotation_angles(len(images), args.rotations, "fixed", None)
    plain_feats = features(model, images, angles)
    plain_scores = torch.from_numpy(score_images(model, images, angles, CPU))
    for name in args.options:
        with_speed(model, **OPTIONS[name])
        feats = features(model, images, angles)
        scores = torch.from_numpy(score_images(model, images, angles, CPU))
        print(f"{name:20s} features: identical bits {torch.equal(feats, plain_feats)}, max "
              f"relative {relative(feats, plain_feats)[0]:.2e}, max diff / max "
              f"{relative(feats, plain_feats)[1]:.2e}; scores: max relative "
              f"{relative(scores, plain_scores)[0]:.2e}; image AUROC "
              f"{image_metrics(labels, scores.numpy())['auroc']:.4f} (plain "
              f"{image_metrics(labels, plain_scores.numpy())['auroc']:.4f})")
    with_speed(model, channels_last=False, backbone_batch=64)
    for i in range(args.maps):
        start = time.perf_counter()
        gradient_map(model, images[i], 64, CPU)
        print(f"gradient map, {args.size} px, 64 rotations: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
