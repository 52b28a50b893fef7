# Magnetic Tile Defects, the paper's second benchmark, as one class 'mtd' written by
#   python prepare_mtd.py   (downloads and checks the data; --mtd_root DIR for a clone)
# (the paper's 761 defect-free training images; every other image is the test set).
# Every method setting keeps the paper's defaults of config.py.
dataset_path = "data/mtd"
class_names = ["mtd"]
checkpoint_dir = "checkpoints/mtd"
results_dir = "results/mtd"
reference = "mtd"  # references.py: the paper's MTD image AUROC
