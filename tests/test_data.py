"""Image discovery, decoding and the batched rotation against torchvision's PIL path."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from batches import IMAGENET_MEAN, IMAGENET_STD, make_batch, rotate, rotation_angles
from data import BadImageError, build_image_set, load_resized, read_rgb
from layout import find_class_files, list_images

ANGLES = [0.0, 17.0, -45.0, 90.0, 123.4, 180.0, -179.9]


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("angle", ANGLES)
def test_rotation_matches_torchvision_pil_path_exactly(angle):
    arr = random_image(64, 64)
    reference = np.asarray(TF.rotate(Image.fromarray(arr), angle,
                                     interpolation=InterpolationMode.NEAREST))
    ours = rotate(torch.from_numpy(arr).permute(2, 0, 1)[None].float(), torch.tensor([angle]))
    assert np.array_equal(ours[0].permute(1, 2, 0).byte().numpy(), reference)


def test_rotation_of_a_batch_uses_each_images_angle_and_non_square_sizes():
    arrs = [random_image(48, 80, seed=i) for i in range(len(ANGLES))]
    batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrs]).float()
    ours = rotate(batch, torch.tensor(ANGLES)).permute(0, 2, 3, 1).byte().numpy()
    for a, angle, out in zip(arrs, ANGLES, ours):
        reference = np.asarray(TF.rotate(Image.fromarray(a), angle,
                                         interpolation=InterpolationMode.NEAREST))
        # pixel centres that fall exactly between two source pixels may round either way
        assert (out == reference).all(-1).mean() > 0.99


def test_random_rotation_transform_is_what_we_match():
    """RandomRotation(180) draws an angle and calls the rotate we compare against."""
    arr = random_image(32, 32)
    torch.manual_seed(3)
    angle = float(torch.empty(1).uniform_(-180.0, 180.0))
    torch.manual_seed(3)
    reference = np.asarray(transforms.RandomRotation(180)(Image.fromarray(arr)))
    ours = rotate(torch.from_numpy(arr).permute(2, 0, 1)[None].float(), torch.tensor([angle]))
    assert np.array_equal(ours[0].permute(1, 2, 0).byte().numpy(), reference)


def test_make_batch_normalises_with_imagenet_statistics():
    img = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    x = make_batch(img, None, torch.device("cpu"))
    # torchvision's ImageNet statistics, written out: the module's constants are under test
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    assert (IMAGENET_MEAN, IMAGENET_STD) == (mean, std)
    expected = [(1 - m) / s for m, s in zip(mean, std)]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(expected))
    black = make_batch(img, torch.tensor([45.0]), torch.device("cpu"))
    assert torch.allclose(black[0, :, 0, 0], torch.tensor([-m / s for m, s in zip(mean, std)]))


def test_test_angles_fixed_and_seeded_random():
    fixed = rotation_angles(2, 4, "fixed", None)
    assert torch.equal(fixed, torch.tensor([[0.0, 90.0, 180.0, 270.0]] * 2))
    a = rotation_angles(3, 5, "random", torch.Generator().manual_seed(1))
    b = rotation_angles(3, 5, "random", torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.abs().max() <= 180


def test_junk_files_are_ignored(tmp_path):
    Image.fromarray(random_image(8, 8)).save(tmp_path / "a.JPG")
    for junk in (".DS_Store", "Thumbs.db", ".directory", "list.csv", ".hidden.png"):
        (tmp_path / junk).write_bytes(b"junk")
    assert [p.split("/")[-1] for p in list_images(tmp_path)] == ["a.JPG"]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_modes_are_read_as_rgb(tmp_path, mode):
    if mode == "I;16":
        img = Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000))
        path = tmp_path / "deep.png"
    else:
        img = Image.fromarray(random_image(8, 8)).convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    rgb = read_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)
    if mode == "I;16":  # scaled to 8 bits, not clipped at 255
        arr = np.asarray(rgb)[..., 0]
        assert arr.max() == round(63000 / 65535 * 255) and arr[0, 1] == round(1000 / 65535 * 255)


def test_load_resized_shape_and_dtype(tmp_path):
    Image.fromarray(random_image(30, 50)).save(tmp_path / "x.png")
    t = load_resized(tmp_path / "x.png", 16)
    expected = np.asarray(Image.fromarray(random_image(30, 50)).resize((16, 16), Image.BILINEAR))
    assert t.dtype == torch.uint8 and t.shape == (3, 16, 16)
    assert np.array_equal(t.permute(1, 2, 0).numpy(), expected)


def write_layout(root, test_folders, masks=()):
    for folder, n in (("train/good", 2),) + tuple(test_folders):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(random_image(8, 8, i)).save(root / folder / f"{i:03d}.png")
    for m in masks:
        (root / m).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / m)


def test_layouts_of_other_tools_are_read(tmp_path):
    anomalib = tmp_path / "anomalib" / "pcb1"
    write_layout(anomalib, (("test/good", 1), ("test/bad", 2)), ["ground_truth/bad/000.png"])
    _, (paths, labels, masks) = find_class_files(tmp_path / "anomalib", "pcb1")
    assert labels.tolist() == [1, 1, 0]
    assert masks[0].endswith("ground_truth/bad/000.png") and masks[1] is None
    mvtec = tmp_path / "mvtec" / "bottle"
    write_layout(mvtec, (("test/good", 1), ("test/broken_large", 1), ("test/contamination", 1)),
                 ["ground_truth/broken_large/000_mask.png", "ground_truth/contamination/000_mask.png"])
    _, (paths, labels, masks) = find_class_files(tmp_path / "mvtec", "bottle")
    assert labels.tolist() == [1, 1, 0]
    assert masks[0].endswith("broken_large/000_mask.png")
    assert masks[1].endswith("contamination/000_mask.png")


def test_missing_folders_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)dataset_path.*prepare_visa.py"):
        find_class_files(tmp_path / "nowhere", "candle")
    with pytest.raises(FileNotFoundError, match="(?s)class folder of 'candle'.*train/good"):
        find_class_files(tmp_path, "candle")
    (tmp_path / "candle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="'test/good' of 'candle'"):
        find_class_files(tmp_path, "candle")
    (tmp_path / "candle" / "test" / "good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images in .*train/good"):
        find_class_files(tmp_path, "candle")
    Image.fromarray(random_image(8, 8)).save(tmp_path / "candle" / "train" / "good" / "a.png")
    with pytest.raises(FileNotFoundError, match="no images in .*test/good"):
        find_class_files(tmp_path, "candle")


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_bad_image_names_the_file_or_is_skipped(tmp_path, content):
    good = tmp_path / "good.png"
    Image.fromarray(random_image(16, 16)).save(good)
    bad = tmp_path / "bad.JPG"
    if content == "truncated":
        Image.fromarray(random_image(64, 64)).save(bad)
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(content)
    paths = [str(good), str(bad)]
    with pytest.raises(BadImageError, match="bad.JPG.*skip_bad_images=True"):
        build_image_set(paths, [0, 0], [None, None], 8)
    with pytest.warns(UserWarning, match="bad.JPG"):
        kept = build_image_set(paths, [0, 1], [None, None], 8, skip_bad=True)
    assert kept.paths == [str(good)] and kept.skipped == [str(bad)]
    assert kept.images.shape == (1, 3, 8, 8) and kept.labels.tolist() == [0]


def test_memory_mapped_cache_equals_in_memory(tmp_path):
    paths = []
    for i in range(3):
        Image.fromarray(random_image(20, 20, i)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    plain = build_image_set(paths, [0] * 3, [None] * 3, 12)
    mapped = build_image_set(paths, [0] * 3, [None] * 3, 12, mmap_file=str(tmp_path / "c.npy"))
    assert torch.equal(plain.images, mapped.images)
    assert np.array_equal(np.load(tmp_path / "c.npy"), plain.images.numpy())


def test_the_skip_warning_does_not_advise_setting_what_is_set(tmp_path):
    bad = tmp_path / "bad.JPG"
    bad.write_bytes(b"not an image")
    for mmap_file in ("", str(tmp_path / "c.npy"), str(tmp_path / "c.npy")):  # 3rd: reused
        with pytest.warns(UserWarning) as caught:
            build_image_set([str(bad)], [0], [None], 8, skip_bad=True, mmap_file=mmap_file)
        messages = [str(w.message) for w in caught if "bad.JPG" in str(w.message)]
        assert messages and not [m for m in messages if "skip_bad_images" in m]
    with pytest.raises(BadImageError, match="skip_bad_images=True"):  # unset: the advice stays
        build_image_set([str(bad)], [0], [None], 8, mmap_file=str(tmp_path / "c.npy"))
