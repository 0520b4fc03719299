"""workflow_scripts.kept_figures: the copy a figure job keeps, put back only where the figure
is missing, dated 1970 so that the next run draws it again."""

import os

from workflow_scripts import kept_figures


def test_keep_and_restore(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    png, pdf = "results/figures/f1.png", "results/figures/f1.pdf"
    os.makedirs("results/figures")
    for path, data in ((png, b"png v1"), (pdf, b"pdf v1")):
        with open(path, "wb") as fh:
            fh.write(data)
    kept_figures.keep(png, pdf)
    assert (tmp_path / kept_figures.FOLDER / png).read_bytes() == b"png v1"
    # the next job of f1 failed: Snakemake deleted both; another figure was never drawn
    os.remove(png)
    os.remove(pdf)
    restored = kept_figures.restore([png, pdf, "results/figures/f2.png"])
    assert restored == [png, pdf]
    assert (
        open(png, "rb").read() == b"png v1"
        and os.stat(png).st_mtime == kept_figures.RESTORED_MTIME == 1
    )
    assert not os.path.exists("results/figures/f2.png")
    # a figure that is there is never replaced by the kept copy
    with open(png, "wb") as fh:
        fh.write(b"png v2")
    assert kept_figures.restore([png]) == []
    assert open(png, "rb").read() == b"png v2"
    # a newer drawing replaces the kept copy
    kept_figures.keep(png)
    assert (tmp_path / kept_figures.FOLDER / png).read_bytes() == b"png v2"
