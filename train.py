"""Training of one class: the meta-epoch / sub-epoch loop of the paper, with the test set scored
(scoring.py) after each meta epoch."""
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from adam import make_optimizer
from batches import cache_on_device, take, to_device, transformed
from checkpoints import data_fingerprint, new_state, restore, snapshot
from data import build_image_set
from image_cache import cache_file
from metrics import image_metrics
from model import DifferNet, Speed, load_alexnet_features, nll_loss
from scoring import evaluation_generator, score_set, training_threshold
from utils import fmt, seed_everything


class DivergedError(RuntimeError):
    """The flow diverged; `reason` is the short text of the results table's status column."""
    reason = "diverged"


class NonFiniteLossError(DivergedError):
    """The training loss became NaN or infinite."""
    reason = "non-finite loss"


class NonFiniteScoresError(DivergedError):
    """Test scores became NaN or infinite although the loss stayed finite."""
    reason = "non-finite test scores"


@dataclass(frozen=True)
class TrainStep:
    """What one training step does with its images (paper section 3.2): batch_size distinct
    images, each in n_transforms copies, rotated uniformly in [-180, 180] degrees when rotations
    is on, with colour jitter (brightness, contrast, saturation) when any factor is > 0."""
    batch_size: int
    n_transforms: int
    rotations: bool = True
    jitter: tuple = (0.0, 0.0, 0.0)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["batch_size"], cfg["n_transforms"], cfg["transf_rotations"],
                   (cfg["transf_brightness"], cfg["transf_contrast"], cfg["transf_saturation"]))


def speed_of(cfg):
    """The config's Speed; settings a checkpoint of an earlier version lacks take their
    defaults then (the way it was trained)."""
    return Speed(cfg.get("channels_last", False), cfg.get("amp_bf16", False),
                 cfg.get("backbone_batch", Speed.backbone_batch), cfg.get("tf32", False))


def build_model(cfg, backbone, speed=None):
    """DifferNet from the config's architecture names (speed: the config's, unless given), on
    no particular device."""
    return DifferNet(backbone, cfg["n_scales"], cfg["n_coupling_blocks"], cfg["fc_internal"],
                     cfg["dropout"], cfg["clamp_alpha"], speed or speed_of(cfg))


