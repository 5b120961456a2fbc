"""The robustness probe's figure: cosine and probe-accuracy curves, model vs random-init."""

from __future__ import annotations

from pathlib import Path

from wensu.probes.common.figures import plt, save_figure

PANELS = (
    ("substitution", ("substitution",), "share of residues substituted"),
    ("X masking", ("x_masking",), "share of residues set to X"),
    ("truncation", ("truncation_N", "truncation_C"), "share of length removed"),
    ("concatenation", ("concatenation",), "proteins concatenated"),
)
STYLES = {"truncation_N": "-", "truncation_C": "--"}


def curves_png(path: Path, by_model: dict[str, dict[str, list[dict]]]) -> str:
    """Top row: cosine to clean embeddings; bottom row: SS3 probe accuracy (perturbed, and
    clean on the same residues dotted). Rate/fraction 0 is the clean input (cosine 1)."""
    fig, axes = plt.subplots(2, len(PANELS), figsize=(4.0 * len(PANELS), 6.6), squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(by_model)}
    for col, (title, kinds, xlabel) in enumerate(PANELS):
        top, bottom = axes[0][col], axes[1][col]
        for name, curves in by_model.items():
            for kind in kinds:
                points = curves.get(kind, [])
                if not points:
                    continue
                cosine = "mean_cosine" if "mean_cosine" in points[0] else "residue_cosine"
                x = [p["level"] for p in points]
                anchor = kind != "concatenation"
                xs = [0.0, *x] if anchor else x
                label = f"{name} {kind.split('_')[-1]}" if len(kinds) > 1 else name
                style = STYLES.get(kind, "-")
                top.plot(
                    xs,
                    ([1.0] if anchor else []) + [p[cosine] for p in points],
                    style,
                    marker="o",
                    color=colours[name],
                    label=label,
                )
                bottom.plot(
                    x,
                    [p["accuracy"] for p in points],
                    style,
                    marker="o",
                    color=colours[name],
                    label=label,
                )
                bottom.plot(
                    x, [p["clean_accuracy"] for p in points], ":", color=colours[name], lw=0.8
                )
                top.set_ylabel(
                    "mean-embedding cosine"
                    if cosine == "mean_cosine"
                    else "per-residue cosine (overlap)"
                )
        top.set_title(title)
        bottom.set_xlabel(xlabel)
        bottom.set_ylabel("SS3 probe accuracy (dotted: clean)")
        top.legend(fontsize=7)
    return save_figure(fig, path)
