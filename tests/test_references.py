"""The published tables the results table compares with: complete, and as published."""
import os
import runpy

import numpy as np
import pytest

from conftest import ROOT
from harness.references import REFERENCES
from prepare_visa import OFFICIAL_COUNTS


def test_visa_reference_covers_every_class():
    table = REFERENCES["visa"]["auroc"]
    assert sorted(table) == sorted(OFFICIAL_COUNTS)
    assert round(sum(table.values()) / len(table), 4) == REFERENCES["visa"]["mean"] == 0.8978


def test_mvtec_reference_holds_all_fifteen_categories_and_says_where_from():
    table = REFERENCES["mvtec"]
    assert len(table["auroc"]) == 15 and None not in table["auroc"].values()
    assert table["auroc"]["wood"] == 0.998 and table["auroc"]["capsule"] == 0.869
    assert round(float(np.mean(list(table["auroc"].values()))), 3) == 0.947
    assert table["mean"] == 0.949
    assert "2108.12159" in table["source"] and "94.7" in table["source"]


@pytest.mark.parametrize("preset", ["mvtec", "mtd"])
def test_presets_name_their_reference_table(preset):
    values = runpy.run_path(os.path.join(ROOT, "presets", f"{preset}.py"))
    assert values["reference"] == preset
    assert sorted(values["class_names"]) == sorted(REFERENCES[preset]["auroc"])
    assert values["dataset_path"] == f"data/{preset}"
