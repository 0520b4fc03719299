"""ImageNet from its three official archives, fabricated here in their real formats: the devkit
(tar.gz with data/meta.mat, a MATLAB struct array `synsets` written by scipy.io.savemat with the
real file's fields, leaf and non-leaf synsets, ids not in wnid order, and the val ground truth),
the train tar of per-wnid tars and the flat val tar. Unpacked, the adapter lists them as the
sorted layout; missing, damaged and half-unpacked archives are errors naming the file."""

import pytest

from tests import dataset_layouts as layouts
from workflow_scripts.datasets import DataError, list_split
from workflow_scripts.datasets import imagenet_archives as archives

LEAVES, VAL_IDS = layouts.IMAGENET_LEAVES, layouts.IMAGENET_VAL_IDS
_meta_mat = layouts.imagenet_meta_mat
_write_archives = layouts.imagenet_archives


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
