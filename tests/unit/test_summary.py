"""workflow_scripts.summary: the run summary copies its numbers from the accuracy and
correlation tables (checked cell by cell on tables written here), lists the figures drawn and
skipped and where the files are, as markdown and as an HTML view."""

import pandas as pd

from workflow_scripts import summary
from workflow_scripts.correlations import COLUMNS


def _accuracy():
    rows = []
    values = {
        ("a", "knn", "raw"): 50.25,
        ("a", "linear", "bn"): 61.0,
        ("b", "knn", "raw"): 70.0,
        ("b", "linear", "bn"): 55.55,
        ("c", "knn", "raw"): 10.0,
    }  # c has no linear row: an empty cell
    for (model, protocol, arm), top1 in values.items():
        rows.append(
            dict(model=model, dataset="shapes", domain="id", protocol=protocol, arm=arm, top1=top1)
        )
        rows.append(
            dict(model=model, dataset="ood1", domain="ood", protocol=protocol, arm=arm, top1=1.0)
        )
    return pd.DataFrame(rows)


def _correlations():
    base = dict(subset="all", method="kendall", n=3, p_value=0.0412, ci_low=-0.1, ci_high=0.9)
    rows = [
        dict(
            base,
            x_protocol="knn",
            x_arm="raw",
            x_dataset="shapes",
            y_protocol="linear",
            y_arm="bn",
            y_dataset="shapes",
            value=0.333333,
            beats_baseline=True,
        ),
        dict(
            base,
            x_protocol="knn",
            x_arm="raw",
            x_dataset="shapes",
            y_protocol="knn",
            y_arm="raw",
            y_dataset="mean_ood",
            value=-1.0,
            beats_baseline=False,
        ),
        # not a headline: another method, another subset
        dict(
            base,
            x_protocol="knn",
            x_arm="raw",
            x_dataset="shapes",
            y_protocol="linear",
            y_arm="bn",
            y_dataset="shapes",
            value=0.9,
            method="spearman",
        ),
    ]
    frame = pd.DataFrame(rows)
    return frame[[*COLUMNS, "beats_baseline"]]


def test_numbers_are_the_tables_and_the_layout_is_readable(tmp_path):
    acc, corr = tmp_path / "acc.csv", tmp_path / "corr.csv"
    _accuracy().to_csv(acc, index=False)
    _correlations().to_csv(corr, index=False)
    out = {"md": tmp_path / "s.md", "html": tmp_path / "s.html"}
    text = summary.make(
        {
            "id_dataset": "shapes",
            "drawn": ["f1_id_protocols"],
            "skipped": {"f8_published": "no published numbers"},
            "files": summary.files(
                ["results/tables/correlations.csv", "results/figures/f1_id_protocols.png"]
            ),
        },
        {"accuracy": str(acc), "correlations": str(corr)},
        out,
    )
    assert out["md"].read_text() == text
    lines = text.splitlines()
    table = lines[lines.index("| model | kNN | linear (BN) |") :]
    assert table[2:5] == [  # best first by the first column (kNN)
        "| b | 70.0 | 55.5 |",
        "| a | 50.2 | 61.0 |",
        "| c | 10.0 |  |",
    ]
    assert "## In-domain top-1 (%) on shapes, 3 models" in text
    assert "| kNN vs linear (BN) | 3 | 0.33 | [-0.10, 0.90] | 0.0412 | yes |" in text
    assert "| kNN in-domain vs OOD mean | 3 | -1.00 | [-0.10, 0.90] | 0.0412 | no |" in text
    assert text.count("| kNN vs linear (BN) |") == 1  # the Spearman row is not a headline
    assert "- f1_id_protocols: `results/figures/f1_id_protocols.png`" in text
    assert "- f8_published: not drawn (no published numbers)" in text
    assert "- `results/tables/correlations.csv`: every rank correlation" in text
    # only what the run writes is listed: no proxies table, no accuracy table here
    where = text[text.index("## Where the files are") :]
    assert [line.split("`")[1] for line in where.splitlines() if line.startswith("- ")] == [
        "results/summary.md",
        "results/tables/correlations.csv",
        "results/figures/",
    ]
    page = out["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<td>70.0</td>" in page
    assert "f8_published: not drawn (no published numbers)" in page


def test_files_follow_the_targets():
    """The analysis-only run lists its merged table, not this run's; a run without figures
    no figures' folder; the order is FILES' (the one a reader needs)."""
    targets = [
        "results/tables/accuracy_merged.csv",
        "results/tables/correlations.csv",
        "results/tables/accuracy.html",
        "results/summary.md",
        "results/summary.html",
    ]
    assert [path for path, _ in summary.files(targets)] == [
        "results/summary.md",
        "results/tables/accuracy_merged.csv",
        "results/tables/correlations.csv",
        "results/tables/accuracy.html",
    ]
    everything = [path for path, _ in summary.FILES if not path.endswith("/")] + [
        "results/figures/f1_id_protocols.pdf"
    ]
    assert summary.files(everything) == [list(row) for row in summary.FILES]
