"""Tests for workflow_scripts.figures: files written atomically, readable, figures closed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from workflow_scripts import figures as F
from workflow_scripts.correlations import correlation_table

OOD = [("v2", "same_label_shift"), ("sketch", "same_label_shift"), ("rend", "same_label_shift"),
       ("cifar", "new_label"), ("flowers", "new_label"), ("dtd", "new_label")]


def synthetic_accuracy(n_models=12, seed=0, finetune=True):
    """12 models, 1 + 6 data sets, knn/linear x raw/bn (+ fine-tuning on the id set only)."""
    rng = np.random.default_rng(seed)
    rows = []
    datasets = [("inet", "id", "in_domain")] + [(d, "ood", g) for d, g in OOD]
    for m in range(n_models):
        backbone = "vit" if m % 2 else "resnet"
        paradigm = ("discriminative", "generative", "baseline")[m % 3]
        quality = rng.normal()
        for ds, domain, group in datasets:
            pas = [(p, a) for p in ("knn", "linear") for a in ("raw", "bn")]
            if finetune and domain == "id":
                pas.append(("finetune", "raw"))
            for protocol, arm in pas:
                top1 = 60 + 8 * quality + rng.normal(0, 3) + 2 * (arm == "bn")
                rows.append({
                    "model": f"model_{m:02d}", "method": f"meth{m}", "backbone": backbone,
                    "paradigm": paradigm, "dataset": ds, "domain": domain, "shift_group": group,
                    "protocol": protocol, "arm": arm, "top1": top1, "top5": np.nan,
                    "run": "synthetic",
                })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def acc():
    return synthetic_accuracy()


@pytest.fixture(scope="module")
def corr(acc):
    return correlation_table(acc, n_resamples=50, seed=0, min_subset=4)


def _call(name, acc, corr, opts, png, pdf):
    fn = getattr(F, name)
    if name in ("plot_f1", "plot_f2"):
        fn(corr, opts, png, pdf)
    elif name == "plot_f3":
        fn(acc, opts, png, pdf)
    else:
        fn(acc, corr, opts, png, pdf)


def _check_outputs(directory, png, pdf):
    import matplotlib.image as mpimg

    assert sorted(p.name for p in directory.iterdir()) == sorted([png.name, pdf.name])
    assert pdf.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-"
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[2] == 4  # RGBA
    assert image.shape[0] > 200 and image.shape[1] > 200
    # not a blank canvas
    assert image[..., :3].std() > 0.05
    return image


PLOTS = ["plot_f1", "plot_f2", "plot_f3", "plot_f4"]


@pytest.mark.parametrize("name", PLOTS)
def test_writes_png_and_pdf(tmp_path, acc, corr, name):
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    _call(name, acc, corr, {}, png, pdf)
    _check_outputs(tmp_path, png, pdf)
    assert set(plt.get_fignums()) == before  # figure closed
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


@pytest.mark.parametrize("name", PLOTS)
def test_dpi_scales_png(tmp_path, acc, corr, name):
    sizes = []
    for dpi in (40, 80):
        out = tmp_path / str(dpi)
        out.mkdir()
        png, pdf = out / "fig.png", out / "fig.pdf"
        _call(name, acc, corr, {"dpi": dpi, "annotate": False}, png, pdf)
        sizes.append(np.array(_check_outputs(out, png, pdf).shape[:2], dtype=float))
    ratio = sizes[1] / sizes[0]
    np.testing.assert_allclose(ratio, [2.0, 2.0], rtol=0.03)


def test_options(tmp_path, acc, corr):
    import matplotlib.image as mpimg

    heights = {}
    for label, opts in {"all": {}, "bn": {"y_arms": ["bn"]},
                        "knn_bn": {"y_protocols": ["knn"], "y_arms": ["bn"]}}.items():
        png = tmp_path / f"f2_{label}.png"
        F.plot_f2(corr, {**opts, "dpi": 50}, png, tmp_path / f"f2_{label}.pdf")
        heights[label] = mpimg.imread(png).shape[0]
    # 4 panels > 2 panels > 1 panel
    assert heights["all"] > heights["bn"] > heights["knn_bn"]
    for name, opts in [
        ("plot_f1", {"method": "spearman", "subset": "backbone=vit", "cmap": "mako",
                     "font_scale": 1.3, "title": "custom"}),
        ("plot_f3", {"x_protocol": "knn", "x_arm": "raw", "y_protocol": "linear",
                     "y_arm": "raw", "col_wrap": 2, "label_points": True}),
        ("plot_f4", {"include_ood_mean": False, "method": "pearson",
                     "subsets": ["all", "backbone=vit", "backbone=resnet"]}),
    ]:
        out = tmp_path / name
        out.mkdir()
        _call(name, acc, corr, opts, out / "a.png", out / "a.pdf")
        _check_outputs(out, out / "a.png", out / "a.pdf")


def test_errors_leave_no_files(tmp_path, acc, corr):
    png, pdf = tmp_path / "x.png", tmp_path / "x.pdf"
    with pytest.raises(ValueError, match="nope"):
        F.plot_f3(acc, {"x_protocol": "nope"}, png, pdf)
    with pytest.raises(ValueError):
        F.plot_f1(corr, {"method": "tau"}, png, pdf)
    with pytest.raises(ValueError):
        F.plot_f2(corr, {"y_protocols": ["finetune"]}, png, pdf)
    with pytest.raises(ValueError, match="subset"):
        F.plot_f1(corr, {"subset": "backbone=cnn"}, png, pdf)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_old_file_and_no_temp(tmp_path, acc, corr, monkeypatch):
    import matplotlib.figure

    png, pdf = tmp_path / "f1.png", tmp_path / "f1.pdf"
    png.write_bytes(b"old")
    original = matplotlib.figure.Figure.savefig

    def failing(self, fname, *args, **kwargs):
        if str(fname).endswith(".pdf"):
            original(self, fname, *args, **kwargs)  # writes part of the output...
            raise OSError("disk full")
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing)
    with pytest.raises(OSError):
        F.plot_f1(corr, {}, png, pdf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1.png"]  # the PNG was finished
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_f1_matrix_uses_pair_rows(tmp_path, corr):
    """Rows of other kinds (OOD) must not leak into the in-domain matrix: a table with only the
    OOD rows has no pairs."""
    with pytest.raises(ValueError, match="pairs"):
        F.plot_f1(corr[corr.x_dataset != corr.y_dataset], {}, tmp_path / "a.png",
                  tmp_path / "a.pdf")


def test_labels():
    assert F.protocol_arm_label("knn", "raw") == "kNN"
    assert F.protocol_arm_label("linear", "bn") == "linear (BN)"
    assert F.protocol_arm_label("fewshot10", "raw") == "few-shot 10%"
    assert F.protocol_arm_label("fewshot1", "bn") == "few-shot 1% (BN)"
    assert F.protocol_arm_label("mystery", "other") == "mystery (other)"
    assert F.dataset_label("mean_ood") == "mean OOD"
    assert F.dataset_label("group:new_label") == "mean: new label"
    assert [F.stars(p) for p in (0.2, 0.04, 0.009, 0.0009, float("nan"))] == [
        "", "*", "**", "***", ""]


def test_import_has_no_side_effects():
    code = (
        "import sys, workflow_scripts.figures, workflow_scripts.correlations; "
        "print('matplotlib.pyplot' in sys.modules, 'seaborn' in sys.modules, "
        "'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert out.stdout.split() == ["False", "False", "False"]
