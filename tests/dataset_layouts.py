"""Tiny copies of the six real data set layouts, written with PIL/numpy (shared by the unit and
integration tests of workflow_scripts.datasets).

Each builder writes the real directory structure and files under ``base`` and returns the
independently known truth: per split the items in the data set's own order, their labels, and
the pixels a loader must return (for the special files: grayscale, CMYK, PNG-as-JPEG, palette).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

SIZES = [(40, 24), (24, 40), (33, 20), (20, 20)]  # (width, height): non-square on purpose


def _rgb(seed: int, size=(40, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    # smooth-ish content so JPEG keeps it recognisable
    base = rng.integers(40, 216, size=3)
    grad = np.linspace(-30, 30, w)[None, :, None]
    return np.clip(base[None, None, :] + grad + np.zeros((h, w, 3)), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, quality=95)


def special_images(folder: Path, names: tuple[str, str, str, str]) -> dict[str, np.ndarray]:
    """Grayscale JPEG, CMYK JPEG, PNG saved under a .jpg name, palette PNG: name -> RGB truth."""
    folder.mkdir(parents=True, exist_ok=True)
    gray, cmyk, png, pal = names
    truth = {}
    # grayscale JPEG: a uniform 100 block and a uniform 200 block
    g = np.full((20, 30), 100, np.uint8)
    g[:, 15:] = 200
    Image.fromarray(g, mode="L").save(folder / gray, format="JPEG", quality=100)
    truth[gray] = np.repeat(g[:, :, None], 3, axis=2)
    # CMYK JPEG: white (0,0,0,0) left, cyan (255,0,0,0) middle, black (0,0,0,255) right
    c = np.zeros((24, 48, 4), np.uint8)
    c[:, 16:32, 0] = 255
    c[:, 32:, 3] = 255
    Image.fromarray(c, mode="CMYK").save(folder / cmyk, format="JPEG", quality=100)
    expected = np.full((24, 48, 3), 255, np.uint8)
    expected[:, 16:32, 0] = 0
    expected[:, 32:] = 0
    truth[cmyk] = expected
    # a PNG (lossless) whose name says .jpg
    rgb = np.random.default_rng(7).integers(0, 256, size=(18, 26, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / png, format="PNG")
    truth[png] = rgb
    # palette PNG: 3 palette colours
    idx = np.zeros((16, 16), np.uint8)
    idx[:, 8:] = 1
    idx[8:, :] = 2
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette)
    img.save(folder / pal, format="PNG")
    truth[pal] = np.asarray(palette[:9], np.uint8).reshape(3, 3)[idx]
    return truth


def imagenet(base: Path) -> dict:
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; wnid folders created out of order."""
    root = base / "imagenet"
    wnids = ["n02085620", "n01440764", "n01530575"]  # sorted: n01440764, n01530575, n02085620
    order = sorted(wnids)
    truth = {"train": ([], []), "test": ([], [])}
    special = {}
    for i, wnid in enumerate(wnids):
        for name in (f"{wnid}_2.JPEG", f"{wnid}_10.JPEG"):
            _save(root / "train" / wnid / name, _rgb(sum(name.encode())))
    special.update(
        {
            f"train/n01440764/{k}": v
            for k, v in special_images(
                root / "train" / "n01440764", ("gray.JPEG", "cmyk.JPEG", "png.JPEG", "pal.png")
            ).items()
        }
    )
    for wnid in wnids:
        _save(root / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG", _rgb(3))
    for wnid in order:
        files = sorted(p.name for p in (root / "train" / wnid).iterdir())
        truth["train"][0].extend(f"train/{wnid}/{f}" for f in files)
        truth["train"][1].extend([order.index(wnid)] * len(files))
        truth["test"][0].append(f"val/{wnid}/ILSVRC2012_val_{wnid}.JPEG")
        truth["test"][1].append(order.index(wnid))
    return {"root": root, "splits": truth, "special": special, "num_classes": 3}


def imagenet_kaggle(base: Path) -> dict:
    """The images of :func:`imagenet` in Kaggle's layout (the ImageNet Object Localization
    Challenge download): ILSVRC/Data/CLS-LOC/train/<wnid>/, the flat val folder, and the csv
    files beside ILSVRC/ as Kaggle ships them (LOC_val_solution.csv: ImageId,PredictionString
    with one or more boxes per image; LOC_synset_mapping.txt; LOC_train_solution.csv)."""
    sorted_layout = imagenet(base / "sorted")
    src = sorted_layout["root"]
    root = base / "imagenet"
    data = root / "ILSVRC/Data/CLS-LOC"
    truth = {"train": ([], []), "test": ([], [])}
    for item, label in zip(*sorted_layout["splits"]["train"]):
        target = data / item
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((src / item).read_bytes())
        truth["train"][0].append(f"ILSVRC/Data/CLS-LOC/{item}")
        truth["train"][1].append(label)
    rows = ["ImageId,PredictionString"]
    (data / "val").mkdir(parents=True)
    for k, (item, label) in enumerate(zip(*sorted_layout["splits"]["test"])):
        name = Path(item).name
        (data / "val" / name).write_bytes((src / item).read_bytes())
        wnid = item.split("/")[1]
        boxes = " ".join(f"{wnid} {10 + j} {12 + j} {30 + j} {33 + j}" for j in range(k + 1))
        rows.append(f"{Path(name).stem},{boxes} ")
        truth["test"][0].append(f"ILSVRC/Data/CLS-LOC/val/{name}")
        truth["test"][1].append(label)
    (root / "LOC_val_solution.csv").write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    wnids = sorted(p.name for p in (data / "train").iterdir())
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {w}\n" for w in wnids))
    (root / "LOC_train_solution.csv").write_text("ImageId,PredictionString\n")
    (root / "ILSVRC/Data/CLS-LOC/test").mkdir()
    return {"root": root, "splits": truth, "num_classes": 3, "sorted": sorted_layout}


INAT_SPECIES = [
    "00000_Animalia_Chordata_Aves_Passeriformes_Turdidae_Turdus_migratorius",
    "00001_Animalia_Chordata_Aves_Passeriformes_Corvidae_Corvus_corax",
    "00002_Plantae_Tracheophyta_Magnoliopsida_Rosales_Rosaceae_Rosa_canina",
    "00003_Animalia_Chordata_Aves_Passeriformes_Corvidae_Pica_pica",
]
INAT_FAMILY_LABEL = {"Corvidae": 0, "Rosaceae": 1, "Turdidae": 2}


def inaturalist(base: Path, folders=("2021_train_mini", "2021_valid")) -> dict:
    """Species folders under torchvision's names (``folders``; the official tarballs unpack to
    train_mini / val); label = family index (sorted families)."""
    root = base / "inaturalist"
    truth = {"train": ([], []), "test": ([], [])}
    for split, folder, n in (("train", folders[0], 2), ("test", folders[1], 1)):
        for k, species in enumerate(INAT_SPECIES):
            family = species.split("_")[5]
            for j in range(n):
                name = f"{k}{j}-uuid.jpg"
                _save(root / folder / species / name, _rgb(10 * k + j, SIZES[j % 4]))
                truth[split][0].append(f"{folder}/{species}/{name}")
                truth[split][1].append(INAT_FAMILY_LABEL[family])
    return {"root": root, "splits": truth, "num_classes": 3}


def cub(base: Path) -> dict:
    """CUB_200_2011 txt files; 3 classes, non-square images, interleaved train/test."""
    root = base / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    truth = {"train": ([], []), "test": ([], [])}
    images, split_lines, label_lines = [], [], []
    for image_id in range(1, 11):
        cls = (image_id * 7) % 3  # 1->1, 2->2, 3->0, ...
        rel = f"{classes[cls]}/{classes[cls][4:]}_{image_id:04d}.jpg"
        _save(root / "images" / rel, _rgb(image_id, SIZES[image_id % 4]))
        is_train = int(image_id % 5 not in (0, 3))
        images.append(f"{image_id} {rel}")
        split_lines.append(f"{image_id} {is_train}")
        label_lines.append(f"{image_id} {cls + 1}")
        truth["train" if is_train else "test"][0].append(f"images/{rel}")
        truth["train" if is_train else "test"][1].append(cls)
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split_lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(label_lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    return {"root": root, "splits": truth, "num_classes": 3}


def pascal_mask(first: int, majority: int, size=(40, 30)) -> np.ndarray:
    """Class-index mask: ``first`` in the top-left corner (first in raster order), ``majority``
    in a larger block, and more 255 (void) and 0 (background) pixels than either."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = 255  # void: the most frequent value
    mask[0:3, 0:4] = first  # 12 pixels, first in raster order
    mask[10:20, w // 2 : w // 2 + 6] = majority  # 60 pixels
    return mask


def _voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        palette += [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256]
    return palette


def pascal(base: Path) -> dict:
    """VOCdevkit/VOC2012 segmentation: list files, JPEGImages, palette SegmentationClass PNGs."""
    root = base / "VOCdevkit" / "VOC2012"
    truth = {"train": ([], []), "test": ([], [])}
    # (id, class first in raster order, majority class), VOC class indices 1..20
    specs = {
        "train": [("2007_000032", 15, 1), ("2007_000039", 20, 12), ("2008_000002", 3, 7)],
        "test": [("2007_000033", 1, 15), ("2009_000001", 9, 20)],
    }
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    for split, listname in (("train", "train.txt"), ("test", "val.txt")):
        ids = [s[0] for s in specs[split]]
        (root / "ImageSets" / "Segmentation" / listname).write_text("\n".join(ids) + "\n")
        for k, (image_id, first, majority) in enumerate(specs[split]):
            size = SIZES[k % 3]
            _save(root / "JPEGImages" / f"{image_id}.jpg", _rgb(k + 50, size))
            mask = Image.fromarray(pascal_mask(first, majority, size), mode="P")
            mask.putpalette(_voc_palette())
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            mask.save(root / "SegmentationClass" / f"{image_id}.png")
            truth[split][0].append(f"JPEGImages/{image_id}.jpg")
            truth[split][1].append(majority - 1)
    return {"root": root, "splits": truth, "num_classes": 20}


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote CIFAR's batches: byte strings as (SHORT_)BINSTRING
    (Python 3 writes _codecs.encode calls) and numpy 1.x's numpy.core.multiarray names."""

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "")
        if module == "numpy._core.multiarray":
            qualname = name or obj.__qualname__
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        Py2Pickler(fh, protocol=2).dump(obj)


def cifar100(base: Path) -> dict:
    """cifar-100-python/{train,test}: pickled dicts with byte-string keys, as distributed
    (Python 2 pickles: see Py2Pickler)."""
    root = base / "cifar-100-python"
    root.mkdir(parents=True, exist_ok=True)
    truth, pixels = {}, {}
    for split, n, offset in (("train", 6, 0), ("test", 4, 100)):
        rng = np.random.default_rng(offset)
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, size=n)]
        entry = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split} batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            # rows: 1024 red, 1024 green, 1024 blue values, each plane row-major
            b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
        }
        py2_pickle(entry, root / split)
        truth[split] = ([f"{split}#{i}" for i in range(n)], fine)
        pixels[split] = images
    py2_pickle({b"fine_label_names": [str(i).encode() for i in range(100)]}, root / "meta")
    return {"root": root, "splits": truth, "pixels": pixels, "num_classes": 100}


