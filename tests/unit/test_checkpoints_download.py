"""Checkpoint downloads over loopback HTTP, file:// and local paths; retries; sha256 pinning."""

import hashlib
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import LoopbackServer, free_port  # noqa: E402

from workflow_scripts.checkpoints import gdrive_id, url_kind  # noqa: E402
from workflow_scripts.checkpoints.download import DownloadError, download, pin_message  # noqa: E402

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: several chunks
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.pth").write_bytes(PAYLOAD)
    with LoopbackServer(root) as server:
        yield server


def _leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


def test_http_download_hashes_and_logs_progress(served, tmp_path, caplog):
    target = tmp_path / "out" / "m.ckpt"
    with caplog.at_level(logging.INFO):
        digest = download(f"{served.url}/model.pth", target, model="m", log=logging.getLogger("t"))
    assert digest == DIGEST and target.read_bytes() == PAYLOAD
    assert _leftovers(target.parent) == ["m.ckpt"]
    progress = [
        r.getMessage()
        for r in caplog.records
        if "B/s" in r.getMessage() or "100%" in r.getMessage()
    ]
    assert progress and "1.22M/1.22M" in progress[-1]  # tqdm's final line, in the log


def test_pinned_sha256_matches(served, tmp_path):
    target = tmp_path / "m.ckpt"
    assert download(f"{served.url}/model.pth", target, model="m", sha256=DIGEST.upper()) == DIGEST


def test_sha256_mismatch_fails_after_retries_and_leaves_no_file(served, tmp_path):
    target = tmp_path / "out" / "m.ckpt"
    delays = []
    with pytest.raises(
        DownloadError,
        match=r"model 'm': cannot download .* after 3 attempt\(s\): "
        r"sha256 mismatch: got " + DIGEST + ", the table pins 0{64}",
    ):
        download(
            f"{served.url}/model.pth",
            target,
            model="m",
            sha256="0" * 64,
            retries=2,
            backoff=1.5,
            sleep=delays.append,
        )
    assert delays == [1.5, 3.0]  # exponential back-off
    assert served.hits == ["/model.pth"] * 3
    assert _leftovers(target.parent) == []


def test_unreachable_url_names_the_model(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/missing.pth"
    with pytest.raises(
        DownloadError,
        match=r"model 'far_away': cannot download http://127\.0\.0\.1:\d+"
        r"/missing\.pth after 2 attempt\(s\): ConnectionError",
    ):
        download(
            url, tmp_path / "x.ckpt", model="far_away", retries=1, backoff=0, sleep=lambda s: None
        )
    assert not (tmp_path / "x.ckpt").exists()


def test_http_404_is_not_retried(served, tmp_path):
    with pytest.raises(DownloadError, match=r"model 'm': cannot download .*: HTTP 404"):
        download(
            f"{served.url}/nope.pth",
            tmp_path / "x.ckpt",
            model="m",
            retries=3,
            sleep=lambda s: None,
        )
    assert served.hits == ["/nope.pth"]


def test_truncated_body_is_retried_then_fails(served, tmp_path):
    with pytest.raises(
        DownloadError,
        match=r"after 2 attempt\(s\).*(truncated|ChunkedEncodingError|"
        r"ConnectionError|IncompleteRead)",
    ):
        download(
            f"{served.url}/truncated",
            tmp_path / "x.ckpt",
            model="m",
            retries=1,
            sleep=lambda s: None,
        )
    assert served.hits == ["/truncated"] * 2
    assert _leftovers(tmp_path) == ["www"]


def test_file_url_and_local_path(tmp_path):
    source = tmp_path / "my weights.pth"
    source.write_bytes(PAYLOAD)
    assert download(source.as_uri(), tmp_path / "a.ckpt", model="a") == DIGEST
    assert download(str(source), tmp_path / "b.ckpt", model="b") == DIGEST
    assert (tmp_path / "b.ckpt").read_bytes() == PAYLOAD
    with pytest.raises(
        DownloadError,
        match=r"model 'c': cannot download .*: local checkpoint "
        r"'.*nothing.pth' does not exist",
    ):
        download(str(tmp_path / "nothing.pth"), tmp_path / "c.ckpt", model="c")


def test_google_drive_goes_through_gdown_with_tls_verification(tmp_path, monkeypatch):
    import gdown

    calls = []

    def fake_download(**kwargs):  # stands in for the network; gdown's own confirm-page logic
        calls.append(kwargs)
        kwargs["output"].write(PAYLOAD)
        kwargs["progress"](len(PAYLOAD), len(PAYLOAD))
        return kwargs["output"]

    monkeypatch.setattr(gdown, "download", fake_download)
    url = "https://drive.google.com/uc?id=1TLZHDbV-qQlLjkR8P0LZaxzwEE6O_7g1"
    assert download(url, tmp_path / "g.ckpt", model="g") == DIGEST
    assert calls[0]["id"] == "1TLZHDbV-qQlLjkR8P0LZaxzwEE6O_7g1" and calls[0]["verify"] is True


@pytest.mark.parametrize(
    ("url", "kind", "file_id"),
    [
        ("https://drive.google.com/uc?id=abc_D-1", "gdrive", "abc_D-1"),
        ("https://drive.google.com/file/d/abc_D-1/view?usp=sharing", "gdrive", "abc_D-1"),
        ("https://dl.fbaipublicfiles.com/moco/x.pth.tar", "http", None),
        ("http://127.0.0.1:8000/x", "http", None),
        ("file:///data/x.pth", "file", None),
        ("weights/x.pth", "local", None),
    ],
)
def test_url_kinds(url, kind, file_id):
    assert url_kind(url) == kind and gdrive_id(url) == file_id


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x.pth", "unsupported URL scheme 'ftp'"),
        ("https://drive.google.com/drive/folders", "Google Drive link without a file id"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(ValueError, match=message):
        url_kind(url)


def test_pin_message_gives_the_row_to_paste(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text(
        "key\tformat\turl\tsha256\tnote\nx\tmae\thttp://h/x\t\tsome note\ny\tmae\thttp://h/y\t\t\n"
    )
    text = pin_message(table, "x", DIGEST)
    assert text.endswith(f"The row to pin:\nx\tmae\thttp://h/x\t{DIGEST}\tsome note")
    assert f"column 'sha256' of row 'x' in {table} to {DIGEST}" in text
