# Offline demo: a synthetic class, random AlexNet weights, a small flow; about 3 minutes on
# a 2-core CPU. A pipeline check only: numbers from random features say nothing about DifferNet.
dataset_path = "data/demo"
class_names = ["demo"]
make_demo_data = True
pretrained = False
device = "cpu"
img_size = 160
n_scales = 2
n_coupling_blocks = 4
fc_internal = 256
n_transforms_test = 8
meta_epochs = 5
sub_epochs = 4
num_workers = 0
checkpoint_dir = "checkpoints/demo"
results_dir = "results/demo"
reference = "none"
