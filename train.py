"""Training and scoring of one class: the meta-epoch / sub-epoch loop of the paper."""
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from data import (build_image_set, cache_on_device, drop_unreadable_masks, find_class_files,
                  make_batch, rotation_angles, take, to_device, warn_missing_masks)
from model import DifferNet, anomaly_score, flow_parameters, load_alexnet_features, nll_loss
from checkpoints import (checkpoint_path, data_fingerprint, new_state, restore, save_checkpoint,
                         snapshot)
from utils import fmt, seed_everything


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""
    reason = "non-finite loss"


class NonFiniteScoresError(NonFiniteLossError):
    """Test scores became NaN or infinite: the flow diverged although the loss stayed finite."""
    reason = "non-finite test scores"


class AdamInBackward:
    """Adam whose update of each parameter runs as soon as that parameter's gradient is complete,
    during backward, after which the gradient is freed. The update equals that of one Adam over
    all parameters, but the flow's gradients (0.7 GB at the default size) never exist all at
    once. state_dict() has torch.optim.Adam's format."""

    def __init__(self, params, **adam_args):
        self.params = list(params)
        self.optimizers = [torch.optim.Adam([p], **adam_args) for p in self.params]
        for p, opt in zip(self.params, self.optimizers):
            p.register_post_accumulate_grad_hook(self._step_and_free(opt))

    @staticmethod
    def _step_and_free(opt):
        def hook(param):
            opt.step()
            param.grad = None
        return hook

    def step(self):
        """Nothing left to do: each parameter was updated during backward."""

    def zero_grad(self, set_to_none=True):
        """Nothing to clear: each gradient was freed after its update."""

    def state_dict(self):
        groups = [dict(self.optimizers[0].state_dict()["param_groups"][0],
                       params=list(range(len(self.params))))]
        state = {i: opt.state_dict()["state"][0] for i, opt in enumerate(self.optimizers)
                 if opt.state_dict()["state"]}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        group = {k: v for k, v in state_dict["param_groups"][0].items() if k != "params"}
        for i, opt in enumerate(self.optimizers):
            state = {0: state_dict["state"][i]} if i in state_dict["state"] else {}
            opt.load_state_dict({"state": state, "param_groups": [dict(group, params=[0])]})


def make_optimizer(flow, lr, betas, eps, weight_decay):
    """Adam on the flow's parameters only (the backbone has none to train), stepping during
    backward; one fused kernel per parameter on GPUs, the plain loop on the CPU."""
    params = flow_parameters(flow)
    return AdamInBackward(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                          foreach=False, fused=params[0].is_cuda)


def build_model(cfg, backbone):
    """DifferNet from the config's architecture names, on no particular device."""
    return DifferNet(backbone, cfg["n_scales"], cfg["n_coupling_blocks"], cfg["fc_internal"],
                     cfg["dropout"], cfg["clamp_alpha"])


