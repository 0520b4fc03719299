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


def test_a_complete_download_with_the_wrong_sha256_is_fetched_once(served, tmp_path):
    """Issue 28: the whole file arrives (its announced Content-Length) but hashes to another
    value than the pin. Another download brings the same bytes, so none is made (with the
    default retries=3 this was 4 GETs); the error names model, URL and both digests."""
    target = tmp_path / "out" / "m.ckpt"
    url = f"{served.url}/model.pth"
    delays = []
    with pytest.raises(DownloadError) as error:
        download(url, target, model="m", sha256="0" * 64, backoff=1.5, sleep=delays.append)
    assert served.hits == ["/model.pth"] and delays == []
    text = str(error.value)
    assert text.startswith(f"model 'm': cannot download {url}: sha256 mismatch: got {DIGEST}")
    assert "the table pins " + "0" * 64 in text and "permanent" in text
    assert _leftovers(target.parent) == []


def _unsized(bodies, hits):
    """A request handler that answers each GET with the next of ``bodies`` and no
    Content-Length (HTTP/1.0: the body ends when the connection closes)."""
    from http.server import BaseHTTPRequestHandler

    bodies = iter(bodies)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's naming
            hits.append(self.path)
            body = next(bodies)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def test_a_mismatch_of_unknown_length_is_confirmed_by_one_more_download(tmp_path):
    """Without a Content-Length the transfer cannot be known complete: one more download, and
    the same wrong digest again makes the mismatch permanent (was: retries + 1 downloads)."""
    hits, delays = [], []
    with LoopbackServer(handler=_unsized([PAYLOAD] * 4, hits)) as server:
        with pytest.raises(DownloadError) as error:
            download(
                f"{server.url}/m.pth",
                tmp_path / "m.ckpt",
                model="m",
                sha256="0" * 64,
                retries=3,
                backoff=1.5,
                sleep=delays.append,
            )
    assert hits == ["/m.pth"] * 2 and delays == [1.5]
    text = str(error.value)
    assert f"model 'm': cannot download {server.url}/m.pth" in text and f"got {DIGEST}" in text
    assert "0" * 64 in text and "the same digest twice" in text
    assert _leftovers(tmp_path) == []


def test_a_mismatch_that_changes_is_retried_with_back_off(tmp_path):
    """Bytes that differ on every try (a corrupting transfer) are retried; the first good
    copy ends it, and a run of different wrong ones fails after the retries."""
    hits = []
    with LoopbackServer(handler=_unsized([b"corrupt", PAYLOAD], hits)) as server:
        url = f"{server.url}/m.pth"
        assert download(url, tmp_path / "m.ckpt", model="m", sha256=DIGEST, sleep=lambda s: 0)
    assert hits == ["/m.pth"] * 2
    hits.clear()
    delays = []
    with LoopbackServer(handler=_unsized([b"a", b"b", b"c"], hits)) as server:
        with pytest.raises(
            DownloadError,
            match=r"model 'm': cannot download .* after 3 attempt\(s\): "
            r"sha256 mismatch: got [0-9a-f]{64}, the table pins 0{64}",
        ):
            download(
                f"{server.url}/m.pth",
                tmp_path / "x.ckpt",
                model="m",
                sha256="0" * 64,
                retries=2,
                backoff=1.5,
                sleep=delays.append,
            )
    assert hits == ["/m.pth"] * 3 and delays == [1.5, 3.0]  # exponential back-off
    assert not (tmp_path / "x.ckpt").exists()


def test_a_local_file_with_the_wrong_sha256_is_read_once(tmp_path):
    source = tmp_path / "w.pth"
    source.write_bytes(PAYLOAD)
    delays = []
    with pytest.raises(DownloadError, match=f"model 'l': cannot download {source}: .*got {DIGEST}"):
        download(str(source), tmp_path / "l.ckpt", model="l", sha256="0" * 64, sleep=delays.append)
    assert delays == [] and not (tmp_path / "l.ckpt").exists()


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
    # the same wrong bytes from Drive: one confirming download, then a permanent error
    calls.clear()
    with pytest.raises(DownloadError, match="the same digest twice"):
        download(url, tmp_path / "h.ckpt", model="h", sha256="0" * 64, sleep=lambda s: None)
    assert len(calls) == 2


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
