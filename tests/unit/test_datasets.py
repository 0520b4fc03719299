"""Data set adapters, RGB loading, the paper transforms and the integrity check, on tiny copies
of each real layout (tests/dataset_layouts.py) whose truth is known by construction."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests import dataset_layouts as layouts
from workflow_scripts.config import ConfigError, load_study
from workflow_scripts.datasets import (
    KINDS,
    DataError,
    Listing,
    adapter,
    data_root_of,
    list_split,
    load_rgb,
)
from workflow_scripts.datasets import pascal
from workflow_scripts.datasets.integrity import IntegrityError, check_split, file_list_text
from workflow_scripts.datasets.transforms import (
    crop_to_square,
    eval_transform,
    pad_to_square,
    train_transform,
)

ROOT = Path(__file__).resolve().parents[2]

SUBSETS = {"pascal", "cifar100"}  # fixtures hold a few of their 20 / 100 classes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    truth = layouts.build_all(base)
    rows = {row["kind"]: row for row in layouts.table_rows(truth)}
    return base, truth, rows


@pytest.mark.parametrize("kind", list(layouts.BUILDERS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_adapter_lists_items_and_labels_in_the_data_sets_order(data, kind, split):
    base, truth, rows = data
    root, listing = list_split(rows[kind], split, base)
    items, labels = truth[kind]["splits"][split]
    assert root == base / layouts.ROOTS[kind]
    assert listing.items == items
    assert listing.labels.dtype == np.int64 and listing.labels.tolist() == list(labels)


def test_folder_labels_follow_sorted_wnids_and_inat_families(data):
    base, truth, rows = data
    _, listing = list_split(rows["imagenet"], "train", base)
    assert listing.classes == ["n01440764", "n01530575", "n02085620"]
    # the folder created first (n02085620) is label 2; files sorted by name within a folder
    assert listing.items[:2] == ["train/n01440764/cmyk.JPEG", "train/n01440764/gray.JPEG"]
    _, listing = list_split(rows["inaturalist"], "test", base)
    assert listing.classes == ["Corvidae", "Rosaceae", "Turdidae"]
    # species 0 (Turdidae), 1 (Corvidae), 2 (Rosaceae), 3 (Corvidae) in folder order
    assert listing.labels.tolist() == [2, 0, 1, 0]


def test_imagenet_kaggle_layout_gives_the_sorted_layouts_labels_and_pixels(tmp_path):
    kaggle = layouts.imagenet_kaggle(tmp_path)
    row = {"key": "imagenet", "kind": "imagenet", "root": "imagenet"}
    sorted_row = {**row, "root": "sorted/imagenet"}
    for split in ("train", "test"):
        root, listing = list_split(row, split, tmp_path)
        sroot, slisting = list_split(sorted_row, split, tmp_path)
        assert listing.items == kaggle["splits"][split][0]
        assert listing.labels.tolist() == slisting.labels.tolist() == kaggle["splits"][split][1]
        assert listing.classes == slisting.classes == ["n01440764", "n01530575", "n02085620"]
        module = adapter("imagenet")
        for a, b in zip(listing.items, slisting.items):
            assert Path(a).name == Path(b).name
            assert np.array_equal(
                np.asarray(module.load(root, a)), np.asarray(module.load(sroot, b))
            )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda text: text.replace("ImageId,PredictionString", "id,pred"), "is not ImageId"),
        (lambda text: text.replace(" 10 12 30 33", " 10 12 30"), "is not groups of"),
        (lambda text: text.replace("n01530575 11", "n02085620 11"), "naming one synset"),
        (lambda text: text.replace("n01440764 10", "n09999999 10"), "no train folder: n09999999"),
        (
            lambda text: "\n".join(r for r in text.splitlines() if "val_n01440764," not in r),
            "no row",
        ),
    ],
)
def test_imagenet_kaggle_val_labels_are_checked(tmp_path, edit, message):
    kaggle = layouts.imagenet_kaggle(tmp_path)
    csv_path = kaggle["root"] / "LOC_val_solution.csv"
    csv_path.write_text(edit(csv_path.read_text()))
    with pytest.raises(DataError, match=message):
        list_split({"key": "imagenet", "kind": "imagenet", "root": "imagenet"}, "test", tmp_path)


def test_inaturalist_reads_the_official_folder_names_as_torchvisions(tmp_path):
    row = {"key": "inat", "kind": "inaturalist", "root": "inaturalist"}
    official = layouts.inaturalist(tmp_path / "official", folders=("train_mini", "val"))
    renamed = layouts.inaturalist(tmp_path / "renamed")
    for split in ("train", "test"):
        _, a = list_split(row, split, tmp_path / "official")
        _, b = list_split(row, split, tmp_path / "renamed")
        assert a.items == official["splits"][split][0]
        assert b.items == renamed["splits"][split][0]
        assert a.labels.tolist() == b.labels.tolist() == official["splits"][split][1]
        assert a.classes == b.classes == ["Corvidae", "Rosaceae", "Turdidae"]
        assert [i.split("/", 1)[1] for i in a.items] == [i.split("/", 1)[1] for i in b.items]
    (tmp_path / "official/inaturalist/2021_valid").mkdir()
    with pytest.raises(DataError, match=r"both '.*val' and '.*2021_valid' exist"):
        list_split(row, "test", tmp_path / "official")
    (tmp_path / "none/inaturalist").mkdir(parents=True)
    with pytest.raises(DataError, match=r"'.*train_mini' or '.*2021_train_mini' does not exist"):
        list_split(row, "train", tmp_path / "none")


def test_pascal_label_is_the_majority_class_not_the_first(tmp_path):
    mask = layouts.pascal_mask(first=15, majority=12)
    values = mask.ravel()
    assert values[np.flatnonzero((values != 0) & (values != 255))[0]] == 15  # first in raster order
    assert np.sum(values == 255) > np.sum(values == 12) > np.sum(values == 15)
    img = Image.fromarray(mask, mode="P")
    img.putpalette([0] * 768)
    img.save(tmp_path / "m.png")
    assert pascal.majority_class(tmp_path / "m.png") == 11  # VOC class 12 (dog) -> label 11
    # ties go to the smaller class index; a mask without objects is an error naming it
    tie = np.zeros((4, 4), np.uint8)
    tie[0, :2], tie[1, :2] = 7, 3
    Image.fromarray(tie, mode="L").save(tmp_path / "tie.png")
    assert pascal.majority_class(tmp_path / "tie.png") == 2
    Image.fromarray(np.full((4, 4), 255, np.uint8), mode="L").save(tmp_path / "void.png")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "void.png"))):
        pascal.majority_class(tmp_path / "void.png")


def test_cifar_batches_decode_to_the_original_pixels(data):
    base, truth, rows = data
    module = adapter("cifar100")
    root = base / layouts.ROOTS["cifar100"]
    for split in ("train", "test"):
        for i, item in enumerate(truth["cifar100"]["splits"][split][0]):
            image = module.load(root, item)
            assert image.mode == "RGB" and image.size == (32, 32)
            np.testing.assert_array_equal(np.asarray(image), truth["cifar100"]["pixels"][split][i])


def test_cifar_restricted_load_equals_plain_pickle(data):
    """The restricted data unpickler against the stdlib's (the oracle, on a file we made)."""
    import pickle

    from workflow_scripts.safe_pickle import load_data_pickle

    base, _, _ = data
    for name in ("train", "test", "meta"):
        path = base / layouts.ROOTS["cifar100"] / name
        with open(path, "rb") as fh:
            expected = pickle.load(fh, encoding="bytes")
        with open(path, "rb") as fh:
            got = load_data_pickle(fh, encoding="bytes")
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype and np.array_equal(got[key], value)
            else:
                assert got[key] == value


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "plain class"])
def test_cifar_batch_with_code_is_refused_and_never_runs(tmp_path, payload):
    """A crafted batch file: refused with the global named, before anything of it runs (the
    oracle: the marker file the payload would write)."""
    import builtins
    import collections
    import os
    import pickle

    from workflow_scripts.datasets import cifar100

    marker = tmp_path / "ran"
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    evil = {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w')"),
        # not code, but not plain data either: a data file holds none
        "plain class": collections.UserDict({"a": 1}),
    }[payload]
    entry = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"fine_labels": [0, 1], b"x": evil}
    with open(root / "train", "wb") as fh:
        pickle.dump(entry, fh, protocol=2)
    name = {
        "os.system": "posix.system",
        "builtins.exec": "builtins.exec",
        "plain class": "collections.UserDict",
    }[payload]
    with pytest.raises(
        DataError,
        match=rf"cannot read CIFAR-100 batch '.*train': the pickle "
        rf"references '{re.escape(name)}', which a data file may "
        rf"not reference",
    ):
        cifar100.read_batch(root, "train")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["imagenet", "domainnet"])
