"""File names made from user names (a 240-character defect folder) are bounded before they are
written: cut, with a stable hash of the whole name."""
import numpy as np
import torch
from PIL import Image

import evaluate
import evaluate_outputs
import image_cache
from harness.reports import LOWEST_ANOMALOUS, write_misses
from files import MAX_NAME_BYTES, bounded_name


class FakeTestSet:
    def __init__(self, paths):
        self.paths, self.mask_paths = paths, [None] * len(paths)


def test_bounded_names_are_short_stable_and_distinct():
    long_a, long_b = "é" * 150 + "a", "é" * 150 + "b"  # 301 bytes each, same start
    a, b = bounded_name(long_a, ".png"), bounded_name(long_b, ".png")
    assert a != b and a == bounded_name(long_a, ".png")
    assert len(a.encode()) <= MAX_NAME_BYTES and a.endswith(".png")
    assert bounded_name("short", ".png") == "short.png"


def test_a_240_character_defect_folder_gets_its_misses_figure(tmp_path):
    folder = tmp_path / "test" / ("scratch_" * 30)[:240]
    folder.mkdir(parents=True)
    Image.new("RGB", (16, 16), (90, 90, 90)).save(folder / "000.png")
    out = tmp_path / "misses"
    write_misses(out, [(LOWEST_ANOMALOUS, 1, 0)], FakeTestSet([str(folder / "000.png")]),
                 np.array([0.5]), ["scratch"], 0.25, lambda i: torch.zeros(16, 16))
    figures = [p.name for p in out.glob("*.png")]
    assert len(figures) == 1 and len(figures[0].encode()) <= MAX_NAME_BYTES
    assert figures[0].startswith("lowest_scored_anomalous_01_scratch_")
    assert figures[0] in (out / "misses.csv").read_text()


def test_evaluate_map_and_cache_names_are_bounded(tmp_path):
    image = tmp_path / ("x" * 250 + ".jpg")
    name = evaluate.map_name(image, image)
    assert len(str(name).encode()) <= MAX_NAME_BYTES and str(name).endswith(".jpg.png")
    assert evaluate_outputs.is_our_map(tmp_path / name)  # removed by a later run like any map
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    cache = image_cache.cache_file(str(tmp_path), "c" * 240, "train", [str(tmp_path / "a.png")],
                                   64)
    assert len(cache.rsplit("/", 1)[1].encode()) <= MAX_NAME_BYTES
