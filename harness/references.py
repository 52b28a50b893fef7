"""Published image AUROCs to compare a run against, with where each number comes from.

Values are fractions (0.949 = 94.9 %), like the AUROCs this repository prints.
None marks a number that could not be checked against a source: it is left out
rather than guessed. A preset names its table with `reference = "mvtec"`.
"""

DIFFERNET_PAPER = ("Rudolph, Wandt, Rosenhahn, 'Same Same But DifferNet: Semi-Supervised Defect "
                   "Detection with Normalizing Flows', WACV 2021, arXiv 2008.12577")

REFERENCES = {
    "visa": {
        "label": "published VisA adaptation (max over epochs)",
        "source": "the unofficial DifferNet adaptation to VisA this repository was seeded from: "
                  "image AUROC, maximum over its evaluations (selected on the test set), "
                  "~1-2 h per class",
        "auroc": {"candle": 0.8825, "capsules": 0.7145, "cashew": 0.9701, "chewinggum": 0.9685,
                  "fryum": 0.9501, "macaroni1": 0.8205, "macaroni2": 0.7748, "pcb1": 0.9004,
                  "pcb2": 0.9825, "pcb3": 0.8567, "pcb4": 0.9897, "pipe_fryum": 0.9637},
        "mean": 0.8978,
    },
    "mvtec": {
        "label": "DifferNet paper, MVTec AD",
        "source": DIFFERNET_PAPER + ": MVTec AD, image AUROC per category (max over its "
                  "evaluations, as its reference code reports). Mean 94.9 as published; the "
                  "per-category values are the paper's Table 1 as copied in Kamoona et al., "
                  "arXiv 2108.12159, Table 1 (a secondary copy; these 15 average 94.7)",
        "auroc": {"bottle": 0.990, "cable": 0.959, "capsule": 0.869, "carpet": 0.929,
                  "grid": 0.840, "hazelnut": 0.993, "leather": 0.971, "metal_nut": 0.961,
                  "pill": 0.888, "screw": 0.963, "tile": 0.994, "toothbrush": 0.986,
                  "transistor": 0.911, "wood": 0.998, "zipper": 0.951},
        "mean": 0.949,
    },
    "mtd": {
        "label": "DifferNet paper, Magnetic Tile Defects",
        "source": DIFFERNET_PAPER + ": Magnetic Tile Defects result, image AUROC, trained on the "
                  "761 defect-free images of splits/mtd_train_filenames.txt",
        "auroc": {"mtd": 0.977},
        "mean": 0.977,
    },
}