def test_every_image_mode_comes_back_as_rgb(data, kind):
    base, truth, rows = data
    module = adapter(kind)
    root = base / layouts.ROOTS[kind]
    for item, expected in truth[kind]["special"].items():
        image = module.load(root, item)
        assert image.mode == "RGB" and np.asarray(image).shape == expected.shape, item
        got = np.asarray(image).astype(int)
        if item.endswith(("png.JPEG", "png.jpg", "pal.png")):  # lossless files: exact
            np.testing.assert_array_equal(got, expected)
        else:  # JPEG: uniform blocks within a few levels (away from block edges)
            assert np.abs(got - expected)[:, 2:-2][:, [0, 20, 40][: got.shape[1] // 20]].max() <= 8
        raw_mode = Image.open(root / item).mode
        assert (
            raw_mode
            == {"gray": "L", "cmyk": "CMYK", "png": "RGB", "pal": "P"}[
                item.rsplit("/", 1)[1].split(".")[0]
            ]
        )


def test_unreadable_image_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=re.escape(f"cannot read image '{bad}'")):
        load_rgb(bad)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError, match=re.escape(str(truncated))):
        load_rgb(truncated)


def test_missing_root_names_the_data_set_and_the_expected_path(tmp_path):
    row = {"key": "cub", "kind": "cub", "root": "CUB_200_2011"}
    with pytest.raises(DataError) as error:
        data_root_of(row, tmp_path / "nowhere")
    message = str(error.value)
    assert "data set 'cub'" in message and str(tmp_path / "nowhere" / "CUB_200_2011") in message
    assert "image_class_labels.txt" in message  # the expected layout is quoted


