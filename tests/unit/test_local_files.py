"""workflow_scripts.local_files and the params built on it: a local file a job reads (a timm
row's weights, a checkpoint row's file, a results table) enters the job's params by the sha256
of its bytes, so a file replaced at the same path -- even by one with an older time -- changes
them, and a touch or a copy of the same bytes does not."""

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from workflow_scripts import local_files
from workflow_scripts.config import load_study
from workflow_scripts.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
OLD = 946684800  # 2000-01-01: older than anything a run wrote


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch):
    monkeypatch.setattr(local_files, "_memory", {})


def _replace(path: Path, data: bytes, mtime: float = OLD) -> None:
    """Put other bytes at ``path`` the way ``mv`` of an older download does: a new file
    renamed into place, its time in the past."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("weights/mine.pth", "weights/mine.pth"),
        ("/abs/mine.pth", "/abs/mine.pth"),
        ("file:///abs/my%20file.pth", "/abs/my file.pth"),
        ("https://example.org/mine.pth", None),
        ("https://drive.google.com/file/d/abc/view", None),
        ("", None),
        (None, None),
    ],
)
def test_url_path(url, expected):
    got = local_files.url_path(url)
    assert (str(got) if got is not None else None) == expected


def test_digest_equals_hashlib_and_follows_the_bytes_not_the_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "w.pth"
    path.write_bytes(b"first")
    first = local_files.sha256(path)
    assert first == hashlib.sha256(b"first").hexdigest()
    # replaced by other bytes with an older time: a new digest
    _replace(path, b"second")
    assert local_files.sha256(path) == hashlib.sha256(b"second").hexdigest()
    # the same bytes again, with yet another time: the first digest
    _replace(path, b"first", mtime=OLD + 5)
    assert local_files.sha256(path) == first
    # a touch: the same digest
    os.utime(path)
    assert local_files.sha256(path) == first
    assert local_files.sha256(tmp_path / "missing.pth") is None
    assert local_files.sha256(tmp_path) is None  # a folder is no file


def test_the_cache_is_used_and_invalidated_by_a_replacement(tmp_path, monkeypatch):
    """A second planning process takes the cached digest without reading the file; a file
    rewritten in place with the same size and time (only st_ctime moves) is read again."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 1000)
    os.utime(path, (OLD, OLD))
    digest = local_files.sha256(path)
    cache = json.loads(local_files.CACHE.read_text())
    assert list(cache.values()) == [digest]

    reads = []
    from workflow_scripts import io

    original = io.sha256_file
    monkeypatch.setattr(io, "sha256_file", lambda p, *a: reads.append(p) or original(p, *a))
    monkeypatch.setattr(local_files, "_memory", {})  # a new process
    assert local_files.sha256(path) == digest and reads == []

    # same size, same mtime, other bytes, written in place (same inode)
    with open(path, "r+b") as fh:
        fh.write(b"b")
    os.utime(path, (OLD, OLD))
    monkeypatch.setattr(local_files, "_memory", {})
    assert local_files.sha256(path) == hashlib.sha256(b"b" + b"a" * 999).hexdigest()
    assert reads == [path]


def test_a_damaged_or_unwritable_cache_costs_only_a_rehash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    local_files.CACHE.parent.mkdir(parents=True)
    local_files.CACHE.write_text("{not json")
    assert local_files.sha256(path) == hashlib.sha256(b"x").hexdigest()
    assert json.loads(local_files.CACHE.read_text())  # rewritten whole
    blocked = tmp_path / "ro"
    blocked.write_text("a file where the cache folder would be")
    assert (
        local_files.sha256(path, cache=blocked / "sha256.json") == hashlib.sha256(b"x").hexdigest()
    )


# the params built on it --------------------------------------------------------------------


def _paper_plan(tmp_path, rows: dict[str, str], results_tables=()) -> Plan:
    """paper.yaml with its model table, the url of each row in ``rows`` replaced."""
    import pandas as pd

    table = pd.read_csv(
        ROOT / "config/models_paper.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    for key, url in rows.items():
        table.loc[table["key"] == key, "url"] = url
        table.loc[table["key"] == key, "sha256"] = ""
    path = tmp_path / "models.tsv"
    table.to_csv(path, sep="\t", index=False)
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    config.update(models_table=str(path), results_tables=[str(t) for t in results_tables])
    return Plan(config, load_study(config, ROOT))


def test_checkpoint_source_carries_a_local_files_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "mine.pth"
    local.write_bytes(b"v1")
    plan = _paper_plan(tmp_path, {"mae": str(local), "dino_vitb16": local.as_uri()})
    mae, dino = SimpleNamespace(model="mae"), SimpleNamespace(model="dino_vitb16")
    before = plan.checkpoint_source(mae)
    assert before == {"url": str(local), "sha256": hashlib.sha256(b"v1").hexdigest()}
    assert plan.checkpoint_source(dino)["sha256"] == before["sha256"]
    # a download URL: the param is the url alone, as before this change (no rerun on upgrade)
    swav = SimpleNamespace(model="swav")
    assert plan.checkpoint_source(swav) == plan.study.model("swav")["url"]
    assert plan.checkpoint_source(swav).startswith("https://")
    _replace(local, b"v2")
    monkeypatch.setattr(local_files, "_memory", {})
    after = plan.checkpoint_source(mae)
    assert after["sha256"] == hashlib.sha256(b"v2").hexdigest() != before["sha256"]


def test_timm_weights_spec_carries_a_local_files_bytes(tmp_path, monkeypatch):
    from tests.unit.test_timm_models import CONVNEXT, _load

    monkeypatch.chdir(tmp_path)
    local = tmp_path / "cnx.pth"
    local.write_bytes(b"weights v1")
    rows = [
        dict(key="cnx", arch=CONVNEXT, embedding="pooled", url=str(local)),
        dict(key="hub", arch=CONVNEXT, embedding="pooled"),
    ]
    config, study = _load(tmp_path, rows)
    plan = Plan(config, study)
    spec = plan.weights_spec(SimpleNamespace(model="cnx"))
    assert spec["source_sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    # a hub row's spec is unchanged: no key, so no rerun of finished hub rows
    assert "source_sha256" not in plan.weights_spec(SimpleNamespace(model="hub"))
    _replace(local, b"weights v2")
    monkeypatch.setattr(local_files, "_memory", {})
    assert plan.weights_spec(SimpleNamespace(model="cnx"))["source_sha256"] == (
        hashlib.sha256(b"weights v2").hexdigest()
    )


def test_results_table_sources_carry_each_tables_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = tmp_path / "mine.csv"
    published = (ROOT / "config/published_imagenet.csv").read_bytes()
    table.write_bytes(published)
    plan = _paper_plan(tmp_path, {}, results_tables=[table])
    sources = plan.results_table_sources()
    assert sources == {
        "mine.csv": {"path": str(table), "sha256": hashlib.sha256(published).hexdigest()}
    }
    _replace(table, published.replace(b"\n", b"\r\n"))
    monkeypatch.setattr(local_files, "_memory", {})
    assert plan.results_table_sources()["mine.csv"]["sha256"] != sources["mine.csv"]["sha256"]


def test_source_url():
    assert local_files.source_url("https://x/y.pth") == "https://x/y.pth"
    assert local_files.source_url({"url": "mine.pth", "sha256": "ab"}) == "mine.pth"
