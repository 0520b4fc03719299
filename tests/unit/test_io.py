"""Atomic writers: file mode from the umask, stale temporaries cleaned, deterministic bytes."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, cwd) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_mode_of_a_new_file(tmp_path, umask):
    """The oracle: a file created with open() by the same process under the same umask."""
    out = _python(
        f"import os\nos.umask({umask})\n"
        "from workflow_scripts.io import save_json, save_npy\nimport numpy as np\n"
        "save_json('a.json', {'x': 1}); save_npy('b.npy', np.zeros(2))\n"
        "open('plain.txt', 'w').close()\n"
        "print(' '.join(oct(os.stat(p).st_mode & 0o777) for p in ('a.json', 'b.npy', 'plain.txt')))",
        tmp_path,
    )
    a, b, plain = out.split()
    assert a == b == plain == oct(0o666 & ~umask)


def test_temporaries_of_a_killed_writer_are_removed_on_the_next_write(tmp_path):
    from workflow_scripts.io import save_csv

    import pandas as pd

    target = tmp_path / "table.csv"
    stale = []
    for _ in range(2):  # what mkstemp left for a writer that was killed
        fd, name = tempfile.mkstemp(prefix=".table.csv.", suffix=".csv", dir=tmp_path)
        os.close(fd)
        stale.append(Path(name))
    others = [
        tmp_path / ".other.csv.abcdefgh.csv",
        tmp_path / "table.csv.bak",
        tmp_path / ".table.csv.abcdefgh.json",
    ]
    for path in others:
        path.write_text("keep")
    save_csv(target, pd.DataFrame({"a": [1]}))
    assert target.read_text() == "a\n1\n"
    assert not any(path.exists() for path in stale)
    assert all(path.read_text() == "keep" for path in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["table.csv", *(p.name for p in others)]
    )


def test_safetensors_bytes_are_the_same_in_every_process(tmp_path):
    code = (
        "import sys, torch\nfrom workflow_scripts.io import save_safetensors\n"
        "state = {'w': torch.arange(6.0).view(2, 3), 'b': torch.ones(2, dtype=torch.int64)}\n"
        "meta = {'model': 'm', 'arch': 'a', 'embedding': 'cls', 'format': 'f', 'sha': 'x'}\n"
        "save_safetensors(sys.argv[1] if len(sys.argv) > 1 else 'w.safetensors', state, meta)\n"
    )
    blobs = []
    for index in range(3):  # separate processes: hash-map order differs between them
        _python(code.replace("'w.safetensors'", f"'w{index}.safetensors'"), tmp_path)
        blobs.append((tmp_path / f"w{index}.safetensors").read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]

    from safetensors.torch import load_file

    from workflow_scripts.io import safetensors_metadata

    assert safetensors_metadata(tmp_path / "w0.safetensors") == {
        "model": "m",
        "arch": "a",
        "embedding": "cls",
        "format": "f",
        "sha": "x",
    }
    assert load_file(str(tmp_path / "w0.safetensors"))["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_truncated_npy_names_file_and_split(tmp_path):
    import numpy as np

    from workflow_scripts.feature_cache import load_labelled
    from workflow_scripts.io import DataFileError, save_npy

    save_npy(tmp_path / "f.npy", np.ones((10, 4), dtype=np.float32))
    save_npy(tmp_path / "y.npy", np.arange(10))
    x, y = load_labelled(tmp_path / "f.npy", tmp_path / "y.npy", "m", "d", "train")
    assert x.shape == (10, 4) and y.tolist() == list(range(10))
    data = (tmp_path / "f.npy").read_bytes()
    (tmp_path / "f.npy").write_bytes(data[: len(data) - 17])  # a copy cut short
    with pytest.raises(
        DataFileError,
        match=r"cannot read the features of model 'm', data set "
        r"'d', split 'train' from '.*f.npy'",
    ):
        load_labelled(tmp_path / "f.npy", tmp_path / "y.npy", "m", "d", "train")


def test_labels_that_do_not_match_the_features_or_images_are_named(tmp_path):
    import numpy as np

    from workflow_scripts.feature_cache import load_labelled
    from workflow_scripts.features import check_split_sizes
    from workflow_scripts.io import save_npy
    from workflow_scripts.sources import open_split

    save_npy(tmp_path / "f.npy", np.ones((10, 4), dtype=np.float32))
    save_npy(tmp_path / "y.npy", np.arange(9))
    with pytest.raises(
        ValueError,
        match=r"model 'm', data set 'd', split 'test': the features "
        r"'.*f.npy' have 10 rows but the labels '.*y.npy' have "
        r"shape \(9,\)",
    ):
        load_labelled(tmp_path / "f.npy", tmp_path / "y.npy", "m", "d", "test")
    save_npy(tmp_path / "images.npy", np.zeros((10, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(
        ValueError,
        match=r"data set 'd', split 'train': '.*images.npy' lists 10 "
        r"images but the labels '.*y.npy' have shape \(9,\)",
    ):
        check_split_sizes(
            [("d", "train", "synthetic", tmp_path / "images.npy", tmp_path / "y.npy")]
        )
    (tmp_path / "files.txt").write_text("a.jpg\nb.jpg\n")
    with pytest.raises(ValueError, match=r"'.*files.txt' lists 2 images"):
        check_split_sizes([("r", "test", "imagenet", tmp_path / "files.txt", tmp_path / "y.npy")])
    spec = {"mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(
        ValueError,
        match=r"data set 'd': the images '.*images.npy' hold 10 images "
        r"but the labels '.*y.npy' 9",
    ):
        open_split(
            {"key": "d", "kind": "synthetic"},
            tmp_path / "images.npy",
            tmp_path / "y.npy",
            spec,
            tmp_path,
        )


def test_a_jobs_uncaught_error_reaches_its_log_with_the_traceback(tmp_path):
    code = (
        "from types import SimpleNamespace\nfrom workflow_scripts import runtime\n"
        "sm = SimpleNamespace(log=['job.log'], rule='demo', wildcards={}, threads=1)\n"
        "runtime.setup(sm)\n"
        "def deep():\n    raise ValueError('mask_ratio must be a number')\n"
        "deep()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 1
    log = (tmp_path / "job.log").read_text()
    assert "ERROR: ValueError: mask_ratio must be a number" in log
    assert "Traceback (most recent call last)" in log and "in deep" in log
    assert proc.stderr.count("ValueError: mask_ratio must be a number") >= 1