def test_missing_listed_file_and_stray_val_images_are_errors(data, tmp_path):
    base, truth, rows = data
    root, listing = list_split(rows["cub"], "train", base)
    gone = root / listing.items[2]
    gone.rename(tmp_path / "moved.jpg")
    try:
        with pytest.raises(IntegrityError, match=re.escape(listing.items[2])):
            check_split(rows["cub"], "train", listing, root)
    finally:
        (tmp_path / "moved.jpg").rename(gone)
    flat = tmp_path / "flat"
    (flat / "train" / "n01").mkdir(parents=True)
    (flat / "val").mkdir()
    Image.new("RGB", (4, 4)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match="holds image files directly"):
        list_split({"key": "imagenet", "kind": "imagenet", "root": str(flat)}, "test", base)


def test_integrity_checks_counts_classes_and_label_range(data):
    base, truth, rows = data
    row = rows["cub"]
    root, listing = list_split(row, "train", base)
    manifest = check_split(row, "train", listing, root)
    assert manifest["n"] == 6 and manifest["count_per_class"] == [2, 3, 1]
    assert (
        manifest["files_sha256"]
        == hashlib.sha256(
            "".join(f"{i}\n" for i in truth["cub"]["splits"]["train"][0]).encode()
        ).hexdigest()
    )
    assert file_list_text(listing.items).splitlines() == listing.items
    wrong = row | {"n_train": 7}
    with pytest.raises(
        IntegrityError,
        match=re.escape(
            "data set 'cub', split 'train': expected 7 images (table column 'n_train'), found 6"
        ),
    ):
        check_split(wrong, "train", listing, root)
    # a deliberate subset: fewer images pass with the override, more never do
    assert check_split(wrong, "train", listing, root, allow_subset=True)["n"] == 6
    with pytest.raises(IntegrityError, match="expected 5 images"):
        check_split(row | {"n_train": 5}, "train", listing, root, allow_subset=True)
    with pytest.raises(
        IntegrityError,
        match=re.escape(
            "expected 4 classes (table column 'num_classes'), the data on disk defines 3"
        ),
    ):
        check_split(row | {"num_classes": 4}, "train", listing, root)
    shifted = Listing(listing.items, listing.labels + 1, listing.classes)
    with pytest.raises(IntegrityError, match=re.escape("expected labels in 0..2, found 1..3")):
        check_split(row, "train", shifted, root)
    _, pascal_listing = list_split(rows["pascal"], "test", base)
    with pytest.raises(IntegrityError, match="expected images of all 20 classes, found 2"):
        check_split(rows["pascal"], "test", pascal_listing)


