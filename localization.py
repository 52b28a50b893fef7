"""Where the model sees defects: gradient maps, pixel-level AUROC, and the plots of a class."""
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402
from torchvision.transforms.v2.functional import gaussian_blur  # noqa: E402

from data import make_batch, read_rgb, rotate, rotation_angles  # noqa: E402
from model import nll_loss  # noqa: E402

GRAD_SIGMA = 3.0  # px, the blur of the reference localisation
BLUR_KERNEL = 2 * math.ceil(3 * GRAD_SIGMA) + 1  # covers +-3 sigma


def gradient_map(model, image_uint8, n_rotations, device, chunk=64):
    """(S, S) map of one image: the loss of its evenly spaced rotations back-propagated to the
    pixels, each gradient rotated back, blurred (sigma 3 px), mean |.| over rotations and
    channels, squared."""
    model.eval()
    angles = rotation_angles(1, n_rotations, "fixed", None)[0]
    total = torch.zeros(image_uint8.shape[-2:], device=device)
    for part in torch.split(angles, chunk):
        x = make_batch(image_uint8.unsqueeze(0).expand(len(part), -1, -1, -1), part, device)
        x.requires_grad_(True)
        z, log_jac_det = model(x)
        # the batch mean would scale every chunk by 1/len(part); the sum keeps chunks comparable
        grad, = torch.autograd.grad(nll_loss(z, log_jac_det) * len(part), x)
        back = rotate(grad, -part)
        blurred = gaussian_blur(back, [BLUR_KERNEL, BLUR_KERNEL], [GRAD_SIGMA, GRAD_SIGMA])
        total += blurred.abs().mean(dim=1).sum(dim=0)
    return ((total / n_rotations) ** 2).detach().cpu()


def mask_for(mask_path, size_wh):
    """Binary ground truth at the original image size; all-normal when there is no mask."""
    if mask_path is None:
        return np.zeros(size_wh[::-1], dtype=bool)
    with Image.open(mask_path) as m:
        return np.asarray(m.convert("L")) > 0


def sample_pixels(heat, truth, n_samples, rng):
    """All pixels, or n_samples drawn uniformly (bounded memory on VisA's 1.5 MP masks)."""
    flat_heat, flat_truth = heat.reshape(-1), truth.reshape(-1)
    if n_samples and n_samples < flat_heat.size:
        idx = rng.choice(flat_heat.size, n_samples, replace=False)
        return flat_heat[idx], flat_truth[idx]
    return flat_heat, flat_truth


def resize_map(heat, height, width):
    return F.interpolate(heat[None, None], size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def pixel_auroc(maps, image_set, n_samples, seed):
    """Pixel AUROC over all test images (normal ones count as all-normal pixels); maps are
    resized to the mask size and n_samples pixels per image are drawn (0 = every pixel)."""
    rng = np.random.default_rng(seed)
    values, labels = [], []
    for heat, path, mask_path in zip(maps, image_set.paths, image_set.mask_paths):
        with Image.open(path) as img:
            size_wh = img.size
        truth = mask_for(mask_path, size_wh)
        v, t = sample_pixels(resize_map(heat, *truth.shape), truth, n_samples, rng)
        values.append(v)
        labels.append(t)
    labels = np.concatenate(labels)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.concatenate(values)))


def save_map_figure(path, image_path, heat, mask_path, score, threshold):
    """Image | heat overlay | ground truth, side by side, titled with the score."""
    image = np.asarray(read_rgb(image_path).resize(heat.shape[::-1]))
    panels = 3 if mask_path else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.3))
    axes[0].imshow(image)
    axes[0].set_title(Path(image_path).name)
    axes[1].imshow(image)
    axes[1].imshow(heat.numpy(), cmap="jet", alpha=0.5)
    verdict = "" if threshold is None else (" anomalous" if score > threshold else " normal")
    axes[1].set_title(f"score {score:.4f}{verdict}")
    if mask_path:
        with Image.open(mask_path) as m:
            axes[2].imshow(np.asarray(m.convert("L").resize(heat.shape[::-1])), cmap="gray")
        axes[2].set_title("ground truth")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_auroc_history(path, history):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(history) + 1), history, marker="o")
    ax.set_xlabel("meta epoch")
    ax.set_ylabel("image AUROC")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_roc(path, labels, scores):
    fig, ax = plt.subplots(figsize=(4, 4))
    if len(set(labels.tolist())) == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(labels, scores):.4f}")
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_score_histogram(path, labels, scores, threshold):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(scores.min(), scores.max(), 30)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="anomalous")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold")
    ax.set_xlabel("anomaly score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summary_plot(rows, seed_auroc, results_dir):
    """All classes' final AUROC beside the seed's published numbers."""
    rows = [r for r in rows if r.get("class") != "mean"]
    names = [r["class"] for r in rows]
    ours = [r.get("auroc_last") or float("nan") for r in rows]
    seed = [seed_auroc.get(n, float("nan")) for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 4))
    ax.bar(x - 0.2, ours, 0.4, label="this run (last epoch)")
    ax.bar(x + 0.2, seed, 0.4, label="seed (max, test-selected)")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("image AUROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(results_dir) / "summary.png", dpi=80)
    plt.close(fig)


def class_reports(model, state, train_set, test_set, cfg, class_name, device):
    """Plots of a finished class, and its gradient maps and pixel AUROC when asked for."""
    out = Path(cfg["results_dir"]) / class_name
    out.mkdir(parents=True, exist_ok=True)
    scores = state["test_scores"].numpy()
    threshold = state.get("threshold")
    plot_auroc_history(out / "auroc.png", state["auroc_history"])
    plot_roc(out / "roc.png", test_set.labels, scores)
    plot_score_histogram(out / "scores.png", test_set.labels, scores, threshold)
    want_pixels = cfg["pixel_auroc"] and any(m is not None for m in test_set.mask_paths)
    shown = [i for i in range(len(test_set)) if cfg["grad_map_viz"]
             and (test_set.labels[i] == 1 or cfg["grad_map_all"])]
    needed = range(len(test_set)) if want_pixels else shown
    maps = {i: gradient_map(model, test_set.images[i], cfg["n_transforms_test"], device,
                            cfg["backbone_batch"]) for i in needed}
    if want_pixels:
        state["pixel_auroc"] = pixel_auroc([maps[i] for i in range(len(test_set))], test_set,
                                           cfg["pixel_samples_per_image"], cfg["seed"])
    for i in shown:
        path = Path(test_set.paths[i])
        save_map_figure(out / "maps" / f"{path.parent.name}_{path.stem}.png", path, maps[i],
                        test_set.mask_paths[i], float(scores[i]), threshold)