def train_one_epoch(model, optimizer, images, batch_size, n_transforms, device, generator,
                    rotations=True, jitter=(0.0, 0.0, 0.0), channels_last=False, amp_bf16=False,
                    backbone_batch=64, progress=False):
    """One pass over the shuffled training images, each seen n_transforms times per batch.
    Returns the mean loss; a non-finite loss raises NonFiniteLossError at the end of the epoch."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    losses = []  # device tensors: reading each step's loss would make the host wait for the GPU
    for start in tqdm(range(0, len(order), batch_size), desc="train", leave=False,
                      disable=not progress):
        distinct = take(images, order[start:start + batch_size], device)  # each image moved once
        batch = distinct.repeat_interleave(n_transforms, dim=0)  # the transforms' copies, on device
        angles = (torch.empty(len(batch)).uniform_(-180.0, 180.0, generator=generator)
                  if rotations else None)
        feats = embed_in_chunks(model, batch, angles, device, jitter, generator, channels_last,
                                amp_bf16, backbone_batch)
        z, log_jac_det = model.flow(feats)
        loss = nll_loss(z, log_jac_det)
        loss.backward()
        optimizer.step()  # AdamInBackward has stepped during backward already: a no-op there
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return finite_mean(torch.stack(losses).tolist())  # the epoch's one wait for the device


def finite_mean(losses):
    """Mean of an epoch's step losses. A non-finite one raises NonFiniteLossError: the steps
    after it trained on corrupted weights, so the caller discards the epoch and keeps the last
    good checkpoint."""
    bad = [(step, value) for step, value in enumerate(losses, 1) if not math.isfinite(value)]
    if bad:
        step, value = bad[0]
        raise NonFiniteLossError(f"training loss is {value} at step {step} of {len(losses)}")
    return float(np.mean(losses))


def embed_in_chunks(model, batch, angles, device, jitter, generator, channels_last, amp_bf16,
                    chunk):
    """Frozen-backbone features of a training batch (uint8, on the device), `chunk` transformed
    images at a time, so the float copies of 448 px images never exist for the whole batch."""
    feats = []
    for start in range(0, len(batch), chunk):
        part = slice(start, start + chunk)
        x = make_batch(batch[part], None if angles is None else angles[part], device, jitter,
                       generator, channels_last)
        feats.append(model.embed(x, amp_bf16))
    return torch.cat(feats)


@torch.no_grad()
def score_images(model, images, angles, device, backbone_batch, channels_last=False, amp_bf16=False,
                 progress=False):
    """Anomaly score of each image: mean over its rotations (angles: N x T) of mean(z^2).
    A batch holds backbone_batch consecutive (image, rotation) pairs; only its distinct images
    cross to the device, and are repeated for their rotations there."""
    model.eval()
    n, t = angles.shape
    image_index = torch.arange(n).repeat_interleave(t)
    flat_angles = angles.reshape(-1)
    scores = torch.empty(n * t, device=device)  # read back once, not per batch
    for start in tqdm(range(0, n * t, backbone_batch), desc="score", leave=False, disable=not progress):
        sel = slice(start, start + backbone_batch)
        first, last = int(image_index[sel][0]), int(image_index[sel][-1])
        distinct = take(images, torch.arange(first, last + 1), device)
        batch = distinct[(image_index[sel] - first).to(device, non_blocking=True)]
        x = make_batch(batch, flat_angles[sel], device, channels_last=channels_last)
        z, _ = model(x, amp_bf16)
        scores[sel] = anomaly_score(z).float()
    return scores.cpu().view(n, t).mean(dim=1).numpy()


def image_auroc(labels, scores):
    """Image-level AUROC, anomalous = positive; NaN (with a warning) when a class is absent."""
    if len(set(labels.tolist())) < 2:
        warnings.warn("the test set holds only one kind of image (normal or anomalous); "
                      "AUROC is undefined and reported as n/a")
        return float("nan")
    return float(roc_auc_score(labels, scores))


def evaluation_generator(seed, epoch, stream=0):
    """A generator for one evaluation's random angles (stream 0: test set, 1: training images),
    independent of the training stream, so a resumed run draws the same angles."""
    state = np.random.SeedSequence([seed, stream, epoch]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def load_class_data(cfg, class_name, progress=False):
    """Decoded train and test ImageSets of a class (cache in memory or memory-mapped); with
    skip_bad_images, the images of unreadable masks are left out here."""
    train_paths, (test_paths, test_labels, test_masks) = find_class_files(cfg["dataset_path"],
                                                                          class_name)
    bad_masks = []
    if cfg["skip_bad_images"]:  # without it, main.py has decoded every mask before any work
        test_paths, test_labels, test_masks, bad_masks = drop_unreadable_masks(
            test_paths, test_labels, test_masks, skip_bad=True)
    warn_missing_masks(class_name, test_labels, test_masks)

    def mmap(split):
        return os.path.join(cfg["cache_mmap"], f"{class_name}_{split}.npy") if cfg["cache_mmap"] else ""

    common = dict(size=cfg["img_size"], num_workers=cfg["num_workers"],
                  skip_bad=cfg["skip_bad_images"], progress=progress)
    train = build_image_set(train_paths, np.zeros(len(train_paths), np.int64),
                            [None] * len(train_paths), mmap_file=mmap("train"), **common)
    test = build_image_set(test_paths, test_labels, test_masks, mmap_file=mmap("test"), **common)
    test.skipped += bad_masks
    if len(train) == 0:
        raise FileNotFoundError(f"no readable training images for '{class_name}'")
    return train, test


def images_for(image_set, cfg, device):
    """The uint8 cache that batches are cut from: moved to the device once when cache_device
    is 'device', or 'auto' on a GPU with room for it (0.54 GB for 900 images at 448 px, budget
    in data.cache_on_device); else left in host memory, each batch staged in pinned memory."""
    if cache_on_device(cfg["cache_device"], device, image_set.images.nbytes):
        return to_device(image_set.images, device)
    return image_set.images


def score_set(model, images, cfg, device, generator, progress=False):
    """Scores of uint8 images (N, 3, S, S) with the configured test rotations."""
    angles = rotation_angles(len(images), cfg["n_transforms_test"], cfg["test_rotations"], generator)
    return score_images(model, images, angles, device, cfg["backbone_batch"], cfg["channels_last"],
                        cfg["amp_bf16"], progress)


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
    if cfg["channels_last"]:
        model.features.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.flow, cfg["lr_init"], cfg["adam_betas"], cfg["adam_eps"],
                               cfg["weight_decay"])
    return model, optimizer, torch.Generator().manual_seed(cfg["seed"])


def train_meta_epoch(model, optimizer, generator, train_images, cfg, device, progress):
    """sub_epochs training epochs; returns their mean loss."""
    jitter = (cfg["transf_brightness"], cfg["transf_contrast"], cfg["transf_saturation"])
    losses = [train_one_epoch(model, optimizer, train_images, cfg["batch_size"],
                              cfg["n_transforms"], device, generator, cfg["transf_rotations"],
                              jitter, cfg["channels_last"], cfg["amp_bf16"],
                              cfg["backbone_batch"], progress)
              for _ in range(cfg["sub_epochs"])]
    return float(np.mean(losses))


def kept_checkpoint(ckpt, save_model):
    """What remains on disk after a failure, said truthfully."""
    if save_model and os.path.isfile(ckpt):
        return f"the last good checkpoint ({ckpt}) is kept"
    return "no checkpoint was written" if save_model else "save_model is off: no checkpoint"


def start_state(model, optimizer, generator, cfg, class_name, ckpt, data, log, tag):
    """A fresh state, or the checkpoint's when resuming (checked against config and data)."""
    if not (cfg["resume"] and os.path.isfile(ckpt)):
        return new_state(class_name, data)
    state = restore(model, optimizer, generator, cfg, class_name, ckpt, data)
    log(f"[{tag}] resumed from {ckpt} after meta epoch {state['epoch']}")
    return state