def train_one_epoch(model, optimizer, images, step, device, generator, progress=False):
    """One pass over the shuffled training images, each seen step.n_transforms times per batch.
    Returns the mean loss; a non-finite loss raises NonFiniteLossError at the end of the epoch."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    losses = []  # device tensors: reading each step's loss would make the host wait for the GPU
    for start in tqdm(range(0, len(order), step.batch_size), desc="train", leave=False,
                      disable=not progress):
        distinct = take(images, order[start:start + step.batch_size], device)  # each moved once
        batch = distinct.repeat_interleave(step.n_transforms, dim=0)  # copies made on the device
        angles = (torch.empty(len(batch)).uniform_(-180.0, 180.0, generator=generator)
                  if step.rotations else None)
        feats = torch.cat([model.embed(x) for _, x in
                           transformed(model, batch, angles, step.jitter, generator)])
        with model.flow_numerics():  # TF32 (when on) for the flow's matmuls, backward included
            z, log_jac_det = model.flow(feats)
            loss = nll_loss(z, log_jac_det)
            loss.backward()
        optimizer.step()  # a no-op where Adam stepped during backward (CPU)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return checked_epoch_loss(torch.stack(losses).tolist())  # the epoch's one wait for the device


def checked_epoch_loss(losses):
    """Mean of an epoch's step losses. A non-finite one raises NonFiniteLossError: the steps
    after it trained on corrupted weights, so the caller discards the epoch and keeps the last
    good checkpoint."""
    bad = [(step, value) for step, value in enumerate(losses, 1) if not math.isfinite(value)]
    if bad:
        step, value = bad[0]
        raise NonFiniteLossError(f"training loss is {value} at step {step} of {len(losses)}")
    return float(np.mean(losses))


def load_class_data(cfg, files, progress=False):
    """Decoded train and test ImageSets of a class (layout.ClassFiles with its masks checked,
    masks.checked_class_files; cache in memory or memory-mapped)."""
    def mmap(split, paths):
        return (cache_file(cfg["cache_mmap"], files.name, split, paths, cfg["img_size"])
                if cfg["cache_mmap"] else "")

    common = dict(size=cfg["img_size"], num_workers=cfg["num_workers"],
                  skip_bad=cfg["skip_bad_images"], progress=progress)
    train = build_image_set(files.train, np.zeros(len(files.train), np.int64),
                            [None] * len(files.train), mmap_file=mmap("train", files.train),
                            **common)
    test = build_image_set(files.test, files.labels, files.masks,
                           mmap_file=mmap("test", files.test), **common)
    test.skipped += list(files.skipped)  # images of unreadable masks, left out
    if len(train) == 0:
        raise FileNotFoundError(f"no readable training images for '{files.name}'")
    if np.unique(test.labels).size < 2:
        warnings.warn(f"the test set of '{files.name}' holds only one kind of image (normal or "
                      f"anomalous); AUROC is undefined and reported as n/a")
    return train, test


def images_for(image_set, cfg, device):
    """The uint8 cache that batches are cut from: moved to the device once when cache_device
    is 'device', or 'auto' on a GPU with room for it (0.54 GB for 900 images at 448 px, budget
    in batches.cache_on_device); else left in host memory, each batch staged in pinned memory."""
    if cache_on_device(cfg["cache_device"], device, image_set.images.nbytes):
        return to_device(image_set.images, device)
    return image_set.images


def best_auroc(history):
    """(max AUROC, its 1-based epoch), ignoring undefined values; (nan, None) when none."""
    valid = [a for a in history if not math.isnan(a)]
    if not valid:
        return float("nan"), None
    return max(valid), history.index(max(valid)) + 1


def epoch_line(tag, state, meta_epochs):
    """`[candle] epoch 3/24  loss -1.2345  AUROC 0.9123 (max 0.9250 @ 2)`"""
    best, best_epoch = best_auroc(state["auroc_history"])
    return (f"[{tag}] epoch {state['epoch']}/{meta_epochs}  "
            f"loss {state['loss_history'][-1]:.4f}  AUROC {fmt(state['auroc_history'][-1])} "
            f"(max {fmt(best)} @ {fmt(best_epoch)})")


def setup_model(cfg, device):
    """Seeded model and optimizer, and the generator of the training draws."""
    seed_everything(cfg["seed"])
    backbone = load_alexnet_features(cfg["pretrained"], cfg["weights_path"])  # fails fast
    model = build_model(cfg, backbone).to(device)
    optimizer = make_optimizer(model.flow, cfg["lr_init"], cfg["adam_betas"], cfg["adam_eps"],
                               cfg["weight_decay"], cfg["adam_kernel"])
    return model, optimizer, torch.Generator().manual_seed(cfg["seed"])


def train_meta_epoch(model, optimizer, generator, train_images, cfg, device, progress):
    """sub_epochs training epochs; returns their mean loss."""
    step = TrainStep.from_config(cfg)
    return float(np.mean([train_one_epoch(model, optimizer, train_images, step, device, generator,
                                          progress) for _ in range(cfg["sub_epochs"])]))


def evaluate_epoch(model, test_images, labels, cfg, epoch, progress):
    """(test scores, image AUROC) after `epoch` meta epochs; non-finite scores mean the flow
    diverged."""
    device = next(model.flow.parameters()).device
    scores = score_set(model, test_images, cfg, device, evaluation_generator(cfg["seed"], epoch),
                       progress)
    if not np.isfinite(scores).all():
        raise NonFiniteScoresError(f"{int((~np.isfinite(scores)).sum())} test scores are not finite")
    if np.unique(labels).size < 2:  # warned once when the data were loaded
        return scores, float("nan")
    return scores, image_metrics(labels, scores)["auroc"]


def after_epoch(state, loss, scores, auroc, seconds, sub_epochs):
    """The run's state after one more meta epoch (a new dict: only the training loop calls it).
    Each epoch's sub_epochs is kept: a run resumed with another value says what it really did."""
    return {**state, "epoch": state["epoch"] + 1,
            "loss_history": state["loss_history"] + [loss],
            "auroc_history": state["auroc_history"] + [auroc],
            "test_scores": torch.from_numpy(scores),
            "train_seconds": state["train_seconds"] + seconds,
            "epoch_seconds": state.get("epoch_seconds", []) + [seconds],  # for history.csv
            "epoch_sub_epochs": state.get("epoch_sub_epochs", []) + [sub_epochs]}


