"""Write an evaluation's results as JSON, a Markdown table and PNG figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
           ("macro_f1_sites", "site-mean F1"), ("auroc", "AUROC"),
           ("pr_auc", "PR-AUC"), ("fpr", "FPR"), ("median_latency_rounds", "latency (rounds)"),
           ("bytes_per_site_round", "bytes/site/round"),
           ("compute_seconds_per_site_round", "CPU s/site/round"), ("epsilon", "epsilon (total)"))


def write_report(results: dict, out_dir: Path) -> list[Path]:
    """Write results.json, results.md and the figures into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "results.md"]
    paths[0].write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths[1].write_text(markdown_tables(results), encoding="utf-8")
    paths.extend(_figures(results, out_dir))
    return paths


def markdown_tables(results: dict) -> str:
    """Return the approach table, the variant table and the sites as Markdown."""
    lines = [f"# fti eval: scenario {results['scenario']}" + (" (quick)" if results["quick"] else ""),
             "", "## Approaches", "", _table(results["approaches"])]
    if results["variants"]:
        lines += ["", "## Strategies, ablations, poisoning and epsilon (fusion-dp variants)", "",
                  _table(results["variants"])]
    if results.get("references"):
        lines += ["", "## References from the labels (not detectors)", "", _table(results["references"])]
    ablations = _ablation_rows(results)
    if len(ablations) > 1:
        lines += ["", "## Ablations of fusion-dp", "",
                  "| variant | F1 | FPR | change in F1 |", "| --- | --- | --- | --- |"]
        reference = ablations["fusion-dp"]["f1"]
        lines += [f"| {name} | {_cell(row['f1'])} | {_cell(row['fpr'])} | {row['f1'] - reference:+.4f} |"
                  for name, row in ablations.items()]
    fused = results["approaches"].get("fusion-dp")
    if fused:
        lines += ["", "## Confusion matrix of fusion-dp (flows)", "",
                  "| | predicted benign | predicted malicious |", "| --- | --- | --- |",
                  f"| benign | {fused['tn']} | {fused['fp']} |",
                  f"| malicious | {fused['fn']} | {fused['tp']} |"]
    lines += ["", "## Sites", "", "| site | capture | flows | malicious | windows | baseline rounds |",
              "| --- | --- | --- | --- | --- | --- |"]
    for site in results["sites"]:
        lines.append(f"| {site['site']} | {site['description']} | {site['flows']} | "
                     f"{site['malicious']} | {site['windows']} | {site['baseline_rounds']} |")
    lines += ["", f"Run time: {results['elapsed_seconds']} s.", ""]
    return "\n".join(lines)


def _ablation_rows(results: dict) -> dict[str, dict]:
    """Return fusion-dp, the same without DP (the fusion approach) and every ablation variant."""
    approaches = results["approaches"]
    rows = {"fusion-dp": approaches["fusion-dp"]} if "fusion-dp" in approaches else {}
    if rows and "fusion" in approaches and results["variants"]:
        rows["ablation:without-dp"] = approaches["fusion"]
    rows.update((k, v) for k, v in results["variants"].items() if k.startswith("ablation:"))
    return rows


def _table(rows: dict) -> str:
    header = "| approach | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "| --- " * (len(COLUMNS) + 1) + "|"
    body = [f"| {name} | " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |"
            for name, row in rows.items()]
    return "\n".join([header, rule, *body])


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _figures(results: dict, out_dir: Path) -> list[Path]:
    approaches = results["approaches"]
    names = list(approaches)
    paths = []

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.bar(names, [approaches[n]["f1"] for n in names], color="tab:blue")
    axes.set_ylabel("F1 (labelled flows)")
    axes.set_ylim(0, 1)
    axes.set_title(f"F1 per approach, {results['scenario']}")
    paths.append(_save(figure, out_dir / "f1_per_approach.png"))

    figure, axes = plt.subplots(figsize=(7, 4))
    for name in names:
        series = approaches[name]["f1_per_round"]
        axes.plot([i for i, v in enumerate(series) if v is not None],
                  [v for v in series if v is not None], marker="o", label=name)
    axes.set_xlabel("round")
    axes.set_ylabel("F1 of the round's flows")
    axes.set_ylim(0, 1)
    axes.legend()
    paths.append(_save(figure, out_dir / "f1_per_round.png"))

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.boxplot([approaches[n]["latency_rounds"] or [math.nan] for n in names])
    axes.set_xticks(range(1, len(names) + 1), names)
    axes.set_ylabel("rounds from first malicious flow to first alert")
    paths.append(_save(figure, out_dir / "latency_boxplot.png"))

    fused = approaches.get("fusion-dp")
    if fused:
        figure, axes = plt.subplots(figsize=(4, 4))
        matrix = [[fused["tn"], fused["fp"]], [fused["fn"], fused["tp"]]]
        axes.imshow(matrix, cmap="Blues")
        for i in range(2):
            for j in range(2):
                axes.text(j, i, str(matrix[i][j]), ha="center", va="center")
        axes.set_xticks([0, 1], ["benign", "malicious"])
        axes.set_yticks([0, 1], ["benign", "malicious"])
        axes.set_xlabel("predicted")
        axes.set_ylabel("label")
        axes.set_title("fusion-dp")
        paths.append(_save(figure, out_dir / "confusion_matrix.png"))

    points = [(v["epsilon_per_round"], v["f1"]) for k, v in
              {**approaches, **results["variants"]}.items()
              if (k == "fusion-dp" or k.startswith("epsilon:")) and v.get("epsilon_per_round")]
    if points:
        points.sort()
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        axes.set_xscale("log")
        axes.set_xlabel("epsilon per round")
        axes.set_ylabel("F1 of fusion-dp")
        axes.set_ylim(0, 1)
        paths.append(_save(figure, out_dir / "epsilon_vs_f1.png"))

    ablations = _ablation_rows(results)
    if len(ablations) > 1:
        labels = list(ablations)
        values = [row["f1"] for row in ablations.values()]
        figure, axes = plt.subplots(figsize=(8, 4.5))
        axes.barh(labels, values, color="tab:orange")
        axes.set_xlabel("F1")
        axes.set_xlim(0, 1)
        axes.set_title("ablations and the poisoning site")
        paths.append(_save(figure, out_dir / "ablations_poisoning.png"))
    return paths


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
