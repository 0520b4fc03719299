"""Data sets that fetch themselves, through snakemake: archives fabricated in the real formats
from tiny copies of each layout (tests/dataset_layouts.py) -- CIFAR-100's tar.gz, VOC2012's tar,
CUB's tgz with its stray top-level attributes.txt, iNaturalist 2021's two tar.gz unpacking to
the official train_mini/ and val/, a DomainNet domain's zip and list files -- served over HTTP
on 127.0.0.1, the table's URLs and checksums pointing there; ImageNet's three official archives
and Kaggle's layout placed by hand. The integrity jobs pass on what the download and unpack
jobs laid out, a truncated download resumes, a killed unpack's leftovers are cleared, and the
failures (checksum, wrong layout, a zip entry with '..', too little disk space) name the data
set and leave nothing that looks complete."""

import hashlib
import io
import json
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from snakerun import smoke_config, snakemake
from tests import dataset_layouts as layouts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from checkpoint_layouts import RangeServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
KEYS = ["imagenet", "imagenet_kaggle", "cifar100", "cub", "pascal", "inaturalist", "dn_clipart"]


def _tar(folder: Path, names: list[str], mode: str, extra: dict | None = None) -> bytes:
    """A tar of ``names`` (folders under ``folder``) plus ``extra`` files, as tar writes them
    (a folder's entry before its files)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as handle:
        for name in names:
            handle.add(folder / name, arcname=name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            handle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(folder: Path, name: str, extra: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for path in sorted((folder / name).rglob("*")):
            handle.write(path, path.relative_to(folder).as_posix())
        for entry, data in (extra or {}).items():
            handle.writestr(entry, data)
    return buffer.getvalue()


def _files(src: Path) -> tuple[dict, dict]:
    """(served name -> bytes, data set key -> [(served name, creates)]) of the archives."""
    served = {
        "cifar-100-python.tar.gz": _tar(
            src, ["cifar-100-python"], "w:gz", {"cifar-100-python/file.txt~": b"x"}
        ),
        "VOCtrainval_11-May-2012.tar": _tar(src, ["VOCdevkit"], "w"),
        "CUB_200_2011.tgz": _tar(
            src,
            ["CUB_200_2011"],
            "w:gz",
            {"attributes.txt": b"1 has_bill_shape::curved_(up_or_down)\n"},
        ),
        "train_mini.tar.gz": _tar(src / "inaturalist", ["train_mini"], "w:gz"),
        "val.tar.gz": _tar(src / "inaturalist", ["val"], "w:gz"),
        "clipart.zip": _zip(src / "domainnet", "clipart"),
        "clipart_train.txt": (src / "domainnet/clipart_train.txt").read_bytes(),
        "clipart_test.txt": (src / "domainnet/clipart_test.txt").read_bytes(),
    }
    rows = {
        "cifar100": [("cifar-100-python.tar.gz", "cifar-100-python")],
        "pascal": [("VOCtrainval_11-May-2012.tar", "VOCdevkit")],
        "cub": [("CUB_200_2011.tgz", "CUB_200_2011")],
        "inaturalist": [
            ("train_mini.tar.gz", "inaturalist/train_mini"),
            ("val.tar.gz", "inaturalist/val"),
        ],
        "dn_clipart": [
            ("clipart.zip", "domainnet/clipart"),
            ("clipart_train.txt", "domainnet/clipart_train.txt"),
            ("clipart_test.txt", "domainnet/clipart_test.txt"),
        ],
    }
    return served, rows


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def write_setup(base: Path, url: str, served: dict, files: dict, truth: dict, edit=None) -> Path:
    """A table whose rows download from ``url`` (plus the two ImageNet rows), a config; returns
    the config file. ``edit(rows)`` may change the rows first."""
    plain = {k: v for k, v in truth.items() if k != "imagenet_kaggle"}
    by_kind = {r["kind"]: r for r in layouts.table_rows(plain)}
    # the in-domain set is synthetic: the random model is pre-trained on it (not run here)
    rows = [
        dict(
            key="shapes",
            kind="synthetic",
            role="id",
            shift_group="in_domain",
            num_classes=10,
            generator="shapes",
            variant="standard",
            n_train=100,
            n_test=20,
            seed=0,
        )
    ]
    for key in KEYS:
        kind = {"imagenet_kaggle": "imagenet", "dn_clipart": "domainnet"}.get(key, key)
        row = dict(by_kind[kind], key=key, role="ood")
        if key == "imagenet_kaggle":
            kaggle = truth["imagenet_kaggle"]["splits"]
            row.update(
                root="imagenet_kaggle",
                n_train=len(kaggle["train"][0]),
                n_test=len(kaggle["test"][0]),
            )
        if key == "dn_clipart":
            row.update(variant="clipart")
        entries = files.get(key, [])
        row.update(
            download_urls=" ".join(f"{url}/{name}" for name, _ in entries),
            download_checksums=" ".join(_md5(served[name]) for name, _ in entries),
            download_bytes=" ".join(str(len(served[name])) for name, _ in entries),
            download_creates=" ".join(creates for _, creates in entries),
        )
        rows.append(row)
    archives = base / "data" / "imagenet"
    if archives.is_dir():  # the table pins the fabricated official archives' MD5s
        rows[1]["download_checksums"] = " ".join(
            _md5((archives / name).read_bytes())
            for name in (
                "ILSVRC2012_img_train.tar",
                "ILSVRC2012_img_val.tar",
                "ILSVRC2012_devkit_t12.tar.gz",
            )
        )
    if edit:
        edit(rows)
    cells = [{column: str(value) for column, value in row.items()} for row in rows]
    pd.DataFrame(cells).fillna("").to_csv(base / "datasets.tsv", sep="\t", index=False)
    models = (ROOT / "tests" / "integration" / "models_smoke.tsv").read_text().splitlines()
    (base / "models.tsv").write_text(
        "\n".join([models[0], next(line for line in models if line.startswith("random_resnet\t"))])
        + "\n"
    )
    config = smoke_config()
    config.update(
        models_table=str(base / "models.tsv"),
        datasets_table=str(base / "datasets.tsv"),
        data_root=str(base / "data"),
        allow_subsets=["pascal", "cifar100"],
        protocols=["knn"],
    )
    config["fewshot"]["percents"] = [10]
    config["knn"]["k"] = 3  # the fixtures' splits hold a few images
    config["analysis"]["min_models"] = 1
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def build(base: Path) -> dict:
    """The layouts (src/), their archives, ImageNet's official archives and Kaggle's layout
    (data/); returns the truth per key."""
    src = base / "src"
    skip = ("imagenet", "domainnet")
    truth = {kind: make(src) for kind, make in layouts.BUILDERS.items() if kind not in skip}
    truth["imagenet"] = _imagenet_truth()
    truth["domainnet"] = layouts.domainnet(src, domain="clipart")
    truth["inaturalist"] = layouts.inaturalist(src, folders=("train_mini", "val"))
    # one photo-sized image makes train_mini span several download chunks (the resume test)
    species = layouts.INAT_SPECIES[0]
    noise = np.random.default_rng(0).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / f"inaturalist/train_mini/{species}/99-uuid.jpg", quality=95)
    items, labels = truth["inaturalist"]["splits"]["train"]
    items.insert(2, f"train_mini/{species}/99-uuid.jpg")
    labels.insert(2, labels[0])
    shutil.rmtree(src / "inaturalist" / "2021_train_mini", ignore_errors=True)
    layouts.imagenet_archives(base / "data" / "imagenet")
    kaggle = layouts.imagenet_kaggle(base / "kaggle")
    shutil.move(kaggle["root"], base / "data" / "imagenet_kaggle")
    truth["imagenet_kaggle"] = kaggle
    return truth


def _imagenet_truth() -> dict:
    """What the adapter lists from the unpacked official archives (independently: sorted wnids,
    files by name within a wnid, val wnids from the ground truth)."""
    wnids = sorted(layouts.IMAGENET_LEAVES.values())
    train = [(f"train/{w}/{w}_{j + 10}.JPEG", k) for k, w in enumerate(wnids) for j in range(k + 1)]
    val = sorted(
        (
            f"val/{layouts.IMAGENET_LEAVES[ident]}/ILSVRC2012_val_{i:08d}.JPEG",
            wnids.index(layouts.IMAGENET_LEAVES[ident]),
        )
        for i, ident in enumerate(layouts.IMAGENET_VAL_IDS, start=1)
    )
    splits = {
        name: ([i for i, _ in rows], [y for _, y in rows])
        for name, rows in (("train", train), ("test", val))
    }
    return {"splits": splits, "num_classes": 3}


def integrity_targets(keys=KEYS):
    return [f"results/data/{k}/{s}_manifest.json" for k in keys for s in ("train", "test")]


def run(workdir, configfile, *args, check=True):
    return snakemake(
        workdir, "--cores", "2", *args, "--configfile", str(configfile), check=check, timeout=600
    )


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """Run 1 cuts iNaturalist's train_mini download short (the job resumes it itself) and finds
    a killed unpack's leftovers of CUB; run 2 finds everything done. Returns what the tests look
    at."""
    base = tmp_path_factory.mktemp("downloads")
    truth = build(base)
    served, files = _files(base / "src")
    with RangeServer(served) as server:
        configfile = write_setup(base, server.url, served, files, truth)
        # a killed unpack: CUB's archive verified in the staging folder, half unpacked
        staged = base / "data" / ".downloads" / "cub" / "CUB_200_2011.tgz"
        staged.parent.mkdir(parents=True)
        staged.write_bytes(served["CUB_200_2011.tgz"])
        half = base / "data" / ".unpacking-CUB_200_2011.tgz" / "CUB_200_2011"
        half.mkdir(parents=True)
        (half / "images.txt").write_text("1 half")
        cut = len(served["train_mini.tar.gz"]) * 2 // 3
        assert cut > 1 << 20  # more than one download chunk
        server.cut["train_mini.tar.gz"] = cut
        work = base / "work"
        first = run(
            work,
            configfile,
            *integrity_targets(),
            "--keep-going",
            "--config",
            "data_download=true",
            check=False,
        )
        part = base / "data/.downloads/inaturalist/train_mini.tar.gz.part"
        part_size = part.stat().st_size if part.exists() else None
        second = run(work, configfile, *integrity_targets(), "--config", "data_download=true")
        requests = list(server.requests)
        plans = {
            flag: run(
                work, configfile, "-n", *integrity_targets(), "--config", f"data_download={flag}"
            ).stdout
            for flag in ("true", "false")
        }
    return dict(
        base=base,
        work=work,
        truth=truth,
        served=served,
        first=first,
        second=second,
        cut=cut,
        part_size=part_size,
        requests=requests,
        plans=plans,
    )


def _truth_of(truth, key):
    kind = {"dn_clipart": "domainnet"}.get(key, key)
    return truth[kind]


def test_integrity_jobs_pass_on_what_was_fetched_and_unpacked(fetched):
    work, truth = fetched["work"], fetched["truth"]
    for key in KEYS:
        t = _truth_of(truth, key)
        for split in ("train", "test"):
            items, labels = t["splits"][split]
            got = np.load(work / f"results/labels/{key}/{split}.npy")
            assert got.tolist() == list(labels), (key, split)
            files = (work / f"results/data/{key}/{split}_files.txt").read_text().splitlines()
            if key != "cifar100":
                assert files == items, (key, split)


def test_records_say_url_checksum_and_date(fetched):
    work, served = fetched["work"], fetched["served"]
    records = sorted((work / "results/data_downloads").rglob("*.json"))
    names = sorted(p.name for p in records)
    assert names == sorted([f"{n}.json" for n in served] + ["ILSVRC2012.json"])
    for path in records:
        record = json.loads(path.read_text())
        if path.name == "ILSVRC2012.json":
            assert record["counts"] == {"train": 6, "val": 5, "classes": 3}
            continue
        name = path.name.removesuffix(".json")
        assert record["url"].endswith(f"/{name}") and record["url"].startswith("http://127.0.0.1")
        assert record["checksum"] == _md5(served[name]) and record["bytes"] == len(served[name])
        assert record["status"] == "downloaded" and record["date"].endswith("Z")


def test_layout_is_what_the_adapters_read_and_nothing_else(fetched):
    data = fetched["base"] / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [
            ".downloads",
            "CUB_200_2011",
            "VOCdevkit",
            "cifar-100-python",
            "domainnet",
            "imagenet",
            "imagenet_kaggle",
            "inaturalist",
        ]
    )  # no attributes.txt (CUB's stray top-level file), no .unpacking-* leftovers
    assert sorted(p.name for p in (data / "inaturalist").iterdir()) == ["train_mini", "val"]
    assert sorted(p.name for p in (data / "domainnet").iterdir()) == [
        "clipart",
        "clipart_test.txt",
        "clipart_train.txt",
    ]
    assert not [p for p in (data / ".downloads").rglob("*") if p.is_file()]  # archives deleted
    assert (data / "CUB_200_2011/images.txt").read_text() != "1 half"
    assert sorted(p.name for p in (data / "imagenet").iterdir()) == [
        "ILSVRC2012_devkit_t12.tar.gz",
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_img_val.tar",
        "train",
        "val",
    ]


def test_a_cut_download_resumes_where_it_stopped(fetched):
    """The connection breaks after `cut` bytes: the job keeps the whole chunks it wrote and,
    after its back-off, asks for the rest with a Range request; the run completes (the job
    retries itself; the rule has retries: 0)."""
    first = fetched["first"]
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    log = fetched["work"] / "logs/download_archive/inaturalist/train_mini.tar.gz.log"
    text = log.read_text()
    assert "data set 'inaturalist', train_mini.tar.gz" in text and "the next try resumes" in text
    assert "(try 1/4); trying again in 5.0 s" in text
    assert fetched["part_size"] is None  # renamed into place once whole
    tries = [r for name, r in fetched["requests"] if name == "train_mini.tar.gz"]
    assert len(tries) == 2 and tries[0] is None
    kept = int(tries[1].removeprefix("bytes=").removesuffix("-"))
    assert tries[1] == f"bytes={kept}-" and 0 < kept <= fetched["cut"]
    # everything else got fetched once, the staged CUB archive not at all
    others = [name for name, _ in fetched["requests"] if name != "train_mini.tar.gz"]
    assert sorted(others) == sorted(
        n for n in fetched["served"] if n not in ("train_mini.tar.gz", "CUB_200_2011.tgz")
    )


def test_turning_the_key_on_or_off_plans_nothing(fetched):
    for flag, text in fetched["plans"].items():
        assert "Nothing to be done" in text, (flag, text[-2000:])


def test_failures_name_the_data_set_and_leave_nothing_that_looks_complete(tmp_path):
    """CIFAR-100 served with another checksum than the table pins, CUB's archive unpacking to
    another folder than the table says, a DomainNet zip with a '../' entry: three failing jobs
    in one run; the list files of the same row still arrive."""
    truth = build(tmp_path)
    served, files = _files(tmp_path / "src")
    served["clipart.zip"] = _zip(tmp_path / "src/domainnet", "clipart", {"../escaped.txt": b"e"})

    def edit(rows):
        row = {r["key"]: r for r in rows}
        row["cifar100"]["download_checksums"] = "md5:" + "0" * 32
        row["cub"]["download_creates"] = "CUB_200"

    with RangeServer(served) as server:
        configfile = write_setup(tmp_path, server.url, served, files, truth, edit)
        proc = run(
            tmp_path / "work",
            configfile,
            *integrity_targets(["cifar100", "cub", "dn_clipart"]),
            "--keep-going",
            "--config",
            "data_download=true",
            check=False,
        )
        url, requests = server.url, list(server.requests)
    out = proc.stdout + proc.stderr
    logs = {
        p.parent.name + "/" + p.name: p.read_text()
        for p in (tmp_path / "work/logs/download_archive").rglob("*.log")
    }
    text = out + "".join(logs.values())
    assert proc.returncode != 0
    assert (
        f"data set 'cifar100', cifar-100-python.tar.gz: {url}/cifar-100-python.tar.gz has md5 "
        f"{hashlib.md5(served['cifar-100-python.tar.gz']).hexdigest()} "
        f"({len(served['cifar-100-python.tar.gz'])} bytes), the data set table pins {'0' * 32}"
        in text
    )
    # a whole file with the wrong checksum is permanent: fetched once, not by 4 jobs
    assert "a permanent mismatch, not downloaded again" in text
    assert [n for n, _ in requests].count("cifar-100-python.tar.gz") == 1
    assert (
        "data set 'cub', CUB_200_2011.tgz: 'CUB_200_2011.tgz' unpacks to CUB_200_2011, "
        "attributes.txt, not 'CUB_200'" in text
    )
    assert "data set 'dn_clipart', clipart.zip: zip entry '../escaped.txt'" in text
    data = tmp_path / "data"
    for gone in ("cifar-100-python", "CUB_200", "CUB_200_2011", "domainnet/clipart", "escaped.txt"):
        assert not (data / gone).exists(), gone
    assert not (tmp_path / "escaped.txt").exists()
    assert not list(data.rglob("*.part")) and not list(data.rglob(".unpacking-*"))
    records = tmp_path / "work/results/data_downloads"
    assert sorted(p.name for p in records.rglob("*.json")) == [
        "clipart_test.txt.json",
        "clipart_train.txt.json",
    ]
    assert not list((tmp_path / "work/results/labels").rglob("*.npy"))


def test_too_little_disk_space_stops_before_any_download(tmp_path):
    """Each download job first checks the space all of the study's pending files need."""
    truth = build(tmp_path)
    served, files = _files(tmp_path / "src")

    def edit(rows):
        row = {r["key"]: r for r in rows}["inaturalist"]
        row["download_bytes"] = f"{10**15} {row['download_bytes'].split()[1]}"

    with RangeServer(served) as server:
        configfile = write_setup(tmp_path, server.url, served, files, truth, edit)
        proc = run(
            tmp_path / "work",
            configfile,
            *integrity_targets(["cub", "inaturalist"]),
            "--config",
            "data_download=true",
            check=False,
        )
        assert server.requests == []
    logs = sorted((tmp_path / "work/logs/download_archive").rglob("*.log"))
    out = proc.stdout + proc.stderr + "".join(p.read_text() for p in logs)
    assert proc.returncode != 0 and logs
    assert "not enough disk space for the data set downloads" in out
    assert "GB missing (inaturalist train_mini.tar.gz 1000000.00 GB;" in out
    assert (
        not (tmp_path / "data/inaturalist").exists()
        and not (tmp_path / "data/CUB_200_2011").exists()
    )


def test_paper_config_plans_the_ten_data_sets_downloads(tmp_path):
    """config/paper.yaml with data_download: one download job per file of the table (23),
    before the integrity jobs; without the key, none."""
    from test_real_layouts import planned_jobs

    (tmp_path / "empty").mkdir()
    counts = {}
    for flag in ("true", "false"):
        proc = snakemake(
            tmp_path / "work",
            "-n",
            "--cores",
            "8",
            "--configfile",
            str(ROOT / "config" / "paper.yaml"),
            "--config",
            f"data_root={tmp_path / 'empty'}",
            f"data_download={flag}",
        )
        counts[flag] = planned_jobs(proc.stdout + proc.stderr)
    assert counts["true"]["download_archive"] == 23 and counts["true"]["check_dataset"] == 22
    assert "download_archive" not in counts["false"] and "unpack_imagenet" not in counts["true"]
    assert {k: v for k, v in counts["true"].items() if k != "download_archive"} | {
        "total": counts["false"]["total"]
    } == counts["false"]
