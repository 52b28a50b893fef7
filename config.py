"""Defaults of DifferNet on VisA. Every value reproduces the paper (docs/method.md says where
each one comes from).

Override without editing: `python main.py [preset.py] [--name=value ...]`
(values are Python literals). configurator.resolve_config applies presets and
overrides, checks every value and adds the derived ones (`n_feat`, the feature
count; `seed`, the first of `seeds`). No imports here, so importing this file has
no side effects.
"""

# data
dataset_path = "data/visa"          # folder holding one sub-folder per class (prepare_visa.py writes it)
class_names = ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
               "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"]  # classes trained, one model each
img_size = 448                      # side of the square the images are resized to, pixels
num_workers = 2                     # processes decoding images while the cache is built (0 = in this process)
skip_bad_images = False             # True: a corrupt image is skipped with a warning; False: it stops the run
make_demo_data = False              # True: write the synthetic demo classes into dataset_path when missing

# transformations (paper section 3.2)
n_transforms = 4                    # random rotations of each training image per batch
n_transforms_test = 64              # rotations of each test image, scores averaged
test_rotations = "random"           # 'random': seeded random angles as in the paper; 'fixed': i*360/n
transf_rotations = True             # rotate by a random angle in [-180, 180] degrees
transf_brightness = 0.0             # colour jitter strength, 0 = off
transf_contrast = 0.0               # colour jitter strength, 0 = off
transf_saturation = 0.0             # colour jitter strength, 0 = off

# feature extractor
pretrained = True                   # ImageNet AlexNet weights; False = random weights (pipeline check only)
weights_path = ""                   # AlexNet state_dict file; "" = torchvision's download and cache
n_scales = 3                        # image sizes fed to AlexNet: img_size, img_size/2, ...

# normalizing flow (paper section 3.3)
n_coupling_blocks = 8               # permutation + affine coupling blocks
fc_internal = 2048                  # width of the subnetworks' hidden layers
dropout = 0.0                       # dropout inside the subnetworks
clamp_alpha = 3.0                   # soft clamp of the log-scale, paper eq. 2

# training
lr_init = 2e-4                      # Adam learning rate, constant
adam_betas = (0.8, 0.8)             # Adam betas
adam_eps = 1e-4                     # Adam epsilon
weight_decay = 1e-5                 # Adam weight decay
batch_size = 24                     # images per step (each seen n_transforms times)
meta_epochs = 24                    # evaluations; the test set is scored after each
sub_epochs = 8                      # training epochs per meta epoch
seeds = [0]                         # one run per seed and class; each seeds every random draw of its run

# evaluation and localisation
threshold_percentile = 99.0         # verdict threshold: this percentile of the training images' scores
grad_map_viz = False                # after training, write gradient maps of the anomalous test images
grad_map_all = False                # with grad_map_viz: maps of every test image, not only anomalous ones
pixel_auroc = True                  # pixel AUROC and AUPRO from gradient maps when ground-truth masks exist
transforms_curve = [1, 2, 4, 8, 16, 32, 64]  # after training: test AUROC and scoring time per rotation count ([] = none)
n_misses = 8                        # worst-scored anomalous and normal test images shown in results/<class>/misses

# speed (none changes the method; those that change numbers are off; docs/method.md measures each)
cache_device = "auto"               # uint8 image cache: 'auto' (on the GPU if it fits half its free memory), 'cpu', 'device'; same bits
cache_mmap = ""                     # folder for a memory-mapped image cache; "" = keep it in memory
channels_last = False               # channels-last convolutions: faster on GPU; changes features by ~2e-6 of their scale, scores ~1e-7
amp_bf16 = False                    # backbone in bfloat16 autocast on CUDA (changes scores slightly)
tf32 = False                        # TF32 for the flow's matmuls on CUDA (changes scores slightly)
backbone_batch = 64                 # transformed images per backbone forward pass (memory; other sizes round differently, ~1e-7)
adam_kernel = "auto"                # 'auto': fused on a GPU, single-tensor loop on the CPU; 'fused' (CPU: 6x faster step, other rounding: changes numbers); 'single'

# run
device = "auto"                     # 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'
save_model = True                   # write a checkpoint after every meta epoch
keep_optimizer = False              # True: the finished checkpoint keeps Adam's moments (3x the bytes), to train on later
resume = False                      # continue each class from its last checkpoint
checkpoint_dir = "checkpoints"      # checkpoint_dir/<class>/seed<k>/checkpoint.pt
results_dir = "results"             # results.csv, results.md and per-class plots
reference = "visa"                  # published AUROCs in the results table: 'visa', 'mvtec', 'mtd' or 'none'
report_only = False                 # True: train nothing; rebuild results.* and index.html from the runs in results_dir (finished runs lacking per_size/transforms curve get them from their checkpoint)
verbose = True                      # progress bars (also off when not writing to a terminal)
