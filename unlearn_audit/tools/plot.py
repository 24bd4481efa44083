"""`unlearn-audit plot REPORT.json [--out DIR]`: draw the curves of a JSON audit report into PNG files.

One PNG per (scenario, seed, budget) and figure type, with every unlearner of the report on the
same axes (one colour each) and the retrain reference as a dashed black line:

* ``relearning-<scenario>-seed<s>.png``: the poison metric (attack success rate, or mean GUS of the
  held-out poisons) against the relearning step, one panel per attacker size k
  (check ``relearning_resistant``);
* ``interpolation-<scenario>-seed<s>.png``: test accuracy, test loss and the poison metric along the
  linear path from the poisoned original (alpha = 0) to the unlearned model (alpha = 1), with the
  parameter L2 distances in the legend (check ``not_mode_connected``);
* ``gus-<scenario>-seed<s>.png``: the per-poison Gaussian Unlearning Scores against their exact
  N(0, 1) null, and the membership-inference ROC that null implies (check ``gaussian_leakage``,
  only when the report keeps the per-poison ``scores``);
* ``scores-<check>.png``: score ± stderr of every unlearner, with the reference as a black marker.

A ``-budget<b>`` suffix is added when the report holds several budgets, and a ``<profile>-`` prefix
when it holds several profiles. Needs matplotlib (the ``[plot]`` extra); it draws with the Agg
canvas directly and never touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import norm

from unlearn_audit.reports.record import ResultRecord, per_seed_records

DPI = 120
INSTALL_HINT = 'pip install "unlearn-audit[plot]"'
REFERENCE_STYLE: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1.6, "zorder": 5}
REFERENCE_NAMES = {"budget_respected": "budget (limit)"}  # the reference is retrain's score unless named here
LEGACY_SCORE_LABELS = {  # y label of scores-<check>.png for reports before schema 3, whose results lack metric/unit
    "relearning_resistant": "poison metric after relearning (worst k)",
    "not_mode_connected": "test-loss barrier on the linear path",
    "gaussian_leakage": "mean GUS of the forget-set poisons",
    "targeted_removed": "attack success rate",
    "utility_preserved": "clean test accuracy",
    "budget_respected": "example-gradients spent",
}
GroupKey = tuple[Any, Any, Any, Any]  # (profile, scenario, seed, budget)


@dataclass(frozen=True)
class Axis:
    """What a y axis shows, from a result's `metric` and `unit`: its label, and how it is drawn (fractions on
    [0, 1], z-scores with their null at 0), so that no figure has to guess it from a rule's wording."""

    metric: str
    unit: str = ""

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.unit})" if self.unit else self.metric

    @property
    def fraction(self) -> bool:
        return self.unit == "fraction"

    @property
    def null_at_zero(self) -> bool:
        return self.unit == "z-score"


LEGACY_GUS = Axis("mean GUS", "z-score")
LEGACY_ATTACK_SUCCESS = Axis("attack success rate", "fraction")


class ReportError(Exception):
    pass


