# MVTec AD, the paper's main benchmark: the 15 categories of the official download, fetched,
# verified and extracted into data/mvtec by `python prepare_mvtec.py` (its
# CLASS/train/good, CLASS/test/<defect>, CLASS/ground_truth/<defect>/<stem>_mask.png layout
# is read as is; a tree extracted by hand needs no preparation).
# Every method setting keeps the paper's defaults of config.py.
dataset_path = "data/mvtec"
class_names = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
               "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper"]
checkpoint_dir = "checkpoints/mvtec"
results_dir = "results/mvtec"
reference = "mvtec"  # references.py: the paper's per-category image AUROCs
