"""A small synthetic class for the offline demo and the tests.

Round objects on a textured background; anomalous ones carry a scratch, a hole
or a stain, with its ground-truth mask. Written once, with a fixed seed, in the
layout main.py reads (train/good, test/good, test/anomaly, ground_truth/anomaly).
"""
import os
from dataclasses import dataclass
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFECTS = ("scratch", "hole", "stain")
MARKER, MARKER_TEXT = ".complete", "synthetic demo class\n"
DEMO_SEED = 0  # the data never depend on the training seeds
# subtle enough that the first evaluation is clearly imperfect and training visibly helps
@dataclass(frozen=True)
class DefectStyle:
    """How the anomalous images' defects are drawn: strength < 1 blends a defect into the
    object, scale < 1 shrinks it; labels writes defects.csv naming each image's defect."""
    strength: float = 1.0
    scale: float = 1.0
    labels: bool = False


DEMO_DEFECTS = DefectStyle(strength=0.7, scale=0.85, labels=True)  # subtle, labelled


def _background(rng, size):
    noise = rng.normal(0, 6, (size, size, 1)) + np.array([70, 74, 80])
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))


def draw_object(rng, size):
    """A defect-free object: a textured disc with a rim, slightly varied in place and tone."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    c = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    r = size * rng.uniform(0.33, 0.36)
    tone = rng.uniform(-10, 10)
    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=tuple(int(v + tone) for v in (200, 170, 110)))
    draw.ellipse([c[0] - 0.8 * r, c[1] - 0.8 * r, c[0] + 0.8 * r, c[1] + 0.8 * r],
                 outline=tuple(int(v + tone) for v in (170, 140, 90)), width=max(1, size // 60))
    return img.filter(ImageFilter.GaussianBlur(0.6)), c, r


def add_defect(rng, img, centre, radius, kind, strength=1.0, scale=1.0):
    """Draw one defect inside the object; returns the image and the binary mask. strength < 1
    blends the defect into the object (lower contrast), scale < 1 shrinks it."""
    size = img.size[0]
    plain = img.copy()
    radius = radius * scale
    mask = Image.new("L", img.size, 0)
    draws = (ImageDraw.Draw(img), ImageDraw.Draw(mask))
    angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.5) * radius
    p = centre + dist * np.array([np.cos(angle), np.sin(angle)])
    if kind == "scratch":
        d = rng.uniform(0.35, 0.5) * radius * np.array([np.cos(angle + 1.2), np.sin(angle + 1.2)])
        for draw, colour in zip(draws, ((40, 30, 25), 255)):
            draw.line([tuple(p - d), tuple(p + d)], fill=colour, width=max(2, size // 30))
    else:
        rr = radius * (rng.uniform(0.14, 0.2) if kind == "hole" else rng.uniform(0.2, 0.28))
        colour = (15, 15, 15) if kind == "hole" else (60, 120, 200)
        for draw, fill in zip(draws, (colour, 255)):
            draw.ellipse([p[0] - rr, p[1] - rr, p[0] + rr, p[1] + rr], fill=fill)
    return Image.blend(plain, img, strength), mask


def write_demo_class(class_dir, seed, size=160, n_train=60, n_test_good=20, n_test_bad=24,
                     style=DefectStyle()):
    """Write one synthetic class (JPEG images, PNG masks) and its done-marker. The default
    style draws plain, easy defects (the tests); the demo asks for subtle, labelled ones
    (DEMO_DEFECTS), with a defects.csv for the per-defect results."""
    class_dir = Path(class_dir)
    rng = np.random.default_rng(seed)
    folders = {"train": class_dir / "train" / "good", "good": class_dir / "test" / "good",
               "bad": class_dir / "test" / "anomaly", "gt": class_dir / "ground_truth" / "anomaly"}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("good", n_test_good)):
        for i in range(count):
            draw_object(rng, size)[0].save(folders[split] / f"{i:03d}.JPG", quality=95)
    for i in range(n_test_bad):
        img, c, r = draw_object(rng, size)
        img, mask = add_defect(rng, img, c, r, DEFECTS[i % len(DEFECTS)], style.strength,
                               style.scale)
        img.save(folders["bad"] / f"{i:03d}.JPG", quality=95)
        mask.save(folders["gt"] / f"{i:03d}.png")
    if style.labels:
        rows = "".join(f"{i:03d},{DEFECTS[i % len(DEFECTS)]}\n" for i in range(n_test_bad))
        (class_dir / "defects.csv").write_text("image,defect\n" + rows)
    (class_dir / MARKER).write_text(MARKER_TEXT)


def check_owned(class_dir):
    """The generator writes only folders it created: refuse one that holds anything else."""
    marker = class_dir / MARKER
    if marker.is_file() and marker.read_text() == MARKER_TEXT:
        return True
    if class_dir.exists() and (not class_dir.is_dir() or any(class_dir.iterdir())):
        raise ValueError(f"make_demo_data=True, but '{class_dir}' already exists and was not "
                         f"written by the demo generator; nothing was written into it. Set "
                         f"make_demo_data=False to train on it, or choose another dataset_path")
    return False


def current_umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def ensure_demo_data(dataset_path, class_names):
    """Generate each requested class that does not exist yet under dataset_path: built in a
    private temp folder and renamed into place, so a reader (or a second process) sees either
    nothing or the whole class."""
    for name in class_names:
        class_dir = Path(dataset_path) / name
        if check_owned(class_dir):
            continue
        print(f"writing synthetic demo class '{name}' into {class_dir}")
        Path(dataset_path).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=dataset_path))
        os.chmod(work, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the class from others
        write_demo_class(work, DEMO_SEED + zlib.crc32(name.encode()), style=DEMO_DEFECTS)
        try:
            if class_dir.is_dir():
                class_dir.rmdir()  # empty, checked above
            os.rename(work, class_dir)
        except OSError:
            shutil.rmtree(work)  # another process finished the same class first
            check_owned(class_dir)
