# Offline demo: a synthetic class with subtle defects, random AlexNet weights, a small flow,
# on the CPU. A pipeline check only: numbers from random features say nothing about DifferNet.
# Many small steps (batch 12, 2 rotations) so that the curve shows the flow learning; the
# measured time and numbers are in README.md.
dataset_path = "data/demo"
class_names = ["demo"]
make_demo_data = True
pretrained = False
device = "cpu"
img_size = 160
n_scales = 2
n_coupling_blocks = 4
fc_internal = 256
n_transforms = 2
batch_size = 12
n_transforms_test = 8
test_rotations = "fixed"
meta_epochs = 5
sub_epochs = 8
num_workers = 0
resume = True  # running the demo again reads the finished run back instead of refusing
checkpoint_dir = "checkpoints/demo"
results_dir = "results/demo"
reference = "none"
