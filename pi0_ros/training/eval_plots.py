"""pi0-eval's PNG plots (matplotlib Agg) from its JSON report.

- ``<stem>_distance.png``: each episode's distance from the instructed hand to the named cube over time,
  green for successes, red for failures, dashed for language-following cases, with the touch distance.
- ``<stem>_summary.png``: success rate per instruction and on the language-following subset (with counts),
  and each episode's RMS command jerk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping


def write_plots(report: Mapping[str, Any], stem: Path | str, touch_distance_m: float | None = None) -> List[Path]:
    """Write both plots next to ``stem``; returns their paths (none where matplotlib is missing)."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    episodes = report.get("episodes", [])
    summary = report.get("summary", {})
    label = str(report.get("label", ""))
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for e in episodes:
        trace = e.get("distance_trace") or []
        if not trace:
            continue
        t, d = zip(*trace, strict=True)
        ax.plot(t, d, color="tab:green" if e["success"] else "tab:red", alpha=0.6,
                linestyle="--" if e.get("language_case") else "-", linewidth=1.2)
    if touch_distance_m:
        ax.axhline(touch_distance_m, color="k", linewidth=0.8, linestyle=":", label="touch distance")
        ax.legend(loc="upper right")
    ax.set_xlabel("time since the policy started (s)")
    ax.set_ylabel("hand to named cube (m)")
    ax.set_title(f"{label}: green success, red failure, dashed = language case", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    paths.append(stem.parent / f"{stem.name}_distance.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    rates: Dict[str, Mapping[str, Any]] = dict(summary.get("by_instruction", {}))
    if (summary.get("language_following") or {}).get("episodes"):
        rates["language-following subset"] = summary["language_following"]
    rates["all"] = {"episodes": summary.get("episodes", 0), "successes": summary.get("successes", 0),
                    "success_rate": summary.get("success_rate")}
    fig, (ax_rate, ax_jerk) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    names = list(rates)
    values = [100 * (rates[n].get("success_rate") or 0.0) for n in names]
    bars = ax_rate.barh(range(len(names)), values, color="tab:blue")
    for bar, n in zip(bars, names, strict=True):
        ax_rate.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2,
                     f"{rates[n].get('successes', 0)}/{rates[n].get('episodes', 0)}", va="center", fontsize=8)
    ax_rate.set_yticks(range(len(names)), [n.replace("touch the ", "") for n in names], fontsize=8)
    ax_rate.set_xlim(0, 110)
    ax_rate.set_xlabel("success rate (%)")
    ax_rate.set_title(label, fontsize=9)
    jerks = [e["command_jerk_rms"] for e in episodes if e.get("command_jerk_rms") is not None]
    if jerks:
        ax_jerk.hist(jerks, bins=min(20, max(3, len(jerks) // 2)), color="tab:gray")
    ax_jerk.set_xlabel("RMS command jerk (rad/s^3)")
    ax_jerk.set_ylabel("episodes")
    fig.tight_layout()
    paths.append(stem.parent / f"{stem.name}_summary.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
