"""Mean rows per kind of object: does a kind of class make DifferNet fail? VisA names three
kinds (its paper's grouping), MVTec AD two. A group's row is the mean of its classes that
finished, says over how many of its classes ("k of n", like the overall mean row), and sits
beside the same mean of the reference's values for those classes."""
import numpy as np

from harness.references import REFERENCES

# (dataset, kind, classes)
GROUPS = [
    ("VisA", "complex structure", ("pcb1", "pcb2", "pcb3", "pcb4")),
    ("VisA", "multiple instances", ("candle", "capsules", "macaroni1", "macaroni2")),
    ("VisA", "single instance", ("cashew", "chewinggum", "fryum", "pipe_fryum")),
    ("MVTec AD", "textures", ("carpet", "grid", "leather", "tile", "wood")),
    ("MVTec AD", "objects", ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill",
                             "screw", "toothbrush", "transistor", "zipper")),
]


def _finite(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not np.isnan(value))


def group_reference(members, reference):
    """(value, note) of a group row's reference: the mean of the reference's values of the
    group's classes in its mean; None when the reference has none for one of them."""
    if reference == "none" or not members:
        return None, "n/a"
    table = REFERENCES[reference]["auroc"]
    values = [table.get(r["class"]) for r in members]
    if any(v is None for v in values):
        return None, "n/a: a class of the group has no reference value"
    return float(np.mean(values)), f"mean of the reference's values of these {len(values)} classes"


def group_rows(rows, mean_keys, reference):
    """A mean row per group with a class in the table (rows: the class rows), in GROUPS order.
    A group row averages mean_keys over its classes with a value, as the overall mean row."""
    names = {r["class"] for r in rows}
    out = []
    for dataset, kind, classes in GROUPS:
        if not names & set(classes):
            continue
        own = [r for r in rows if r["class"] in classes]
        row = {"class": f"mean: {dataset} {kind}", "group": True}
        for key in mean_keys:
            values = [r[key] for r in own if _finite(r.get(key))]
            row[key] = float(np.mean(values)) if values else None
        members = [r for r in own if _finite(r.get("auroc_last"))]
        row["classes_in_mean"] = f"{len(members)} of {len(classes)}"
        row["reference_auroc"], row["reference_note"] = group_reference(members, reference)
        out.append(row)
    return out