def domainnet(base: Path, domain: str = "sketch") -> dict:
    """<domain>_{train,test}.txt lists (not sorted) and <domain>/<class>/<file> images."""
    root = base / "domainnet"
    classes = ["aircraft_carrier", "airplane", "alarm_clock"]
    truth = {"train": ([], []), "test": ([], [])}
    special = special_images(
        root / domain / "airplane", ("gray.jpg", "cmyk.jpg", "png.jpg", "pal.png")
    )
    train = [
        (f"{domain}/alarm_clock/{domain}_003_000002.jpg", 2),
        (f"{domain}/aircraft_carrier/{domain}_001_000009.jpg", 0),
        (f"{domain}/airplane/gray.jpg", 1),
        (f"{domain}/airplane/png.jpg", 1),
        (f"{domain}/alarm_clock/{domain}_003_000001.jpg", 2),
        (f"{domain}/aircraft_carrier/{domain}_001_000001.jpg", 0),
    ]
    test = [
        (f"{domain}/airplane/cmyk.jpg", 1),
        (f"{domain}/aircraft_carrier/{domain}_001_000100.jpg", 0),
        (f"{domain}/alarm_clock/{domain}_003_000100.jpg", 2),
    ]
    for split, rows in (("train", train), ("test", test)):
        lines = []
        for k, (rel, label) in enumerate(rows):
            if not (root / rel).exists():
                _save(root / rel, _rgb(k + 70, SIZES[k % 4]))
            lines.append(f"{rel} {label}")
            truth[split][0].append(rel)
            truth[split][1].append(label)
        (root / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return {
        "root": root,
        "splits": truth,
        "classes": classes,
        "num_classes": 3,
        "special": {f"{domain}/airplane/{k}": v for k, v in special.items()},
    }


BUILDERS = {
    "imagenet": imagenet,
    "inaturalist": inaturalist,
    "cub": cub,
    "pascal": pascal,
    "cifar100": cifar100,
    "domainnet": domainnet,
}
ROOTS = {
    "imagenet": "imagenet",
    "inaturalist": "inaturalist",
    "cub": "CUB_200_2011",
    "pascal": "VOCdevkit/VOC2012",
    "cifar100": "cifar-100-python",
    "domainnet": "domainnet",
}
PREPROCESSING = {
    "imagenet": "none",
    "inaturalist": "none",
    "cub": "pad_square",
    "pascal": "crop_square",
    "cifar100": "pad_square",
    "domainnet": "none",
}


def build_all(base: Path) -> dict[str, dict]:
    return {kind: build(base) for kind, build in BUILDERS.items()}


def table_rows(truth: dict[str, dict]) -> list[dict]:
    """Data set table rows (kind = key, domainnet's key 'domainnet_sketch') for the fixtures."""
    rows = []
    for kind, t in truth.items():
        rows.append(
            {
                "key": "domainnet_sketch" if kind == "domainnet" else kind,
                "kind": kind,
                "role": "ood",
                "shift_group": "style" if kind == "domainnet" else "generic",
                "num_classes": t["num_classes"],
                "n_train": len(t["splits"]["train"][0]),
                "n_test": len(t["splits"]["test"][0]),
                "preprocessing": PREPROCESSING[kind],
                "variant": "sketch" if kind == "domainnet" else "",
                "root": ROOTS[kind],
            }
        )
    return rows


# ImageNet's official archives (tests/unit/test_imagenet_archives.py, the download tests)
# ILSVRC2012_ID -> wnid of the leaves (ids not in sorted-wnid order), plus one inner synset
IMAGENET_LEAVES = {1: "n02085620", 2: "n01440764", 3: "n01530575"}
IMAGENET_FIELDS = (
    "ILSVRC2012_ID",
    "WNID",
    "words",
    "gloss",
    "num_children",
    "children",
    "wordnet_height",
    "num_train_images",
)
IMAGENET_VAL_IDS = [3, 1, 1, 2, 3]  # the ground truth of val images 1..5


def imagenet_meta_mat() -> bytes:
    synsets = np.zeros((4, 1), dtype=[(f, "O") for f in IMAGENET_FIELDS])
    for row, (ident, wnid) in enumerate(IMAGENET_LEAVES.items()):
        synsets[row, 0] = (ident, wnid, f"words {wnid}", "a gloss", 0, np.zeros((0, 0)), 0, 2)
    synsets[3, 0] = (4, "n00001740", "entity", "the root", 3, np.array([1, 2, 3]), 3, 0)
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def _tar_add(handle: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    handle.addfile(info, io.BytesIO(data))


def _jpeg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 90, 160)).save(buffer, format="JPEG")
    return buffer.getvalue()


def imagenet_archives(root, meta=None, truth=IMAGENET_VAL_IDS):
    """The three official ImageNet archives as image-net.org ships them (devkit tar.gz with
    data/meta.mat and the val ground truth, train tar of per-wnid tars, flat val tar), with
    IMAGENET_LEAVES' synsets; ``meta`` False leaves meta.mat out."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as handle:
        if meta is not False:
            _tar_add(handle, "ILSVRC2012_devkit_t12/data/meta.mat", meta or imagenet_meta_mat())
        text = "".join(f"{i}\n" for i in truth)
        _tar_add(
            handle,
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
            text.encode(),
        )
        _tar_add(handle, "ILSVRC2012_devkit_t12/COPYING", b"licence")
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for k, wnid in enumerate(sorted(IMAGENET_LEAVES.values())):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as handle:
                for j in range(k + 1):
                    _tar_add(handle, f"{wnid}_{j + 10}.JPEG", _jpeg_bytes(k * 10 + j))
            _tar_add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as handle:
        for i in reversed(range(1, len(truth) + 1)):  # archive order is not file-name order
            _tar_add(handle, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg_bytes(100 + i))
