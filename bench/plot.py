"""docs/benchmarks.png: time against N for the operator and the baseline, created and Ready, and the ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGET_RATIO = 1.3


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in results["sizes"]]
    op = results["operator"]
    base = results["baseline"]

    def series(src: dict[str, Any], key: str) -> list[float]:
        return [float(src[str(n)]["t"][key]) for n in sizes]

    lines = [
        ("operator: apply → all objects created", series(op, "created"), "tab:blue", "o", "-"),
        ("operator: apply → Ready=True", series(op, "pd_ready"), "tab:blue", "s", "--"),
        ("baseline: POSTs → all objects created", series(base, "created"), "tab:orange", "o", "-"),
        ("baseline: POSTs → all pods Ready", series(base, "pods_ready"), "tab:orange", "s", "--"),
    ]
    lws = results.get("lws") or {}
    if all(str(n) in lws for n in sizes):
        lines.append(("LeaderWorkerSet: all pods created", series(lws, "created"), "tab:green", "o", "-."))
        lines.append(("LeaderWorkerSet: all pods Ready", series(lws, "pods_ready"), "tab:green", "s", ":"))
    ssa = results.get("baseline_ssa") or {}
    if all(str(n) in ssa for n in sizes):
        lines.append(
            ("baseline, server-side apply: all created", series(ssa, "created"), "tab:gray", "^", ":")
        )
    fig, (ax, axr) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for label, ys, color, marker, style in lines:
        ax.plot(sizes, ys, marker=marker, linestyle=style, color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("DP ranks N (1 GPU per pod: N pods + 3 Services)")
    ax.set_ylabel("seconds")
    ax.set_title("Time to create and to Ready, same API server")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    created = [float(results["ratios"][str(n)]["created"]) for n in sizes]
    ready = [float(results["ratios"][str(n)]["ready"]) for n in sizes]
    axr.plot(sizes, created, marker="o", color="tab:green", label="created: operator / baseline")
    axr.plot(sizes, ready, marker="s", linestyle="--", color="tab:purple", label="Ready: operator / baseline")
    axr.axhline(TARGET_RATIO, color="tab:red", linestyle=":", label=f"target ≤ {TARGET_RATIO}")
    axr.axhline(1.0, color="grey", linewidth=0.8)
    axr.set_xscale("log", base=2)
    axr.set_xticks(sizes, [str(n) for n in sizes])
    axr.set_ylim(0, max([TARGET_RATIO * 1.5, *created, *ready]) * 1.1)
    axr.set_xlabel("DP ranks N")
    axr.set_ylabel("ratio")
    axr.set_title("Operator / baseline")
    axr.grid(True, alpha=0.3)
    axr.legend(fontsize=8)
    fig.suptitle(results.get("title", "wideep operator vs API-server floor"), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
