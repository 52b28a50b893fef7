"""The official archives' identities: where each lives, its size and hash, what it unpacks to.

These are facts the repository ships, checked before use; a mirror is given with --url and
--sha256 instead of by editing this file.
"""
from dataclasses import dataclass
from pathlib import Path

SPLITS = Path(__file__).resolve().parent.parent / "splits"


@dataclass(frozen=True)
class Archive:
    name: str            # what messages call it
    filename: str        # saved under --download_dir with this name
    url: str
    size: int | None     # bytes; None where the server does not promise stable bytes
    sha256: str | None   # None: verified file by file against `manifest` instead
    unpacked_bytes: int  # about what extraction writes: free-space check and tar-bomb limit
    licence: str
    manifest: Path | None = None


# URL and SHA-256 as anomalib's VisA datamodule uses them
# (open-edge-platform/anomalib, src/anomalib/data/datamodules/image/visa.py, DOWNLOAD_INFO,
# checked at commit 37449969fda41185f98477c464c164c17ee01fa2). The size is the one published
# with that hash by independent records of the same object (S3 ETag
# "05c830591a1172938cb714895c9e0cfb-113"); the tar holds the class folders and split_csv/ at its
# top, about 1.92e9 bytes of files.
VISA = Archive(
    name="VisA", filename="VisA_20220922.tar",
    url="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
    size=1_929_840_640,
    sha256="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
    unpacked_bytes=1_930_000_000, licence="CC BY 4.0")

# URL and SHA-256 as anomalib's MVTec AD datamodule uses them
# (open-edge-platform/anomalib, src/anomalib/data/datamodules/image/mvtecad.py, DOWNLOAD_INFO,
# checked at commit 275522211d14fedd7b93146c3f26c191b41903c5). The size is not in anomalib; it is
# the one independent records give with the same hash. The images are PNGs, which xz barely
# shrinks, so the unpacked size is taken as the archive's plus a margin (not measured here).
MVTEC = Archive(
    name="MVTec AD", filename="mvtec_anomaly_detection.tar.xz",
    url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/"
        "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz",
    size=5_264_982_680,
    sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
    unpacked_bytes=5_600_000_000, licence="CC BY-NC-SA 4.0")

# GitHub's archive of abin24/Magnetic-tile-defect-datasets. at its last commit. GitHub does not
# promise stable archive bytes, so there is no archive hash: every extracted file is checked
# against splits/mtd_manifest.csv (path, bytes, SHA-256 of the 2,691 files of that commit:
# 2,688 images and masks, README.md, dataset.jpg, dataset.png).
MTD_COMMIT = "cc4eb530b57b9cb7225bf76023873043ffd50655"
MTD = Archive(
    name="MTD", filename=f"Magnetic-tile-defect-datasets.-{MTD_COMMIT}.zip",
    url=f"https://github.com/abin24/Magnetic-tile-defect-datasets./archive/{MTD_COMMIT}.zip",
    size=None, sha256=None, unpacked_bytes=60_000_000,
    licence="see the dataset's repository", manifest=SPLITS / "mtd_manifest.csv")