class Trained(NamedTuple):
    """A trained (or read-back) run: what its reports and final checkpoint need."""
    model: DifferNet
    optimizer: object  # adam.AdamInBackward or adam.AdamAfterBackward
    generator: torch.Generator
    state: dict
    train_set: object
    test_set: object
    finished_before: bool  # read back from a finished checkpoint, nothing trained now


def start_state(model, optimizer, generator, cfg, files, ckpt):
    """A fresh state, or the checkpoint's when resuming (checked against config and data)."""
    if not (cfg["resume"] and ckpt and os.path.isfile(ckpt)):
        return new_state(files.name, data_fingerprint(files))
    return restore(model, optimizer, generator, cfg, files, ckpt)


def train_class(cfg, files, device, writer=None, log=print, tag=None):
    """Train (or resume) one class: layout.ClassFiles in, Trained out. After every meta epoch but
    the last, a snapshot goes to `writer` (checkpoints.CheckpointWriter, None: no checkpoints);
    the caller writes the final one with the metrics. A diverging flow raises a DivergedError;
    the checkpoint on disk stays the last good one. tag names the run in the printed lines."""
    tag = tag or files.name
    progress = cfg["verbose"] and sys.stderr.isatty()
    model, optimizer, generator = setup_model(cfg, device)
    train_set, test_set = load_class_data(cfg, files, progress)
    # restored after the data are loaded, since loading draws from torch's global RNG
    state = start_state(model, optimizer, generator, cfg, files, writer and writer.path)
    finished_before = state["epoch"] == cfg["meta_epochs"]
    if state["epoch"]:
        log(f"[{tag}] resumed from {writer.path} after meta epoch {state['epoch']}")
    train_images, test_images = images_for(train_set, cfg, device), images_for(test_set, cfg, device)
    try:
        while state["epoch"] < cfg["meta_epochs"]:
            started = time.perf_counter()
            try:
                loss = train_meta_epoch(model, optimizer, generator, train_images, cfg, device,
                                        progress)
                scores, auroc = evaluate_epoch(model, test_images, test_set.labels, cfg,
                                               state["epoch"], progress)
            except DivergedError as e:
                raise type(e)(f"[{tag}] {e} in meta epoch {state['epoch'] + 1}; "
                              f"{kept_checkpoint_text(writer)}. Lower lr_init or "
                              f"clamp_alpha") from None
            state = after_epoch(state, loss, scores, auroc, time.perf_counter() - started,
                                cfg["sub_epochs"])
            if state["epoch"] == cfg["meta_epochs"]:
                state = {**state, "threshold": training_threshold(model, train_images, cfg,
                                                                  device, progress)}
            log(epoch_line(tag, state, cfg["meta_epochs"]))
            if writer and state["epoch"] < cfg["meta_epochs"]:
                writer.submit(lambda: snapshot(model, optimizer, generator, cfg, state, copy=True),
                              state["epoch"])
    except KeyboardInterrupt:
        if writer:
            log(f"[{tag}] interrupted; {writer.finish_after_interrupt()}")
        raise
    return Trained(model, optimizer, generator, state, train_set, test_set, finished_before)


def kept_checkpoint_text(writer):
    """What remains on disk after a failure, said truthfully."""
    if writer is None:
        return "save_model is off: no checkpoint"
    return writer.on_disk_text()
