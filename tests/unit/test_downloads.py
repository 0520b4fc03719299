"""workflow_scripts.datasets.downloads: the data set table's download columns (the paper
table's pins against their sources, every malformed entry named by column), which records a
study's integrity jobs wait for, the free-space check, and one download job against archives
written here in the real formats and served over loopback HTTP."""

import hashlib
import io
import logging
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import RangeServer  # noqa: E402

from tests import dataset_layouts as layouts  # noqa: E402
from workflow_scripts.config import ConfigError, check_datasets, read_table  # noqa: E402
from workflow_scripts.datasets import DataError, downloads, imagenet_archives  # noqa: E402
from workflow_scripts.fetch import FetchError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config" / "datasets_paper.tsv"
LOG = logging.getLogger("test_downloads")


def _paper():
    table = read_table(PAPER, "datasets", "datasets")
    return {key: table.loc[key].to_dict() for key in table.index}


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def _tar(members: dict[str, bytes], mode="w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as handle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            handle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------
# the paper table


def test_paper_table_pins_ten_data_sets_and_never_imagenet():
    rows = _paper()
    files = {key: downloads.archives(row) for key, row in rows.items()}
    assert files["imagenet"] == []
    assert sorted(k for k, f in files.items() if f) == sorted(set(rows) - {"imagenet"})
    assert [(f.name, f.creates) for f in files["inaturalist"]] == [
        ("train_mini.tar.gz", "inaturalist/train_mini"),  # the official folder names
        ("val.tar.gz", "inaturalist/val"),
    ]
    assert [f.creates for f in files["pascal"]] == ["VOCdevkit"]
    assert [f.name for f in files["cub"]] == ["CUB_200_2011.tgz"]
    # torchvision's published MD5s (CIFAR100, VOCSegmentation 2012, INaturalist 2021_train_mini
    # and 2021_valid), copied here from torchvision's source as an independent record
    published = {
        ("cifar100", "cifar-100-python.tar.gz"): "eb9058c3a382ffc7106e4002c42a8d85",
        ("pascal", "VOCtrainval_11-May-2012.tar"): "6cd6e144f989b92b3379bac3b3de84fd",
        ("inaturalist", "train_mini.tar.gz"): "db6ed8330e634445efc8fec83ae81442",
        ("inaturalist", "val.tar.gz"): "f6f6e0e242e3d4c9569ba56400938afc",
    }
    for (key, name), md5 in published.items():
        assert {f.name: f.checksum for f in files[key]}[name] == f"md5:{md5}"
    # ImageNet: the row's pins are the published MD5s the command-line unpacker checks
    pins = downloads.imagenet_checksums(rows["imagenet"])
    assert pins == {
        n: f"md5:{imagenet_archives.ARCHIVES[n][1]}" for n in ("train", "val", "devkit")
    }
    total = sum(f.size for f in sum(files.values(), []))
    assert 75e9 < total < 76e9  # README "Run the paper": 75.4 GB to download


def test_domainnet_rows_are_the_cleaned_release():
    """The paper's counts are the cleaned release's per-domain image counts (M3SDA page:
    'cleaned version, recommended'), not the original's; its list files are domainnet/txt/."""
    cleaned = {  # images per domain, cleaned / original, from the M3SDA download page
        "clipart": (48129, 48837),
        "infograph": (51605, 53201),
        "painting": (72266, 75759),
        "quickdraw": (172500, 172500),
        "real": (172947, 175327),
        "sketch": (69128, 70386),
    }
    rows = _paper()
    for domain, (clean, _original) in cleaned.items():
        row = rows[f"domainnet_{domain}"]
        assert row["n_train"] + row["n_test"] == clean, domain
        names = {f.name: f for f in downloads.archives(row)}
        lists = [f"{domain}_train.txt", f"{domain}_test.txt"]
        assert sorted(names) == sorted([f"{domain}.zip", *lists])
        for name in lists:
            assert "/multi-source/domainnet/txt/" in names[name].url
            assert names[name].creates == f"domainnet/{name}"
        # the clipart and painting images of the cleaned release are the groundtruth/ zips
        assert ("/groundtruth/" in names[f"{domain}.zip"].url) == (
            domain in ("clipart", "painting")
        )
    assert sum(r["n_train"] + r["n_test"] for k, r in rows.items() if "domainnet" in k) == 586575


# ------------------------------------------------------------------------------------------
# malformed rows


ROW = "key\tkind\trole\tshift_group\tnum_classes\tn_train\tn_test\troot\t{cols}\n"


def _load(tmp_path, rows: list[dict]):
    cols = list(downloads.COLUMNS)
    lines = [ROW.format(cols="\t".join(cols))]
    for row in rows:
        base = [row["key"], row.get("kind", "cub"), "ood", "g", "3", "6", "4", row["key"]]
        lines.append("\t".join(base + [row.get(c, "") for c in cols]) + "\n")
    path = tmp_path / "datasets.tsv"
    path.write_text("".join(lines))
    table = read_table(path, "datasets", "datasets")
    check_datasets(table, str(path))
    return table


GOOD = {
    "download_urls": "https://example.org/a.tgz https://example.org/list.txt",
    "download_checksums": f"md5:{'0' * 32} sha256:{'a' * 64}",
    "download_bytes": "100 20",
    "download_creates": "a lists/list.txt",
}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            {"download_bytes": "100"},
            "'download_urls' 2, 'download_checksums' 2, 'download_bytes' 1",
        ),
        ({"download_checksums": f"md5:{'0' * 31} md5:{'0' * 32}"}, "column 'download_checksums'"),
        ({"download_checksums": f"crc:{'0' * 32} md5:{'0' * 32}"}, "column 'download_checksums'"),
        ({"download_urls": "ftp://x.org/a.tgz https://example.org/l.txt"}, "is no http"),
        ({"download_bytes": "100 -3"}, "column 'download_bytes': '-3'"),
        ({"download_creates": "a ../up.txt"}, "column 'download_creates': '../up.txt'"),
        ({"download_creates": "/abs list.txt"}, "column 'download_creates': '/abs'"),
        ({"download_creates": "a a"}, "column 'download_creates': 'a' twice"),
        ({"download_urls": "https://example.org/a.tgz https://example.org/"}, "names no file"),
    ],
)
def test_malformed_download_columns_name_table_key_and_column(tmp_path, edit, message):
    with pytest.raises(ConfigError, match="key 'ds'") as error:
        _load(tmp_path, [{"key": "ds", **GOOD, **edit}])
    assert message in str(error.value) and str(tmp_path / "datasets.tsv") in str(error.value)


