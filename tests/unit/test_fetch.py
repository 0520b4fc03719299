"""workflow_scripts.fetch on archives written here in the real formats (tar, tar.gz, zip),
served over loopback HTTP by a server that honours Range requests and can cut a response short:
checksums, resuming a truncated download, a server that ignores ranges, the free-space check,
refused zip and tar entries, an interrupted unpack and an unpack that would overwrite."""

import hashlib
import io
import logging
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_layouts import RangeServer as _Server  # noqa: E402

from workflow_scripts import fetch  # noqa: E402
from workflow_scripts.fetch import FetchError  # noqa: E402

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # several CHUNKs, not a multiple of one


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_checksum_strings():
    assert fetch.parse_checksum("md5:" + "AB" * 16) == ("md5", "ab" * 16)
    assert fetch.parse_checksum("sha256:" + "0f" * 32) == ("sha256", "0f" * 32)
    for bad in ("md5:abc", "sha1:" + "0" * 40, "sha256:" + "g" * 64, "0" * 64):
        with pytest.raises(ValueError, match="is not md5"):
            fetch.parse_checksum(bad)


def test_download_verifies_md5_and_sha256(tmp_path):
    with _Server({"a.tar": PAYLOAD}) as server:
        for checksum in (_md5(PAYLOAD), _sha256(PAYLOAD)):
            target = tmp_path / checksum[:3] / "a.tar"
            fetch.download(f"{server.url}/a.tar", target, checksum, what="set a")
            assert target.read_bytes() == PAYLOAD
            assert sorted(p.name for p in target.parent.iterdir()) == ["a.tar"]
        # a file that is there with its checksum is not fetched again
        before = len(server.requests)
        fetch.download(f"{server.url}/a.tar", tmp_path / "md5/a.tar", _md5(PAYLOAD), what="set a")
        assert len(server.requests) == before


def test_a_wrong_checksum_names_both_and_leaves_nothing(tmp_path):
    wrong = _md5(b"something else")
    with _Server({"a.tar": PAYLOAD}) as server:
        with pytest.raises(FetchError) as error:
            fetch.download(f"{server.url}/a.tar", tmp_path / "a.tar", wrong, what="data set 'cub'")
    message = str(error.value)
    assert "data set 'cub'" in message and f"{server.url}/a.tar" in message
    assert hashlib.md5(PAYLOAD).hexdigest() in message and wrong[4:] in message
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_resumes_where_it_stopped(tmp_path, caplog):
    target = tmp_path / "a.tar"
    with _Server({"a.tar": PAYLOAD}) as server:
        server.cut["a.tar"] = 1_500_000
        with pytest.raises(FetchError, match="the next try resumes"):
            fetch.download(f"{server.url}/a.tar", target, _md5(PAYLOAD), what="a")
        part = tmp_path / "a.tar.part"
        assert not target.exists() and 0 < part.stat().st_size <= 1_500_000
        kept = part.stat().st_size
        fetch.download(f"{server.url}/a.tar", target, _md5(PAYLOAD), what="a")
        assert server.requests[-1] == ("a.tar", f"bytes={kept}-")
    assert target.read_bytes() == PAYLOAD and not part.exists()


def test_a_truncated_download_is_resumed_within_the_call(tmp_path):
    """``retries``: a short body is resumed (a Range request) after the back-off in the same
    call, not only by the next job."""
    target, delays = tmp_path / "a.tar", []
    with _Server({"a.tar": PAYLOAD}) as server:
        server.cut["a.tar"] = 1_500_000
        fetch.download(
            f"{server.url}/a.tar",
            target,
            _md5(PAYLOAD),
            what="a",
            retries=2,
            backoff=1.5,
            sleep=delays.append,
        )
        kept = server.requests[1][1]
    assert target.read_bytes() == PAYLOAD and delays == [1.5]
    assert [name for name, _ in server.requests] == ["a.tar"] * 2 and kept.startswith("bytes=")
    assert 0 < int(kept.removeprefix("bytes=").rstrip("-")) <= 1_500_000