def load_results(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report document and its result records; ReportError if it is missing or not a report."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"report not found: {path}") from None
    except OSError as exc:
        raise ReportError(f"cannot read report {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ReportError(
            f"{path} is not an unlearn-audit JSON report (no 'results' list); "
            "write one with `pytest --audit-report FILE`"
        )
    return doc, results_of(doc)


def results_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A report's results in today's layout (fields an older report lacks take their defaults), a pooled
    test's seeds as one result each: the curves are per seed."""
    return [
        one.to_json()
        for r in doc["results"]
        if isinstance(r, dict)
        for one in per_seed_records(ResultRecord.from_json(r))
    ]


# --------------------------------------------------------------------------------------------- helpers


def _short(spec: str) -> str:
    return str(spec).rpartition(":")[2] or str(spec)


def _labels(specs: list[str]) -> dict[str, str]:
    """Class names, or the full spec where two unlearners share a class name."""
    shorts = [_short(s) for s in specs]
    return {s: (_short(s) if shorts.count(_short(s)) == 1 else str(s)) for s in specs}


def _fmt_budget(b: Any) -> str:
    return f"{b:g}" if isinstance(b, (int, float)) else str(b)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def recorded_axis(results: list[dict[str, Any]]) -> Axis | None:
    """The axis the results' own metric and unit give (the first that has them), None if none does."""
    for r in results:
        if r.get("metric") and r.get("unit"):
            return Axis(str(r["metric"]), str(r["unit"]))
    return None


def poison_axis(scenario: Any, results: list[dict[str, Any]]) -> Axis:
    """The axis of the scenario's poison metric (relearning curves, the interpolation path's poison panel): the
    metric and unit its `relearning_resistant` results record (the attack's poison metric). A report before
    schema 3 does not record them: there it is guessed, as before, from the rules' wording or the scenario name."""
    recorded = recorded_axis([r for r in results if r.get("check") == "relearning_resistant"])
    if recorded is not None:
        return recorded
    for r in results:
        rule = str(r.get("rule") or "")
        if "GUS" in rule:
            return LEGACY_GUS
        if "attack success" in rule:
            return LEGACY_ATTACK_SUCCESS
    return LEGACY_GUS if "gaussian" in str(scenario).lower() else LEGACY_ATTACK_SUCCESS


def score_axis(check: str, results: list[dict[str, Any]]) -> Axis:
    """The axis of a check's scores: their recorded metric and unit, else (before schema 3) the check's usual label."""
    return recorded_axis(results) or Axis(LEGACY_SCORE_LABELS.get(check, "score"))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _curve(points: Any) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for p in points or []:
        if isinstance(p, (list, tuple)) and len(p) == 2 and _finite(p[0]) and _finite(p[1]):
            xs.append(float(p[0]))
            ys.append(float(p[1]))
    return xs, ys


class Plotter:
    def __init__(self, doc: dict[str, Any], results: list[dict[str, Any]], out: Path) -> None:
        from matplotlib import colormaps

        self.results = results
        self.out = out
        order = [u for u in (doc.get("options") or {}).get("unlearners") or [] if isinstance(u, str)]
        for r in results:
            u = r.get("unlearner")
            if u is not None and u not in order:
                order.append(u)
        self.unlearners = [u for u in order if any(r.get("unlearner") == u for r in results)]
        self.label = _labels(self.unlearners)
        cmap = colormaps["tab10"]
        self.colour = {u: cmap(i % 10) for i, u in enumerate(self.unlearners)}
        self.multi_budget = len({r.get("budget") for r in results}) > 1
        self.multi_profile = len({r.get("profile") for r in results}) > 1
        self.written: list[Path] = []

    # ----------------------------------------------------------------------------------- plumbing

    def _groups(self, check: str) -> dict[GroupKey, list[dict[str, Any]]]:
        groups: dict[GroupKey, list[dict[str, Any]]] = defaultdict(list)
        for r in self.results:
            if r.get("check") == check and isinstance(r.get("details"), dict):
                groups[(r.get("profile"), r.get("scenario"), r.get("seed"), r.get("budget"))].append(r)
        for rs in groups.values():
            rs.sort(
                key=lambda r: (
                    self.unlearners.index(r["unlearner"]) if r.get("unlearner") in self.unlearners else 1 << 30
                )
            )
        return dict(sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])))

    def _stem(self, kind: str, key: GroupKey) -> str:
        profile, scenario, seed, budget = key
        parts = [kind]
        if self.multi_profile:
            parts.append(_safe(profile))
        parts += [_safe(scenario), f"seed{_safe(seed)}"]
        if self.multi_budget:
            parts.append(f"budget{_safe(_fmt_budget(budget))}")
        return "-".join(parts)

    def _where(self, key: GroupKey) -> str:
        profile, scenario, seed, budget = key
        text = f"{scenario}, seed {seed}"
        if self.multi_budget and budget is not None:
            text += f", budget {_fmt_budget(budget)}"
        if self.multi_profile:
            text = f"{profile}/{text}"
        return text

    @staticmethod
    def _figure(width: float, height: float):  # noqa: ANN205
        from matplotlib.figure import Figure

        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")

    def _save(self, fig, name: str) -> None:  # noqa: ANN001
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        self.written.append(path)

    def _method_style(self, unlearner: str) -> dict[str, Any]:
        return {
            "color": self.colour.get(unlearner, "grey"),
            "linewidth": 1.8,
            "marker": "o",
            "markersize": 3.5,
            "alpha": 0.9,
        }

    # ----------------------------------------------------------------------------------- figures

    def relearning(self) -> None:
        for key, rs in self._groups("relearning_resistant").items():
            entries = [
                (r, e) for r in rs for e in r["details"].get("relearning") or [] if isinstance(e, dict) and "k" in e
            ]
            if not entries:
                continue
            ks = sorted({e["k"] for _, e in entries})
            axis = poison_axis(key[1], rs)
            steps = next((r["details"].get("steps") for r in rs if r["details"].get("steps")), None)
            fig = self._figure(max(4.6, 4.0 * len(ks)), 4.0)
            axes = fig.subplots(1, len(ks), sharey=True, squeeze=False)[0]
            handles: dict[str, Any] = {}
            for ax, k in zip(axes, ks):
                ref_drawn = False
                for r, e in entries:
                    if e["k"] != k:
                        continue
                    u = r.get("unlearner")
                    xs, ys = _curve(e.get("method_curve"))
                    if xs:
                        verdict = " (fails)" if e.get("failed") else ""
                        (line,) = ax.plot(xs, ys, **self._method_style(u), label=self.label.get(u, str(u)))
                        handles.setdefault(self.label.get(u, str(u)), line)
                        if verdict:
                            ax.plot(
                                xs[-1:],
                                ys[-1:],
                                marker="X",
                                markersize=9,
                                color=line.get_color(),
                                zorder=6,
                                markeredgecolor="black",
                                markeredgewidth=0.6,
                                linestyle="none",
                            )
                    if not ref_drawn:
                        rx, ry = _curve(e.get("retrain_curve"))
                        if rx:
                            (ref,) = ax.plot(rx, ry, **REFERENCE_STYLE, label="retrain reference (same attack)")
                            handles.setdefault("retrain reference (same attack)", ref)
                            ref_drawn = True
                if axis.null_at_zero:
                    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
                ax.set_title(f"k = {k} forget example{'' if k == 1 else 's'}")
                ax.set_xlabel("relearning step")
                ax.grid(alpha=0.3)
            if axis.fraction:
                axes[0].set_ylim(-0.03, 1.03)
            axes[0].set_ylabel(axis.label)
            marker_note = any(e.get("failed") for _, e in entries)
            if marker_note:
                from matplotlib.lines import Line2D

                handles["fails at this k"] = Line2D(
                    [], [], marker="X", markersize=9, color="white", markeredgecolor="black", linestyle="none"
                )
            handles = _reference_last(handles)
            fig.legend(
                list(handles.values()),
                list(handles),
                loc="outside lower center",
                ncol=min(len(handles), 5),
                frameon=False,
            )
            fig.suptitle(
                f"Relearning attack ({self._where(key)}): {axis.metric} while fine-tuning on the retain set "
                f"+ k forget examples" + (f", {steps} steps" if steps else ""),
                fontsize=11,
            )
            self._save(fig, self._stem("relearning", key))

    def interpolation(self) -> None:
        panels = [("test_accuracy", "test accuracy"), ("test_loss", "test loss"), ("poison", None)]
        for key, rs in self._groups("not_mode_connected").items():
            rs = [r for r in rs if isinstance(r["details"].get("path"), dict)]
            if not rs:
                continue
            axis = poison_axis(
                key[1],
                [r for r in self.results if r.get("scenario") == key[1] and r.get("check") == "relearning_resistant"]
                or rs,
            )
            present = [(f, lbl or axis.label) for f, lbl in panels if any(r["details"]["path"].get(f) for r in rs)]
            if not present:
                continue
            fig = self._figure(4.1 * len(present), 4.0)
            axes = fig.subplots(1, len(present), squeeze=False)[0]
            handles: dict[str, Any] = {}
            ref = next((r["details"] for r in rs if isinstance(r["details"].get("retrain_path"), dict)), None)
            for ax, (field, ylabel) in zip(axes, present):
                for r in rs:
                    d, u = r["details"], r.get("unlearner")
                    path = d["path"]
                    xs, ys = path.get("alphas") or [], path.get(field) or []
                    if not xs or len(xs) != len(ys):
                        continue
                    l2 = d.get("l2_distance")
                    label = f"{self.label.get(u, u)}  (L2 {l2:.3g})" if _finite(l2) else str(self.label.get(u, u))
                    (line,) = ax.plot(xs, ys, **self._method_style(u), label=label)
                    handles.setdefault(label, line)
                if ref is not None:
                    rp = ref["retrain_path"]
                    xs, ys = rp.get("alphas") or [], rp.get(field) or []
                    if xs and len(xs) == len(ys):
                        l2 = ref.get("retrain_l2_distance")
                        label = f"retrain reference  (L2 {l2:.3g})" if _finite(l2) else "retrain reference"
                        (line,) = ax.plot(xs, ys, **REFERENCE_STYLE, label=label)
                        handles.setdefault(label, line)
                if field == "poison" and axis.null_at_zero:
                    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
                if field in ("test_accuracy",) or (field == "poison" and axis.fraction):
                    lo = min([v for line in ax.get_lines() for v in line.get_ydata() if _finite(float(v))] or [0.0])
                    ax.set_ylim(
                        min(lo - 0.03, 0.9 if field == "test_accuracy" else -0.03),
                        1.01 if field == "test_accuracy" else 1.03,
                    )
                ax.set_title(ylabel[0].upper() + ylabel[1:])
                ax.set_ylabel(ylabel)
                ax.set_xlabel("mixing weight α")
                ax.set_xlim(-0.02, 1.02)
                ax.grid(alpha=0.3)
            handles = _reference_last(handles)
            fig.legend(
                list(handles.values()),
                list(handles),
                loc="outside lower center",
                ncol=min(len(handles), 4),
                frameon=False,
                title="end point (parameter L2 distance from the poisoned original)",
                title_fontsize=9,
            )
            fig.suptitle(
                f"Linear interpolation ({self._where(key)}): α = 0 poisoned original, α = 1 unlearned model",
                fontsize=11,
            )
            self._save(fig, self._stem("interpolation", key))

    def gus(self) -> None:
        for key, rs in self._groups("gaussian_leakage").items():
            rs = [
                r
                for r in rs
                if isinstance(r["details"].get("scores"), list) and any(_finite(v) for v in r["details"]["scores"])
            ]
            if not rs:
                continue
            fig = self._figure(10.0, 4.2)
            ax_h, ax_r = fig.subplots(1, 2)
            all_scores = [float(v) for r in rs for v in r["details"]["scores"] if _finite(v)]
            lo, hi = min(min(all_scores), -4.0), max(max(all_scores), 4.0)
            bins = [lo + (hi - lo) * i / 30 for i in range(31)]
            grid = [lo + (hi - lo) * i / 300 for i in range(301)]
            fpr_grid = [10 ** (-4 + 4 * i / 400) for i in range(401)]
            for r in rs:
                u, d = r.get("unlearner"), r["details"]
                s = sorted(float(v) for v in d["scores"] if _finite(v))
                colour = self.colour.get(u, "grey")
                name = self.label.get(u, str(u))
                mean = sum(s) / len(s)
                ax_h.hist(
                    s,
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.8,
                    color=colour,
                    label=f"{name}  (mean {mean:.2f}, n={len(s)})",
                )
                # ROC against the exact null: threshold t has FPR = P(N(0,1) > t), TPR = share of scores > t.
                tprs = []
                for fpr in fpr_grid:
                    t = float(norm.isf(fpr))
                    tprs.append(sum(1 for v in s if v > t) / len(s))
                tpr1 = d.get("tpr_at_fpr_0.01")
                label = f"{name}  (TPR@1% FPR {tpr1:.2f})" if _finite(tpr1) else name
                ax_r.plot(fpr_grid, tprs, color=colour, linewidth=1.8, label=label)
            ax_h.plot(grid, norm.pdf(grid), **REFERENCE_STYLE, label="N(0, 1): no dependence on the noise")
            ax_h.set_xlabel("Gaussian Unlearning Score (per poison)")
            ax_h.set_ylabel("density")
            ax_h.set_title("Per-poison GUS vs the exact null")
            ax_h.legend(fontsize=8, loc="upper left")
            ax_h.grid(alpha=0.3)
            ax_r.plot(fpr_grid, fpr_grid, **REFERENCE_STYLE, label="chance (retrain in expectation)")
            ax_r.axvline(0.01, color="grey", linewidth=0.8, linestyle=":")
            ax_r.set_xscale("log")
            ax_r.set_xlim(1e-4, 1)
            ax_r.set_ylim(-0.02, 1.02)
            ax_r.set_xlabel("false positive rate (exact, from N(0, 1))")
            ax_r.set_ylabel("true positive rate")
            ax_r.set_title("Membership inference ROC on the forget set")
            ax_r.legend(fontsize=8, loc="upper left")
            ax_r.grid(alpha=0.3)
            fig.suptitle(f"Gaussian leakage ({self._where(key)})", fontsize=11)
            self._save(fig, self._stem("gus", key))

    def scores(self) -> None:
        from matplotlib.lines import Line2D

        checks = sorted({r.get("check") for r in self.results if isinstance(r.get("check"), str)})
        for check in checks:
            groups = {k: [r for r in rs if _finite(r.get("score"))] for k, rs in self._groups_any(check).items()}
            groups = {k: rs for k, rs in groups.items() if rs}
            if not groups:
                continue
            axis = score_axis(check, [r for rs in groups.values() for r in rs])
            ref_name = REFERENCE_NAMES.get(check, "reference (retrain)")
            n_u = max(1, len(self.unlearners))
            width = 0.8 / n_u
            fig = self._figure(max(6.0, 2.6 + len(groups) * (0.4 + 0.45 * n_u)), 4.2)
            ax = fig.subplots()
            seen: set[str] = set()
            outcomes: set[str] = set()
            has_ref = False
            direction = next((r.get("direction") for rs in groups.values() for r in rs if r.get("direction")), None)
            for gi, rs in enumerate(groups.values()):
                refs = [r.get("reference") for r in rs if _finite(r.get("reference"))]
                for r in rs:
                    u = r.get("unlearner")
                    ui = self.unlearners.index(u) if u in self.unlearners else 0
                    x = gi - 0.4 + width * (ui + 0.5)
                    colour = self.colour.get(u, "grey")
                    se = r.get("stderr") if _finite(r.get("stderr")) else 0.0
                    outcome = str(r.get("outcome"))
                    outcomes.add(outcome)
                    face = colour if outcome == "passed" else "white"
                    ax.errorbar(
                        [x],
                        [r["score"]],
                        yerr=[se],
                        fmt="o",
                        color=colour,
                        markerfacecolor=face,
                        markersize=8,
                        markeredgewidth=1.8,
                        capsize=4,
                        alpha=1.0 if outcome in ("passed", "failed") else 0.35,
                    )
                    seen.add(u)
                if refs:
                    has_ref = True
                    ax.plot([gi - 0.42, gi + 0.42], [refs[0]] * 2, **{**REFERENCE_STYLE, "linewidth": 2.0})
            handles: dict[str, Any] = {
                self.label.get(u, str(u)): Line2D(
                    [], [], marker="o", color=self.colour.get(u, "grey"), linestyle="none", markersize=8
                )
                for u in self.unlearners
                if u in seen
            }
            if has_ref:
                handles[ref_name] = Line2D([], [], **{**REFERENCE_STYLE, "linewidth": 2.0})
            handles["filled: passed, hollow: failed"] = Line2D(
                [],
                [],
                marker="o",
                color="grey",
                markerfacecolor="white",
                linestyle="none",
                markersize=8,
                markeredgewidth=1.8,
            )
            if outcomes - {"passed", "failed"}:
                handles["faint: skipped / error"] = Line2D(
                    [], [], marker="o", color="grey", alpha=0.35, linestyle="none", markersize=8
                )
            ax.set_xticks(range(len(groups)), [self._where(k).replace(", ", "\n", 1) for k in groups])
            ax.set_xlim(-0.6, len(groups) - 0.4)
            ax.set_ylabel(f"{axis.label} ± stderr")
            ax.grid(axis="y", alpha=0.3)
            nice = {"lower_is_better": "lower is better", "higher_is_better": "higher is better"}.get(
                direction or "", ""
            )
            fig.suptitle(f"{check}: score per unlearner" + (f" ({nice})" if nice else ""), fontsize=11)
            ax.legend(
                list(handles.values()),
                list(handles),
                loc="center left",
                bbox_to_anchor=(1.01, 0.5),
                fontsize=8,
                frameon=False,
            )
            self._save(fig, f"scores-{_safe(check)}")

    def _groups_any(self, check: str) -> dict[GroupKey, list[dict[str, Any]]]:
        groups: dict[GroupKey, list[dict[str, Any]]] = defaultdict(list)
        for r in self.results:
            if r.get("check") == check:
                groups[(r.get("profile"), r.get("scenario"), r.get("seed"), r.get("budget"))].append(r)
        return dict(sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])))


def _reference_last(handles: dict[str, Any]) -> dict[str, Any]:
    """Legend entries with the retrain reference after the methods (and before the marker notes)."""
    ref = {k: v for k, v in handles.items() if k.startswith("retrain reference")}
    notes = {k: v for k, v in handles.items() if k.startswith("fails")}
    return {**{k: v for k, v in handles.items() if k not in ref and k not in notes}, **ref, **notes}


def main(args: argparse.Namespace) -> int:
    report = Path(args.report)
    out = Path(args.out) if getattr(args, "out", None) is not None else report.parent / f"{report.stem}-plots"
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        print(f"unlearn-audit plot needs matplotlib, which is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        doc, results = load_results(report)
    except ReportError as exc:
        print(f"unlearn-audit plot: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    p = Plotter(doc, results, out)
    p.relearning()
    p.interpolation()
    p.gus()
    p.scores()
    if not p.written:
        print(f"nothing to plot in {report} ({len(results)} result(s), no curves or scores)")
        return 0
    print(f"wrote {len(p.written)} plot(s) to {out}:")
    for path in p.written:
        print(f"  {path}")
    return 0
