"""Speed benchmark: this repo's data path and frozen backbone against the original's way.

    python bench.py [--n_train 24] [--n_test 2] [--json bench.json] [--name=value ...]

Writes VisA-sized JPEGs (1500 x 1000) into a temporary folder, then measures at
the configured image size and transforms: building the decoded cache, training
throughput (transformed images per second over one epoch), scoring throughput
(images x test rotations per second), the bytes of uint8 images the data path
hands to the device per training step and per scored image, and peak memory. The
reference path does
what the original code does on the same images: a PIL decode per image and
epoch, a PIL resize and rotation per transform, and a backbone that is not
frozen (autograd back-propagates into AlexNet's weights). `--name=value`
arguments are config overrides (e.g. --device=cuda --amp_bf16=True).
"""
import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

import batches
from batches import IMAGENET_MEAN, IMAGENET_STD, rotation_angles
from data import build_image_set
from model import flow_parameters, load_alexnet_features, nll_loss
from bench_split import split_line, step_split
from checkpoints import CheckpointWriter, snapshot
from scoring import score_images
from train import TrainStep, build_model, images_for, make_optimizer, train_one_epoch
from configurator import resolve_config
from files import atomic_write
from utils import resolve_device, return_freed_memory_to_os, seed_everything

VISA_SIZE = (1500, 1000)


