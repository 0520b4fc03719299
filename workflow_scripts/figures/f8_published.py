"""F8: this run's in-domain linear accuracy against the published numbers (rule
f8_published)."""

from __future__ import annotations

import pandas as pd

from workflow_scripts.correlations import correlate
from workflow_scripts.figures.common import options, pyplot, save, stars, style


def f8_data(models: pd.DataFrame) -> dict:
    """The points of F8 from T1 (``published_linear``, ``measured_linear``): the models with
    both, and Kendall's tau and Spearman's rho over them (:func:`correlate`, scipy)."""
    missing = [c for c in ("key", "published_linear", "measured_linear") if c not in models]
    if missing:
        raise ValueError(
            f"the models table lacks column(s) {missing} (T1 with published "
            "numbers and an accuracy table)"
        )
    points = models[["key", "backbone", "published_linear", "measured_linear"]].copy()
    for column in ("published_linear", "measured_linear"):
        points[column] = pd.to_numeric(points[column], errors="coerce")
    points = points.dropna(subset=["published_linear", "measured_linear"]).reset_index(drop=True)
    stats = correlate(points["published_linear"], points["measured_linear"])
    return {"points": points, "n": len(points), **stats}


def plot(models: pd.DataFrame, opts: dict | None, png, pdf) -> dict:
    """Scatter of this run's in-domain linear (BN) top-1 (y) against the published ImageNet
    linear top-1 (x) per model, colour = backbone, y = x dashed; Kendall's tau and Spearman's
    rho with p in the title. Option ``label_points`` (True). Returns :func:`f8_data`."""
    o = options(opts, "f8")
    data = f8_data(models)
    if data["n"] == 0:
        raise ValueError("no model has both a published and a measured linear accuracy")
    points = data["points"]
    plt, sns = pyplot()
    with style(sns, o):
        fig, ax = plt.subplots(figsize=(5.6, 5.0))
        try:
            sns.scatterplot(
                data=points, x="published_linear", y="measured_linear", hue="backbone", ax=ax, s=45
            )
            low = float(min(points["published_linear"].min(), points["measured_linear"].min()))
            high = float(max(points["published_linear"].max(), points["measured_linear"].max()))
            ax.plot([low, high], [low, high], ls="--", color="0.5", lw=1)
            if o["label_points"]:
                for row in points.itertuples(index=False):
                    ax.annotate(
                        row.key,
                        (row.published_linear, row.measured_linear),
                        fontsize=7 * o["font_scale"],
                        xytext=(3, 2),
                        textcoords="offset points",
                    )
            ax.set_xlabel("published ImageNet linear top-1 (%)")
            ax.set_ylabel("this run: in-domain linear (BN) top-1 (%)")
            tau, p_tau = data["kendall"]
            rho, p_rho = data["spearman"]
            ax.set_title(
                o["title"]
                or f"this run vs published, n = {data['n']}\n"
                f"Kendall τ = {tau:.2f}{stars(p_tau)}, Spearman ρ = {rho:.2f}"
                f"{stars(p_rho)}",
                fontsize=10 * o["font_scale"],
            )
            save(fig, png, pdf, o["dpi"])
        finally:
            plt.close(fig)
    return data