def _stripes(w, h):
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2 :, 2] = 255
    return a


def test_square_steps_match_hand_built_arrays():
    img = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3) + 1  # 5 wide, 2 high
    padded = np.asarray(pad_to_square(Image.fromarray(img)))
    expected = np.zeros((5, 5, 3), np.uint8)
    expected[1:3] = img  # (5 - 2) // 2 = 1 row above, 2 below
    np.testing.assert_array_equal(padded, expected)
    tall = np.asarray(pad_to_square(Image.fromarray(img.transpose(1, 0, 2).copy())))
    np.testing.assert_array_equal(tall, expected.transpose(1, 0, 2))
    wide = np.arange(4 * 9 * 3, dtype=np.uint8).reshape(4, 9, 3)
    np.testing.assert_array_equal(
        np.asarray(crop_to_square(Image.fromarray(wide))), wide[:, 2:6]
    )  # round((9 - 4) / 2) = 2 (banker's: 2)
    square = Image.fromarray(wide[:, :4].copy())
    assert pad_to_square(square) is square


SPEC = {
    "resize": 256,
    "crop": 224,
    "interpolation": "bilinear",
    "mean": [0, 0, 0],
    "std": [1, 1, 1],
}


def test_eval_transform_geometry_on_an_asymmetric_image():
    img = Image.fromarray(_stripes(60, 30))
    # pad: 60x60 with 15 black rows above and below -> x256/60 -> rows 0..64 black -> crop
    # offset 16: output rows 0..47 black, then content; both colour halves intact
    x = eval_transform(SPEC, "pad_square")(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert x[:, :46].abs().max() == 0 and x[:, -46:].abs().max() == 0
    assert x[0, 112, 5] > 0.99 and x[2, 112, 5] == 0  # red left of the centre column
    assert x[2, 112, 218] > 0.99 and x[0, 112, 218] == 0  # blue right of it
    assert (x[0, 112] > 0.5).sum() == (x[2, 112] > 0.5).sum() == 112
    # crop: the central 30x30 (x 15..44): left half red, right half blue, equal widths
    x = eval_transform(SPEC, "crop_square")(img)
    red = (x[0, 112] > 0.5).sum().item()
    blue = (x[2, 112] > 0.5).sum().item()
    assert red + blue >= 222 and abs(red - blue) <= 2 and x[0, 112, 0] > 0.99
    # none: 60x30 -> 512x256 -> centre 224: the middle of the image, red left of column 112
    x = eval_transform(SPEC, "none")(img)
    assert x[0, 5, 100] > 0.99 and x[2, 5, 124] > 0.99  # no black band: row 5 is content
    assert x[0, 112, 0] > 0.99 and x[2, 112, 223] > 0.99


def test_eval_transform_equals_classic_torchvision_and_normalises():
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (37, 81, 3), dtype=np.uint8))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    spec = SPEC | {"mean": mean, "std": std}
    classic = T.Compose(
        [
            T.Pad([0, 22, 0, 22], fill=0),
            T.Resize(256, antialias=True),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    torch.testing.assert_close(eval_transform(spec, "pad_square")(img), classic(img))
    classic = T.Compose(
        [T.CenterCrop(37), T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean, std)]
    )
    torch.testing.assert_close(eval_transform(spec, "crop_square")(img), classic(img))


def test_train_transform_output_and_randomness():
    img = Image.fromarray(_stripes(60, 30))
    t = train_transform(SPEC, "pad_square")
    torch.manual_seed(0)
    a = t(img)
    torch.manual_seed(1)
    b = t(img)
    assert a.shape == b.shape == (3, 224, 224) and not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(t(img), a)


def test_paper_table_and_schema_agree_with_the_adapters():
    schema = yaml.safe_load((ROOT / "config" / "schemas" / "datasets.schema.yaml").read_text())
    assert tuple(schema["properties"]["kind"]["enum"]) == KINDS
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["datasets_table"] = "config/datasets_paper.tsv"
    config["models_table"] = "config/models_paper.tsv"  # demo models need a synthetic id set
    study = load_study(config, ROOT)
    table = study.datasets
    assert len(table) == 11 and study.id_dataset == "imagenet"
    assert table.loc["imagenet", ["n_train", "n_test", "num_classes"]].tolist() == [
        1281167,
        50000,
        1000,
    ]
    assert table.loc["inaturalist", "num_classes"] == 1103
    assert (
        table.loc["cub", "preprocessing"] == "pad_square" == table.loc["cifar100", "preprocessing"]
    )
    assert table.loc["pascal", "preprocessing"] == "crop_square"
    dn = table[table["kind"] == "domainnet"]
    assert sorted(dn["variant"]) == [
        "clipart",
        "infograph",
        "painting",
        "quickdraw",
        "real",
        "sketch",
    ]
    assert dn["n_train"].sum() == 33525 + 36023 + 50416 + 120750 + 120906 + 48212
    assert set(dn["num_classes"]) == {345} and set(dn["shift_group"]) == {"style"}
    assert config["data_root"] == "data" and config["allow_subsets"] == []


@pytest.mark.parametrize(
    ("cell", "value", "message"),
    [
        ("root", "", r"key 'cub': column 'root' is required for kind 'cub'"),
        (
            "variant",
            "watercolour",
            r"key 'domainnet_real': column 'variant' must name the DomainNet",
        ),
        ("kind", "coco", r"key 'cub'\): column 'kind': 'coco' is not one of"),
        ("preprocessing", "letterbox", r"column 'preprocessing': 'letterbox' is not one of"),
    ],
)
def test_bad_paper_table_rows_name_the_culprit(tmp_path, cell, value, message):
    lines = (ROOT / "config" / "datasets_paper.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    key = "domainnet_real" if cell == "variant" else "cub"
    for i, line in enumerate(lines):
        cells = line.split("\t")
        if cells[0] == key:
            cells[header.index(cell)] = value
            lines[i] = "\t".join(cells)
    (tmp_path / "t.tsv").write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["datasets_table"] = str(tmp_path / "t.tsv")
    with pytest.raises(ConfigError, match=message):
        load_study(config, ROOT)


def test_allow_subsets_must_name_table_rows():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["allow_subsets"] = ["cub"]
    with pytest.raises(
        ConfigError, match=r"config key 'allow_subsets': unknown data set key\(s\) 'cub'"
    ):
        load_study(config, ROOT)


@pytest.mark.parametrize("preprocessing", ["none", "pad_square", "crop_square"])
def test_uint8_crops_normalised_in_a_batch_equal_the_per_image_float_path(preprocessing):
    """Loader workers ship uint8 crops; normalize_batch on the device gives bit for bit what the
    transform's own ToDtype + Normalize gave per image (eval, and train with the same seed)."""
    import torch

    from workflow_scripts.datasets.transforms import normalize_batch

    rng = np.random.default_rng(1)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((40, 52), (37, 37), (61, 45))
    ]
    for make in (eval_transform, train_transform):
        floats, crops = [], []
        for i, img in enumerate(images):
            torch.manual_seed(i)
            floats.append(make(SPEC, preprocessing)(img))
            torch.manual_seed(i)
            crops.append(make(SPEC, preprocessing, normalize=False)(img))
        assert {c.dtype for c in crops} == {torch.uint8}
        batch = normalize_batch(torch.stack(crops), SPEC)
        assert torch.equal(batch, torch.stack(floats)), make.__name__