def write_jpegs(folder, n, seed=0):
    """Smooth random 1500 x 1000 JPEGs (quality 95), like VisA's photographs in size and codec."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (25, 38, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(VISA_SIZE, Image.BICUBIC)
        paths.append(str(Path(folder) / f"{i:04d}.JPG"))
        img.save(paths[-1], quality=95)
    return paths


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def reference_transform(size):
    """The original's per-transform pipeline on a decoded PIL image."""
    return transforms.Compose([transforms.Resize((size, size)), transforms.RandomRotation(180),
                               transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def reference_batches(paths, size, n_transforms, batch_size):
    """Decode each image from disk, then resize + rotate each transform with PIL."""
    transform = reference_transform(size)
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start:start + batch_size]:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
            batch += [transform(rgb) for _ in range(n_transforms)]
        yield torch.stack(batch)


def reference_train_epoch(model, optimizer, paths, cfg, device):
    """One epoch the original's way: the backbone takes part in autograd."""
    model.features.backbone.requires_grad_(True)
    model.train()
    for x in reference_batches(paths, cfg["img_size"], cfg["n_transforms"], cfg["batch_size"]):
        z, log_jac_det = model.flow(model.features(x.to(device)))
        loss = nll_loss(z, log_jac_det)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.features.backbone.requires_grad_(False)


@torch.no_grad()
def reference_score(model, paths, cfg, device):
    """Scoring the original's way: one decode per image, resize + rotate per test transform."""
    model.eval()
    for x in reference_batches(paths, cfg["img_size"], cfg["n_transforms_test"], 1):
        for chunk in torch.split(x, cfg["backbone_batch"]):
            model.flow(model.features(chunk.to(device)))


@contextmanager
def host_to_device_bytes():
    """Bytes of uint8 images handed from host memory to batches.to_device, the one way images
    reach the device. On a CPU run this is what a GPU would copy with the cache in host memory;
    with the cache already on the GPU nothing crosses and the count stays 0."""
    moved = {"bytes": 0}
    real = batches.to_device

    def counting(images_uint8, device):
        if images_uint8.device.type == "cpu":
            moved["bytes"] += images_uint8.nbytes
        return real(images_uint8, device)
    batches.to_device = counting
    try:
        yield moved
    finally:
        batches.to_device = real


def bytes_per_transformed_copy(cfg, n_train):
    """What the data path moved before each image crossed once (by formula from the shapes):
    every transformed copy, per training step (averaged like the count) and per scored image."""
    image = 3 * cfg["img_size"] ** 2
    images_per_step = n_train / math.ceil(n_train / cfg["batch_size"])
    return images_per_step * cfg["n_transforms"] * image, cfg["n_transforms_test"] * image


def peak_memory(device):
    """Peak resident memory of this process (GB), and of the GPU when used."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    gpu = torch.cuda.max_memory_allocated(device) / 1024 ** 3 if device.type == "cuda" else None
    return rss, gpu


def measure_ours(cfg, device, train_paths, test_paths):
    """Cache build, training epoch and scoring of this repo's path."""
    results = {}
    cache_time, train_set = timed(lambda: build_image_set(
        train_paths, [0] * len(train_paths), [None] * len(train_paths), cfg["img_size"],
        cfg["num_workers"]), device)
    test_set = build_image_set(test_paths, [0] * len(test_paths), [None] * len(test_paths),
                               cfg["img_size"], cfg["num_workers"])
    results["cache_images_per_s"] = len(train_paths) / cache_time
    model = build_model(cfg, load_alexnet_features(False)).to(device)
    optimizer = make_optimizer(model.flow, cfg["lr_init"], cfg["adam_betas"], cfg["adam_eps"],
                               cfg["weight_decay"], cfg["adam_kernel"])
    images = images_for(train_set, cfg, device)
    test_images = images_for(test_set, cfg, device)
    results["cache_on_device"] = images.device.type != "cpu"
    gen = torch.Generator().manual_seed(0)
    def epoch(imgs):
        return train_one_epoch(model, optimizer, imgs, TrainStep.from_config(cfg), device, gen)
    epoch(images[:cfg["batch_size"]])  # warm-up step: allocator, cuDNN algorithm choice
    with host_to_device_bytes() as moved:
        seconds, _ = timed(lambda: epoch(images), device)
    results["train_images_per_s"] = len(train_paths) * cfg["n_transforms"] / seconds
    steps = math.ceil(len(train_paths) / cfg["batch_size"])
    results["bytes_per_train_step"] = moved["bytes"] / steps
    angles = rotation_angles(len(test_set), cfg["n_transforms_test"], "random", gen)
    with host_to_device_bytes() as moved:
        seconds, _ = timed(lambda: score_images(model, test_images, angles, device), device)
    results["score_images_per_s"] = len(test_paths) * cfg["n_transforms_test"] / seconds
    results["bytes_per_scored_image"] = moved["bytes"] / len(test_paths)
    with step_split(model, optimizer, device) as split:
        epoch(images)  # once more, each part timed (the waits it adds stay out of the rate)
    results["step_split_s"] = {part: seconds / steps for part, seconds in split.items()}
    results["checkpoint"] = measure_checkpoints(cfg, (model, optimizer, gen),
                                                lambda: epoch(images))
    return results, model


def measure_checkpoints(cfg, trainee, train_epoch, saves=2):
    """Checkpoints as the training loop writes them: each save hands a host copy to the
    background writer, then a training epoch runs while the disk works; a save whose
    predecessor is still being written is skipped, as in the loop. Per write: bytes, seconds to
    write, seconds the loop was blocked (the host copy); and the saves skipped."""
    with tempfile.TemporaryDirectory() as folder:
        writer = CheckpointWriter(os.path.join(folder, "checkpoint.pt"))
        for epoch in range(1, saves + 1):
            writer.submit(lambda: snapshot(*trainee, cfg, {"epoch": epoch}, copy=True), epoch)
            train_epoch()
        writer.wait()
    writes = writer.writes
    return {"saves": writes, "skipped": len(writer.skipped), "bytes": writes[-1]["bytes"],
            "write_s": max(w["write_s"] for w in writes),
            "blocked_s": max(w["blocked_s"] for w in writes)}


def measure_reference(cfg, device, train_paths, test_paths):
    model = build_model(cfg, load_alexnet_features(False)).to(device)
    optimizer = torch.optim.Adam(flow_parameters(model.flow), lr=cfg["lr_init"])
    reference_train_epoch(model, optimizer, train_paths[:cfg["batch_size"]], cfg, device)  # warm-up
    seconds, _ = timed(lambda: reference_train_epoch(model, optimizer, train_paths, cfg, device), device)
    train = len(train_paths) * cfg["n_transforms"] / seconds
    seconds, _ = timed(lambda: reference_score(model, test_paths, cfg, device), device)
    return {"train_images_per_s": train,
            "score_images_per_s": len(test_paths) * cfg["n_transforms_test"] / seconds}


def full_schedule_minutes(cfg, ours, n_train=900, n_test=200):
    """Projected time of the default schedule for a 900-image class from the measured rates:
    training, the 24 evaluations of the test set, the threshold pass over the training images
    and building the cache."""
    train = cfg["meta_epochs"] * cfg["sub_epochs"] * n_train * cfg["n_transforms"] / ours["train_images_per_s"]
    evaluations = cfg["meta_epochs"] * n_test + n_train  # + the threshold pass, scored once
    score = evaluations * cfg["n_transforms_test"] / ours["score_images_per_s"]
    cache = (n_train + n_test) / ours["cache_images_per_s"]
    return (train + score + cache) / 60


def report(res):
    lines = [f"machine: {res['machine']}",
             f"img_size {res['img_size']}, n_transforms {res['n_transforms']}, n_transforms_test "
             f"{res['n_transforms_test']}, {res['n_train']} train / {res['n_test']} test images",
             f"{'':<28}{'this repo':>12}{'reference':>12}{'speed-up':>10}"]
    for key, label in (("train_images_per_s", "train (transformed img/s)"),
                       ("score_images_per_s", "score (img x rot / s)")):
        ours, ref = res["ours"][key], res["reference"].get(key)
        lines.append(f"{label:<28}{ours:>12.1f}{ref:>12.1f}{ours / ref:>9.2f}x" if ref else
                     f"{label:<28}{ours:>12.1f}{'-':>12}")
    lines.append(f"{'cache build (img/s)':<28}{res['ours']['cache_images_per_s']:>12.1f}")
    lines.append(split_line(res["ours"]["step_split_s"]))
    measured, (before_step, before_image) = res["ours"], res["bytes_per_transformed_copy"]
    lines.append(f"uint8 images to the device (counted at batches.to_device; cache "
                 f"{'on the device' if measured['cache_on_device'] else 'in host memory'}): "
                 f"{measured['bytes_per_train_step'] / 1e6:.2f} MB per training step "
                 f"(all transformed copies moved: {before_step / 1e6:.2f}), "
                 f"{measured['bytes_per_scored_image'] / 1e6:.2f} MB per scored image "
                 f"(all rotated copies moved: {before_image / 1e6:.2f})")
    ckpt = measured["checkpoint"]
    lines.append(f"checkpoint: {ckpt['bytes'] / 1e9:.2f} GB per save, written in "
                 f"{ckpt['write_s']:.1f} s, training loop blocked {ckpt['blocked_s']:.2f} s "
                 f"(worst of {len(ckpt['saves'])} writes, {ckpt['skipped']} save(s) skipped while "
                 f"a write was in flight); {res['meta_epochs']} saves per class: "
                 f"{res['meta_epochs'] * ckpt['write_s'] / 60:.1f} min written in the loop, "
                 f"{res['meta_epochs'] * ckpt['blocked_s'] / 60:.1f} min blocked with the "
                 f"background writer")
    lines.append(f"peak RSS {res['peak_rss_gb']:.2f} GB" + (
        f", peak GPU {res['peak_gpu_gb']:.2f} GB" if res["peak_gpu_gb"] is not None else ""))
    lines.append(f"projected default schedule, 900-image class: {res['projected_minutes']:.1f} min; "
                 f"all 12 VisA classes (8,659 training, 2,162 test images): "
                 f"{res['projected_visa_hours']:.1f} h")
    return "\n".join(lines)


def machine(device):
    import os
    import platform
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=24, help="training images (one epoch)")
    parser.add_argument("--n_test", type=int, default=2, help="test images scored")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--skip_reference", action="store_true", help="measure this repo only")
    args, overrides = parser.parse_known_args(argv)
    return_freed_memory_to_os()
    cfg = resolve_config(["--pretrained=False", *overrides])
    device = resolve_device(cfg["device"])
    seed_everything(cfg["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(tmp, args.n_train + args.n_test)
        train_paths, test_paths = paths[:args.n_train], paths[args.n_train:]
        ours, _ = measure_ours(cfg, device, train_paths, test_paths)
        rss, gpu = peak_memory(device)  # before the reference path, which keeps more alive
        reference = {} if args.skip_reference else measure_reference(cfg, device, train_paths, test_paths)
    res = {"machine": machine(device), "device": str(device), "n_train": args.n_train,
           "n_test": args.n_test, "ours": ours, "reference": reference, "peak_rss_gb": rss,
           "peak_gpu_gb": gpu, "projected_minutes": full_schedule_minutes(cfg, ours),
           # the schedule's time is linear in the image counts: the 12 classes add up
           "projected_visa_hours": full_schedule_minutes(cfg, ours, 8659, 2162) / 60,
           "bytes_per_transformed_copy": bytes_per_transformed_copy(cfg, args.n_train),
           **{k: cfg[k] for k in ("img_size", "n_transforms", "n_transforms_test", "batch_size",
                                  "meta_epochs",
                                  "channels_last", "amp_bf16", "tf32", "cache_device",
                                  "adam_kernel")}}
    print(report(res))
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=2)),
                     setting="--json")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
