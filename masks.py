"""Ground-truth masks: how a mask file is read, and the one check of a class's masks before
any training (main.py up front, train.py again when it loads the class; each mask is
decoded once per process)."""
import functools
import os
import warnings

import numpy as np
from PIL import Image

from data import READ_ERRORS, BadImageError, exif_orientation
from layout import list_class

ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as the same
NAMED_AT_MOST = 3  # files named in one warning; the count says how many there are


def read_mask(path):
    """A mask file as a PIL 'L' image, defect pixels > 0. Transparent pixels are background:
    a mask with an alpha channel is laid over black; one whose colours are all black but whose
    alpha varies is drawn in its transparency, so its alpha is the mask."""
    with Image.open(path) as mask:
        mask.load()
        if mask.mode not in ("RGBA", "LA", "PA") and "transparency" not in mask.info:
            return mask.convert("L")
        rgba = mask.convert("RGBA")
    over_black = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    alpha = rgba.getchannel("A")
    low, high = alpha.getextrema()
    if not np.asarray(over_black.convert("L")).any() and low != high:
        return alpha
    return over_black.convert("L")


@functools.lru_cache(maxsize=65536)
def _mask_facts(path, _mtime_ns, _size):
    """(width, height, has a defect pixel) of a mask file; cached per file version."""
    try:
        mask = read_mask(path)
    except (Image.DecompressionBombError, *READ_ERRORS) as e:
        raise BadImageError(f"cannot read mask '{path}': {e}. Replace it (prepare_visa.py writes "
                            "masks anew)", ", or set skip_bad_images=True to leave its image "
                            "out with a warning") from None
    return mask.width, mask.height, bool(np.asarray(mask).any())


def mask_facts(path):
    stat = os.stat(path)
    return _mask_facts(str(path), stat.st_mtime_ns, stat.st_size)


def image_size(path):
    """(width, height) from the image's header; None when it cannot be read (the decoding of
    the images reports that file)."""
    try:
        with Image.open(path) as img:
            return img.size
    except (Image.DecompressionBombError, *READ_ERRORS):
        return None


def same_aspect(mask_size, image_wh):
    (mw, mh), (iw, ih) = mask_size, image_wh
    return abs(mw * ih - mh * iw) <= ASPECT_TOLERANCE * mh * iw


def named(items):
    """The first few items of a warning's list, and how many more there are."""
    shown = "; ".join(items[:NAMED_AT_MOST])
    more = len(items) - NAMED_AT_MOST
    return shown + (f"; and {more} more" if more > 0 else "")


def check_masks(class_name, paths, labels, masks, skip_bad):
    """The one check of a class's test masks. An unreadable mask raises (with skip_bad its image
    is left out with a warning); a mask marking no defect pixel counts as no mask; a mask of
    another aspect ratio than its image is named in a warning (it is stretched to the image);
    anomalous images without a usable mask are counted in a warning naming the class.
    Returns (paths, labels, masks, skipped paths), masks without defect pixels as None."""
    keep, out_masks, skipped, empty, stretched = [], [], [], [], []
    for i, mask in enumerate(masks):
        if mask is not None:
            try:
                width, height, has_defect = mask_facts(mask)
            except BadImageError as e:
                if not skip_bad:
                    raise
                warnings.warn(f"skipping: {e.problem}")  # skip_bad_images is set already
                skipped.append(paths[i])
                continue
            image = image_size(paths[i])
            if not has_defect:
                empty.append(f"'{mask}'")
                mask = None
            elif image is not None and not same_aspect((width, height), image):
                stretched.append(f"mask '{mask}' {width}x{height} for image '{paths[i]}' "
                                 f"{image[0]}x{image[1]}")
        keep.append(i)
        out_masks.append(mask)
    labels = np.asarray(labels)[keep]
    warn_mask_problems(class_name, labels, out_masks, empty, stretched)
    return [paths[i] for i in keep], labels, out_masks, skipped


def warn_mask_problems(class_name, labels, masks, empty, stretched):
    if stretched:
        warnings.warn(f"{len(stretched)} mask(s) of '{class_name}' have another aspect ratio "
                      f"than their image and are stretched to it for the pixel metrics: "
                      f"{named(stretched)}. Check that each mask belongs to its image")
    if empty:
        warnings.warn(f"{len(empty)} mask(s) of '{class_name}' mark no defect pixel (all zero "
                      f"after transparency; defects must be non-zero): {named(empty)}; their "
                      f"images count as without mask")
    anomalous = int(np.sum(labels == 1))
    missing = sum(1 for label, m in zip(labels, masks) if label == 1 and m is None)
    if missing:
        covered = ("pixel AUROC and AUPRO are n/a" if missing == anomalous else
                   f"the pixel metrics cover only the {anomalous - missing} that have one")
        warnings.warn(f"{missing} anomalous test image(s) of '{class_name}' have no mask in "
                      f"ground_truth/ (or one that marks no defect); {covered}")


def warn_exif_orientation(class_name, paths):
    """One warning per class when images carry an EXIF orientation other than 1. They are read
    as stored, never rotated, as the reference code reads them (rotating would change the
    numbers); a mask drawn on the image as a viewer shows it does not line up with it then."""
    rotated = [(path, n) for path in paths if (n := exif_orientation(path)) != 1]
    if rotated:
        named = ", ".join(f"'{p}' ({n})" for p, n in rotated[:NAMED_AT_MOST])
        warnings.warn(f"class '{class_name}': {len(rotated)} image(s) carry an EXIF orientation "
                      f"other than 1, e.g. {named}. They are used as stored, not rotated (as in "
                      f"the reference code), so a mask drawn on the image as a viewer shows it "
                      f"would not line up and its pixel metrics would be wrong. Rotate the pixels "
                      f"of those images (and drop the tag), or draw their masks on the stored "
                      f"image")


def checked_class_files(dataset_path, class_name, skip_bad):
    """layout.list_class with the masks checked: layout.ClassFiles whose test lists leave out the
    images of unreadable masks (with skip_bad; named in `skipped`). Images with an EXIF
    orientation are named in one warning."""
    files = list_class(dataset_path, class_name)
    warn_exif_orientation(class_name, [*files.train, *files.test])
    paths, labels, masks, skipped = check_masks(class_name, files.test, files.labels, files.masks,
                                                skip_bad)
    return files._replace(test=paths, labels=labels, masks=masks, skipped=tuple(skipped))