def test_a_well_formed_row_and_cross_row_rules(tmp_path):
    table = _load(tmp_path, [{"key": "ds", **GOOD}])
    files = downloads.archives(table.loc["ds"].to_dict())
    assert [(f.name, f.size, f.creates, f.unpacks) for f in files] == [
        ("a.tgz", 100, "a", True),
        ("list.txt", 20, "lists/list.txt", False),
    ]
    assert files[0].record == "results/data_downloads/ds/a.tgz.json"
    with pytest.raises(
        ConfigError,
        match="key 'other': column 'download_creates': 'a' is also created by data set 'ds'",
    ):
        _load(tmp_path, [{"key": "ds", **GOOD}, {"key": "other", **GOOD}])
    with pytest.raises(ConfigError, match="never downloads ImageNet"):
        _load(tmp_path, [{"key": "inet", "kind": "imagenet", **GOOD}])
    with pytest.raises(ConfigError, match="2 entries; an ImageNet row pins its three archives"):
        _load(
            tmp_path,
            [{"key": "inet", "kind": "imagenet", "download_checksums": f"md5:{'0' * 32} " * 2}],
        )


# ------------------------------------------------------------------------------------------
# planning


def test_records_the_integrity_jobs_wait_for(tmp_path):
    row = {"key": "ds", "kind": "cub", **GOOD}
    records = ["results/data_downloads/ds/a.tgz.json", "results/data_downloads/ds/list.txt.json"]
    there: set = set()

    def exists(path):
        return str(path) in there

    # off: no edge, whatever is missing (a manual layout reruns nothing)
    assert downloads.needed_records(row, "data", False, exists) == []
    # on: an edge for each file not in place yet, none for one in place
    assert downloads.needed_records(row, "data", True, exists) == records
    there.add("data/a")
    assert downloads.needed_records(row, "data", True, exists) == records[1:]
    assert downloads.pending([row], "data", True, exists) == [downloads.archives(row)[1].params()]
    # a record keeps its edge, with the key on or off (turning it off reruns nothing)
    there.update({records[1], "data/lists/list.txt"})
    assert downloads.needed_records(row, "data", False, exists) == records[1:]
    assert downloads.pending([row], "data", True, exists) == []
    assert downloads.pending([row], "data", False, lambda p: False) == []