def test_a_complete_download_with_the_wrong_checksum_is_fetched_once(tmp_path):
    """Issue 28: the whole file (its announced Content-Length) with another checksum than the
    pin is permanent: no retry downloads it again."""
    wrong, delays = _md5(b"something else"), []
    with _Server({"a.tar": PAYLOAD}) as server:
        with pytest.raises(FetchError, match="permanent") as error:
            fetch.download(
                f"{server.url}/a.tar",
                tmp_path / "a.tar",
                wrong,
                what="data set 'cub'",
                retries=3,
                sleep=delays.append,
            )
        assert server.requests == [("a.tar", None)] and delays == []
    message = str(error.value)
    assert "data set 'cub'" in message and f"{server.url}/a.tar" in message
    assert hashlib.md5(PAYLOAD).hexdigest() in message and wrong[4:] in message
    assert list(tmp_path.iterdir()) == []


def test_a_stale_part_file_is_replaced_by_one_fresh_download(tmp_path):
    """A mismatch of resumed bytes (the part file of another version of the file) is confirmed
    by one download from the start: the right file is kept; a wrong one again is permanent."""
    (tmp_path / "a.tar.part").write_bytes(b"x" * 1000)
    with _Server({"a.tar": PAYLOAD}) as server:
        fetch.download(
            f"{server.url}/a.tar", tmp_path / "a.tar", _md5(PAYLOAD), what="a", retries=1
        )
        assert server.requests == [("a.tar", "bytes=1000-"), ("a.tar", None)]
        assert (tmp_path / "a.tar").read_bytes() == PAYLOAD
        server.requests.clear()
        (tmp_path / "b.tar.part").write_bytes(PAYLOAD[:1000])
        server.files["b.tar"] = PAYLOAD
        wrong = _md5(b"other")
        with pytest.raises(FetchError, match="permanent") as error:
            fetch.download(
                f"{server.url}/b.tar",
                tmp_path / "b.tar",
                wrong,
                what="b",
                retries=3,
                sleep=lambda s: None,
            )
        assert server.requests == [("b.tar", "bytes=1000-"), ("b.tar", None)]
    assert hashlib.md5(PAYLOAD).hexdigest() in str(error.value) and wrong[4:] in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def test_a_mismatch_of_unknown_length_is_confirmed_once(tmp_path):
    """No Content-Length (the body ends with the connection): one more download; the same
    wrong checksum again is permanent."""
    from http.server import BaseHTTPRequestHandler

    from checkpoint_layouts import LoopbackServer

    hits = []

    class Unsized(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's naming
            hits.append(self.headers.get("Range"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)

    wrong = _sha256(b"other")
    with LoopbackServer(handler=Unsized) as server:
        with pytest.raises(FetchError, match="the same checksum twice") as error:
            fetch.download(
                f"{server.url}/a.zip",
                tmp_path / "a.zip",
                wrong,
                what="x",
                retries=3,
                sleep=lambda s: None,
            )
    assert hits == [None, None] and hashlib.sha256(PAYLOAD).hexdigest() in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_server_without_ranges_starts_over(tmp_path):
    part = tmp_path / "a.tar.part"
    part.write_bytes(b"x" * 1000)  # bytes that are not the file's: a resume would corrupt it
    with _Server({"a.tar": PAYLOAD}) as server:
        server.ranges = False
        fetch.download(f"{server.url}/a.tar", tmp_path / "a.tar", _md5(PAYLOAD), what="a")
    assert (tmp_path / "a.tar").read_bytes() == PAYLOAD


def test_a_complete_part_file_is_verified_not_fetched(tmp_path):
    (tmp_path / "a.tar.part").write_bytes(PAYLOAD)
    with _Server({"a.tar": PAYLOAD}) as server:
        fetch.download(f"{server.url}/a.tar", tmp_path / "a.tar", _md5(PAYLOAD), what="a")
        assert server.requests == [("a.tar", f"bytes={len(PAYLOAD)}-")]  # answered 416
    assert (tmp_path / "a.tar").read_bytes() == PAYLOAD


def test_http_errors_and_refused_connections_name_the_url(tmp_path):
    with _Server({}) as server:
        with pytest.raises(FetchError, match=r"a: http://127\.0\.0\.1:\d+/gone\.zip failed"):
            fetch.download(f"{server.url}/gone.zip", tmp_path / "g.zip", _md5(b""), what="a")
        # an HTTP 404 is permanent: not retried
        with pytest.raises(FetchError, match="HTTPError.*not retried"):
            fetch.download(
                f"{server.url}/gone.zip", tmp_path / "g.zip", _md5(b""), what="a", retries=3
            )
        assert server.requests == [("gone.zip", None)] * 2


def test_free_space_check_says_what_is_missing(tmp_path):
    fetch.check_space(tmp_path / "not/yet/there", 1, "tiny")
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(
        FetchError, match=r"iNaturalist: needs .* GB under .* GB are free: .* GB missing"
    ):
        fetch.check_space(tmp_path, free + 10**12, "iNaturalist")


# ------------------------------------------------------------------------------------------
# unpacking


def _tar(path: Path, files: dict[str, bytes], mode="w:gz", extra=()) -> Path:
    with tarfile.open(path, mode) as handle:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            handle.addfile(info, io.BytesIO(data))
        for info in extra:
            handle.addfile(info)
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as handle:
        for name, data in files.items():
            handle.writestr(name, data)
    return path


FILES = {"CUB_200_2011/images.txt": b"1 a/1.jpg\n", "CUB_200_2011/images/a/1.jpg": b"jpeg"}


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_unpack_puts_the_tree_in_place(tmp_path, kind):
    if kind == "zip":
        archive = _zip(tmp_path / "a.zip", FILES)
    else:
        archive = _tar(tmp_path / f"a.{kind}", FILES, "w" if kind == "tar" else "w:gz")
    dest = tmp_path / "data"
    assert fetch.unpack(archive, dest, what="cub") == ["CUB_200_2011"]
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == ["CUB_200_2011"]  # no staging left
    with pytest.raises(FetchError, match="exists already"):
        fetch.unpack(archive, dest, what="cub")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_zip_entries_outside_the_destination_are_refused(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as handle:
        handle.writestr("ok/file.txt", b"fine")
        handle.writestr(name, b"evil")
    with pytest.raises(FetchError, match=r"zip entry '.*evil\.txt'.*refused"):
        fetch.unpack(tmp_path / "bad.zip", tmp_path / "data", what="domainnet")
    assert list((tmp_path / "data").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_tar_links_and_parent_paths_are_refused(tmp_path):
    link = tarfile.TarInfo("root/escape")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = _tar(tmp_path / "bad.tar", {"root/ok.txt": b"ok"}, extra=[link])
    with pytest.raises(FetchError, match="tar entry refused"):
        fetch.unpack(archive, tmp_path / "data", what="voc")
    archive = _tar(tmp_path / "bad2.tar", {"../up.txt": b"up"})
    with pytest.raises(FetchError, match="tar entry refused"):
        fetch.unpack(archive, tmp_path / "data2", what="voc")
    assert not (tmp_path / "up.txt").exists()
    assert list((tmp_path / "data").iterdir()) == list((tmp_path / "data2").iterdir()) == []


def test_an_interrupted_unpack_leaves_nothing_under_the_real_name(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "a.tar.gz", FILES)
    dest = tmp_path / "data"
    real = tarfile.TarFile.extractall

    def killed(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        raise KeyboardInterrupt  # the job killed after extracting, before moving into place

    monkeypatch.setattr(tarfile.TarFile, "extractall", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch.unpack(archive, dest, what="cub")
    assert not (dest / "CUB_200_2011").exists()
    monkeypatch.setattr(tarfile.TarFile, "extractall", real)
    (dest / ".unpacking-a.tar.gz").mkdir()  # as a SIGKILL would leave it
    assert fetch.unpack(archive, dest, what="cub") == ["CUB_200_2011"]
    assert sorted(p.name for p in dest.iterdir()) == ["CUB_200_2011"]


def test_neither_tar_nor_zip(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"not an archive")
    with pytest.raises(FetchError, match="neither a tar nor a zip"):
        fetch.unpack(tmp_path / "x.bin", tmp_path / "data", what="x")


def test_progress_goes_to_the_log(tmp_path, caplog):
    with _Server({"a.tar": PAYLOAD}) as server, caplog.at_level(logging.INFO):
        fetch.download(f"{server.url}/a.tar", tmp_path / "a.tar", _md5(PAYLOAD), what="set a")
    assert any("set a" in r.getMessage() and "B" in r.getMessage() for r in caplog.records)
