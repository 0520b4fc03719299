"""ImageNet from its three official archives, fabricated here in their real formats: the devkit
(tar.gz with data/meta.mat, a MATLAB struct array `synsets` written by scipy.io.savemat with the
real file's fields, leaf and non-leaf synsets, ids not in wnid order, and the val ground truth),
the train tar of per-wnid tars and the flat val tar. Unpacked, the adapter lists them as the
sorted layout; missing, damaged and half-unpacked archives are errors naming the file."""

import io
import tarfile

import numpy as np
import pytest
from scipy.io import savemat

from workflow_scripts.datasets import DataError, list_split
from workflow_scripts.datasets import imagenet_archives as archives

# ILSVRC2012_ID -> wnid of the leaves (ids not in sorted-wnid order), plus one inner synset
LEAVES = {1: "n02085620", 2: "n01440764", 3: "n01530575"}
FIELDS = (
    "ILSVRC2012_ID",
    "WNID",
    "words",
    "gloss",
    "num_children",
    "children",
    "wordnet_height",
    "num_train_images",
)
VAL_IDS = [3, 1, 1, 2, 3]  # the ground truth of val images 1..5


def _meta_mat() -> bytes:
    synsets = np.zeros((4, 1), dtype=[(f, "O") for f in FIELDS])
    for row, (ident, wnid) in enumerate(LEAVES.items()):
        synsets[row, 0] = (ident, wnid, f"words {wnid}", "a gloss", 0, np.zeros((0, 0)), 0, 2)
    synsets[3, 0] = (4, "n00001740", "entity", "the root", 3, np.array([1, 2, 3]), 3, 0)
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def _add(handle: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    handle.addfile(info, io.BytesIO(data))


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 90, 160)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_archives(root, meta=None, truth=VAL_IDS):
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as handle:
        if meta is not False:
            _add(handle, "ILSVRC2012_devkit_t12/data/meta.mat", meta or _meta_mat())
        text = "".join(f"{i}\n" for i in truth)
        _add(
            handle,
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
            text.encode(),
        )
        _add(handle, "ILSVRC2012_devkit_t12/COPYING", b"licence")
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for k, wnid in enumerate(sorted(LEAVES.values())):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as handle:
                for j in range(k + 1):
                    _add(handle, f"{wnid}_{j + 10}.JPEG", _jpeg(k * 10 + j))
            _add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as handle:
        for i in reversed(range(1, len(truth) + 1)):  # archive order is not file-name order
            _add(handle, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(100 + i))


def test_unpacked_archives_are_the_sorted_layout(tmp_path):
    root = tmp_path / "imagenet"
    _write_archives(root)
    counts = archives.unpack(root, verify=False)
    assert counts == {"train": 6, "val": 5, "classes": 3}
    row = {"key": "imagenet", "kind": "imagenet", "root": str(root)}
    _, train = list_split(row, "train", tmp_path)
    assert train.classes == ["n01440764", "n01530575", "n02085620"]
    assert train.labels.tolist() == [0, 1, 1, 2, 2, 2]
    _, val = list_split(row, "test", tmp_path)
    # val image i has wnid LEAVES[VAL_IDS[i - 1]]; listed by wnid, then file name
    expected = sorted(
        (LEAVES[ident], f"val/{LEAVES[ident]}/ILSVRC2012_val_{i:08d}.JPEG")
        for i, ident in enumerate(VAL_IDS, start=1)
    )
    assert val.items == [item for _, item in expected]
    assert val.labels.tolist() == [train.classes.index(wnid) for wnid, _ in expected]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train", "val", *(file for file, _ in archives.ARCHIVES.values())]
    )  # no staging folder, no nested tars left
    assert not list((root / "train").glob("*.tar"))
    with pytest.raises(DataError, match="exists already"):
        archives.unpack(root, verify=False)


def test_published_md5s_are_checked(tmp_path):
    root = tmp_path / "imagenet"
    _write_archives(root)
    with pytest.raises(
        DataError, match=r"ILSVRC2012_devkit_t12\.tar\.gz' has MD5 .* the published fa75699e"
    ):
        archives.unpack(root)
    assert not (root / "train").exists() and not (root / "val").exists()


def test_missing_archives_say_where_they_go(tmp_path):
    root = tmp_path / "imagenet"
    root.mkdir()
    with pytest.raises(
        DataError, match="no ImageNet layout and no archives.*put ILSVRC2012_img_train.tar"
    ):
        archives.unpack(root, verify=False)
    _write_archives(root)
    (root / "ILSVRC2012_img_val.tar").unlink()
    with pytest.raises(
        DataError, match=r"2 of the 3 ImageNet archives: ILSVRC2012_img_val\.tar missing"
    ):
        archives.unpack(root, verify=False)


@pytest.mark.parametrize(
    "meta, truth, message",
    [
        (False, VAL_IDS, "lacks .*meta.mat"),
        (None, [3, 1, 4, 2, 3], r"ids \[4\] are no leaf synset"),
        (None, [3, 1, 1, 2], "4 ground-truth lines for 5 val images"),
    ],
)
def test_a_bad_devkit_is_named_and_nothing_is_left(tmp_path, meta, truth, message):
    root = tmp_path / "imagenet"
    _write_archives(root, meta=meta)
    if truth != VAL_IDS:  # a devkit whose ground truth disagrees with the val archive
        good = tmp_path / "other"
        _write_archives(good, truth=truth)
        (good / "ILSVRC2012_devkit_t12.tar.gz").replace(root / "ILSVRC2012_devkit_t12.tar.gz")
    with pytest.raises(DataError, match=message):
        archives.unpack(root, verify=False)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        f for f, _ in archives.ARCHIVES.values()
    )


def test_a_killed_unpacks_staging_is_cleared(tmp_path):
    root = tmp_path / "imagenet"
    _write_archives(root)
    (root / ".unpacking-imagenet" / "train" / "n0").mkdir(parents=True)  # as SIGKILL left it
    assert archives.unpack(root, verify=False)["classes"] == 3
    assert not (root / ".unpacking-imagenet").exists()


def test_command_line(tmp_path, capsys):
    root = tmp_path / "imagenet"
    _write_archives(root)
    with pytest.raises(SystemExit) as exit_:
        archives.main([str(root)])  # the fabricated archives fail the published MD5s
    assert exit_.value.code == 1 and "the published" in capsys.readouterr().err
    assert archives.main([str(root), "--no-verify"]) == 0
    assert (root / "val" / "n01530575" / "ILSVRC2012_val_00000001.JPEG").is_file()
