"""ImageNet ILSVRC-2012 from its three official archives, as image-net.org hands them out, into
the sorted layout the ``imagenet`` adapter reads (``train/<wnid>/``, ``val/<wnid>/``).

* ``ILSVRC2012_devkit_t12.tar.gz``: ``data/meta.mat`` (the ``synsets`` struct array: the 1000
  leaf synsets, ``num_children == 0``, map ``ILSVRC2012_ID`` to ``WNID``) and
  ``data/ILSVRC2012_validation_ground_truth.txt`` (line i: the ILSVRC2012_ID of the i-th val
  image in file-name order);
* ``ILSVRC2012_img_train.tar``: one tar per wnid (``n01440764.tar``), each of its JPEGs;
* ``ILSVRC2012_img_val.tar``: the 50,000 val JPEGs, flat.

Each archive must have its published MD5 (:data:`ARCHIVES`). Everything is unpacked into a
hidden staging folder under the root, val sorted into wnid folders by the devkit's ground truth
(no ``valprep.sh``), and ``train/`` and ``val/`` move into place only when both are complete.
The workflow never downloads ImageNet (registration); :data:`WHERE` says where the archives go.

Nothing runs at import time.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
from pathlib import Path

from workflow_scripts.datasets.common import DataError
from workflow_scripts.fetch import check_space, file_digest, parse_checksum

#: name -> (file, published MD5) of the three official archives
ARCHIVES = {
    "devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf"),
    "train": ("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
    "val": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
}
WHERE = (
    "put ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz "
    "(image-net.org, after registration) into the data set's root folder"
)
DEVKIT = "ILSVRC2012_devkit_t12/data"


def archives_in(root: Path) -> dict[str, Path] | None:
    """The three archives under ``root``, or None when none is there; some but not all is an
    error naming the missing ones."""
    found = {name: root / file for name, (file, _) in ARCHIVES.items() if (root / file).is_file()}
    if not found:
        return None
    missing = [ARCHIVES[name][0] for name in ARCHIVES if name not in found]
    if missing:
        raise DataError(
            f"'{root}' has {len(found)} of the 3 ImageNet archives: {', '.join(missing)} missing; {WHERE}"
        )
    return found


def val_wnids(devkit: Path, n_val: int | None = None) -> list[str]:
    """The wnid of each val image in file-name order, from the devkit archive."""
    from scipy.io import loadmat

    with tarfile.open(devkit) as handle:
        try:
            meta = handle.extractfile(f"{DEVKIT}/meta.mat").read()
            truth = handle.extractfile(f"{DEVKIT}/ILSVRC2012_validation_ground_truth.txt").read()
        except KeyError as error:
            raise DataError(f"'{devkit}' lacks {error}: not the ILSVRC2012 devkit") from error
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    leaves = {
        int(ident): str(wnid)
        for ident, wnid, children in zip(
            synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"], strict=True
        )
        if int(children) == 0
    }
    ids = [int(line) for line in truth.decode().split()]
    unknown = sorted(set(ids) - set(leaves))
    if unknown:
        raise DataError(
            f"'{devkit}': ground-truth ids {unknown[:5]} are no leaf synset of meta.mat"
        )
    if n_val is not None and len(ids) != n_val:
        raise DataError(f"'{devkit}': {len(ids)} ground-truth lines for {n_val} val images")
    return [leaves[i] for i in ids]


def _verify(
    archives: dict[str, Path], log: logging.Logger, checksums: dict[str, str] | None = None
) -> None:
    for name, path in archives.items():
        pinned = (checksums or {}).get(name) or f"md5:{ARCHIVES[name][1]}"
        algorithm, expected = parse_checksum(pinned)
        log.info("checking the %s of %s", algorithm, path)
        found = file_digest(path, algorithm)
        if found != expected:
            source = "pinned" if (checksums or {}).get(name) else "published"
            raise DataError(
                f"'{path}' has {algorithm.upper()} {found}, the {source} {expected}: a damaged or "
                "different file"
            )


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as handle:
        handle.extractall(into, filter="data")


def unpack(
    root: str | Path,
    log: logging.Logger | None = None,
    verify: bool = True,
    checksums: dict[str, str] | None = None,
) -> dict:
    """Unpack the archives under ``root`` into ``root/train`` and ``root/val`` (see the module
    docstring); returns counts per split. ``verify``: check each archive first against
    ``checksums`` (name -> ``md5:<hex>`` or ``sha256:<hex>``, from the data set table) or else
    its published MD5."""
    log = log or logging.getLogger(__name__)
    root = Path(root)
    archives = archives_in(root)
    if archives is None:
        raise DataError(f"no ImageNet layout and no archives under '{root}': {WHERE}")
    taken = [name for name in ("train", "val") if (root / name).exists()]
    if taken:
        raise DataError(f"'{root / taken[0]}' exists already; move it away to unpack again")
    if verify:
        _verify(archives, log, checksums)
    check_space(root, sum(p.stat().st_size for p in archives.values()), "ImageNet unpack")
    staging = root / ".unpacking-imagenet"
    shutil.rmtree(staging, ignore_errors=True)  # what a killed unpack left
    try:
        train = staging / "train"
        log.info("unpacking %s", archives["train"])
        _extract(archives["train"], train)
        for inner in sorted(train.glob("*.tar")):
            _extract(inner, train / inner.stem)
            inner.unlink()
        val = staging / "val"
        log.info("unpacking %s", archives["val"])
        _extract(archives["val"], val)
        images = sorted(p.name for p in val.iterdir() if p.is_file())
        wnids = val_wnids(archives["devkit"], len(images))
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        stray = sorted(set(wnids) - set(classes))
        if stray:
            raise DataError(f"val wnids {stray[:5]} have no train folder in '{archives['train']}'")
        for wnid in set(wnids):
            (val / wnid).mkdir()
        for name, wnid in zip(images, wnids, strict=True):
            os.replace(val / name, val / wnid / name)
        counts = {
            "train": sum(len(os.listdir(train / c)) for c in classes),
            "val": len(images),
            "classes": len(classes),
        }
        os.replace(train, root / "train")
        os.replace(val, root / "val")
        log.info("ImageNet under %s: %s", root, counts)
        return counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv=None) -> int:
    """``python -m workflow_scripts.datasets.imagenet_archives ROOT``: unpack the three
    archives in ROOT into ROOT/train and ROOT/val."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root", help="the ImageNet root folder holding the three archives")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the MD5 check (about 140 GB read)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        unpack(args.root, verify=not args.no_verify)
    except DataError as error:
        parser.exit(1, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