def test_imagenet_record_only_for_archives_not_yet_unpacked(tmp_path):
    row = {"key": "imagenet", "kind": "imagenet", "root": "imagenet"}
    root = tmp_path / "imagenet"
    assert downloads.imagenet_record(row, tmp_path) == []
    layouts.imagenet_archives(root)
    record = ["results/data_downloads/imagenet/ILSVRC2012.json"]
    assert downloads.imagenet_record(row, tmp_path) == record
    (root / "train").mkdir()
    assert downloads.imagenet_record(row, tmp_path) == []
    assert downloads.imagenet_record(row, tmp_path, exists=lambda p: str(p) == record[0]) == record


# ------------------------------------------------------------------------------------------
# free space


def test_free_space_check_counts_unpacking_and_what_is_downloaded(tmp_path):
    archive = downloads.Archive("ds", "https://x.org/a.tar.gz", "md5:" + "0" * 32, 1000, "a")
    plain = downloads.Archive("ds", "https://x.org/l.txt", "md5:" + "0" * 32, 30, "l.txt")
    assert downloads.space_needed(archive, tmp_path) == 2000  # download + unpacked
    assert downloads.space_needed(plain, tmp_path) == 30
    part = archive.staged(tmp_path).with_name("a.tar.gz.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 400)
    assert downloads.space_needed(archive, tmp_path) == 1600  # 600 left + 1000 unpacked
    report = downloads.check_space([archive.params(), plain.params()], tmp_path, LOG)
    assert [needed for needed, _ in report.values()] == [1630]
    huge = downloads.Archive("cub", "https://x.org/big.tgz", "md5:" + "0" * 32, 10**15, "big")
    with pytest.raises(downloads.SpaceError) as error:
        downloads.check_space([huge.params(), plain.params()], tmp_path / "nothing/yet", LOG)
    text = str(error.value)
    assert "needs 2000000.00 GB" in text and "GB missing" in text
    assert "cub big.tgz 1000000.00 GB; ds l.txt 0.00 GB" in text


# ------------------------------------------------------------------------------------------
# one download job over HTTP


def _archive(server, name, data, creates, key="cub"):
    return downloads.Archive(key, f"{server.url}/{name}", _md5(data), len(data), creates).params()


def test_a_job_fetches_unpacks_only_its_entry_and_records(tmp_path):
    """CUB's tgz holds a stray top-level attributes.txt beside CUB_200_2011/: only the
    entry the table names is moved into place; a list file is moved as it is."""
    tgz = _tar({"attributes.txt": b"1 has_bill_shape::curved\n", "CUB_200_2011/README": b"r"})
    data = tmp_path / "data"
    with RangeServer({"CUB_200_2011.tgz": tgz, "l.txt": b"a 0\n"}) as server:
        params = _archive(server, "CUB_200_2011.tgz", tgz, "CUB_200_2011")
        record = downloads.fetch_archive(params, data, LOG)
        listed = downloads.fetch_archive(_archive(server, "l.txt", b"a 0\n", "dn/l.txt"), data, LOG)
    assert (data / "CUB_200_2011/README").read_bytes() == b"r"
    assert not (data / "attributes.txt").exists()
    assert (data / "dn/l.txt").read_bytes() == b"a 0\n"
    assert not list((data / downloads.STAGING).rglob("*.*"))  # archive deleted once unpacked
    assert record["status"] == listed["status"] == "downloaded"
    assert record["url"] == params["url"] and record["checksum"] == _md5(tgz)
    assert record["bytes"] == len(tgz) and record["date"].endswith("Z")


def test_a_file_in_place_is_not_downloaded(tmp_path):
    data = tmp_path / "data"
    (data / "CUB_200_2011").mkdir(parents=True)
    with RangeServer({}) as server:
        record = downloads.fetch_archive(_archive(server, "c.tgz", b"x", "CUB_200_2011"), data, LOG)
        assert server.requests == []
    assert record["status"] == "found in place"


def test_checksum_mismatch_and_wrong_layout_leave_nothing_that_looks_complete(tmp_path):
    data = tmp_path / "data"
    good = _tar({"cifar100/train": b"t"})
    with RangeServer({"c.tar.gz": good}) as server:
        params = _archive(server, "c.tar.gz", good, "cifar-100-python", key="cifar100")
        wrong = params | {"checksum": "md5:" + "1" * 32}
        with pytest.raises(FetchError) as error:
            downloads.fetch_archive(wrong, data, LOG, sleep=lambda s: None)
        assert server.requests == [("c.tar.gz", None)]  # complete: not downloaded again
        text = str(error.value)
        assert "data set 'cifar100', c.tar.gz" in text and params["url"] in text
        assert "1" * 32 in text and hashlib.md5(good).hexdigest() in text
        assert not list(data.rglob("*c.tar.gz*")) and not (data / "cifar-100-python").exists()
        # the right file, but it unpacks to another folder than the table says
        with pytest.raises(FetchError, match="unpacks to cifar100, not 'cifar-100-python'"):
            downloads.fetch_archive(params, data, LOG)
    assert not (data / "cifar-100-python").exists() and not (data / "cifar100").exists()
    assert not list(data.rglob(".unpacking-*"))
    # the verified archive stays: fixing the table does not download it again
    assert (data / downloads.STAGING / "cifar100" / "c.tar.gz").read_bytes() == good


def test_a_job_resumes_a_truncated_download_itself(tmp_path):
    """A short body is resumed inside the job (after the back-off), so the rule needs no
    Snakemake retries (which would rerun a permanent checksum mismatch too)."""
    content = bytes(range(256)) * 6000  # 1.5 MB: more than one CHUNK arrives before the cut
    tar = _tar({"CUB_200_2011/README": content}, mode="w")
    data, delays = tmp_path / "data", []
    with RangeServer({"c.tar": tar}) as server:
        server.cut["c.tar"] = 1_200_000
        record = downloads.fetch_archive(
            _archive(server, "c.tar", tar, "CUB_200_2011"), data, LOG, sleep=delays.append
        )
        (first, no_range), (second, resumed) = server.requests
    assert first == second == "c.tar" and no_range is None
    assert 0 < int(resumed.removeprefix("bytes=").rstrip("-")) <= 1_200_000
    assert record["status"] == "downloaded" and delays == [downloads.BACKOFF]
    assert (data / "CUB_200_2011/README").read_bytes() == content


def test_a_zip_entry_leaving_the_folder_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        handle.writestr("clipart/a/x.jpg", b"j")
        handle.writestr("../escaped.txt", b"e")
    data = tmp_path / "data"
    with RangeServer({"clipart.zip": buffer.getvalue()}) as server:
        params = _archive(server, "clipart.zip", buffer.getvalue(), "dn/clipart", "dn_clipart")
        with pytest.raises(FetchError, match=r"zip entry '\.\./escaped\.txt' .* refused"):
            downloads.fetch_archive(params, data, LOG)
    assert not (tmp_path / "escaped.txt").exists() and not (data / "escaped.txt").exists()
    assert not (data / "dn/clipart").exists()


def test_imagenet_unpack_checks_the_tables_pins(tmp_path):
    root = tmp_path / "data" / "imagenet"
    layouts.imagenet_archives(root)
    pins = " ".join(
        _md5((root / imagenet_archives.ARCHIVES[n][0]).read_bytes())
        for n in downloads.IMAGENET_ORDER
    )
    row = {"key": "imagenet", "kind": "imagenet", "root": "imagenet"}
    bad = pins.replace(pins[4:36], "0" * 32, 1)  # the train archive's pin
    with pytest.raises(DataError, match=r"ILSVRC2012_img_train\.tar' has MD5 .* the pinned 0{32}"):
        downloads.unpack_imagenet(row | {"download_checksums": bad}, tmp_path / "data", LOG)
    assert not (root / "train").exists()
    record = downloads.unpack_imagenet(row | {"download_checksums": pins}, tmp_path / "data", LOG)
    assert record["counts"] == {"train": 6, "val": 5, "classes": 3}
    assert record["archives"]["train"]["checksum"] == pins.split()[0]
    assert sorted(p.name for p in (root / "val").iterdir()) == sorted(
        layouts.IMAGENET_LEAVES.values()
    )