def evaluate_epoch(model, state, test_images, test_set, cfg, device, progress):
    """Score the test set after a meta epoch; non-finite scores mean the flow diverged."""
    scores = score_set(model, test_images, cfg, device,
                       evaluation_generator(cfg["seed"], state["epoch"]), progress)
    if not np.isfinite(scores).all():
        raise NonFiniteScoresError(f"{int((~np.isfinite(scores)).sum())} test scores are not finite")
    state["epoch"] += 1
    state["auroc_history"].append(image_auroc(test_set.labels, scores))
    state["test_scores"] = torch.from_numpy(scores)


def train_class(cfg, class_name, device, ckpt=None, log=print, tag=None):
    """Train (or resume) one class; returns the model, its final state and the image sets.
    A diverging flow raises NonFiniteLossError; the checkpoint on disk stays the last good one.
    tag names the run in the printed lines (default: the class name)."""
    tag = tag or class_name
    progress = cfg["verbose"] and sys.stderr.isatty()
    ckpt = ckpt or checkpoint_path(cfg["checkpoint_dir"], class_name)
    model, optimizer, generator = setup_model(cfg, device)
    train_set, test_set = load_class_data(cfg, class_name, progress)
    data = data_fingerprint(cfg["dataset_path"], class_name)
    # restored after the data are loaded, since loading draws from torch's global RNG
    state = start_state(model, optimizer, generator, cfg, class_name, ckpt, data, log, tag)
    train_images = images_for(train_set, cfg, device)
    test_images = images_for(test_set, cfg, device)
    while state["epoch"] < cfg["meta_epochs"]:
        started = time.perf_counter()
        try:
            loss = train_meta_epoch(model, optimizer, generator, train_images, cfg, device, progress)
            evaluate_epoch(model, state, test_images, test_set, cfg, device, progress)
        except NonFiniteLossError as e:
            raise type(e)(
                f"[{tag}] {e} in meta epoch {state['epoch'] + 1}; "
                f"{kept_checkpoint(ckpt, cfg['save_model'])}. Lower lr_init or clamp_alpha") from None
        state["loss_history"].append(loss)
        seconds = time.perf_counter() - started
        state["train_seconds"] += seconds
        state.setdefault("epoch_seconds", []).append(seconds)  # history.csv's seconds column
        if state["epoch"] == cfg["meta_epochs"]:
            state["threshold"] = training_threshold(model, train_images, cfg, device, progress)
        log(epoch_line(tag, state, cfg["meta_epochs"]))
        if cfg["save_model"]:
            save_checkpoint(ckpt, snapshot(model, optimizer, generator, cfg, state))
    return model, state, train_set, test_set


def training_threshold(model, train_images, cfg, device, progress=False):
    """Verdict threshold: the threshold_percentile-th percentile of the training images' scores."""
    scores = score_set(model, train_images, cfg, device,
                       evaluation_generator(cfg["seed"], 0, stream=1), progress)
    return float(np.percentile(scores, cfg["threshold_percentile"]))
