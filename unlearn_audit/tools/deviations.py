"""`unlearn-audit deviations`: the table of where each profile differs from the papers, from the recipes.

Every recipe lists its deviations (`[[deviations]]`: topic, what the paper or the authors' code
does, what the harness does here, why, and what it does to verdicts). The documentation's table is this
command's output, rendered when the docs are built, so the table cannot drift from the recipes.
"""

from __future__ import annotations

from typing import Any

DOCUMENTED_PROFILES = ("tiny", "text", "cifar10-resnet18")


def deviation_rows(profiles: tuple[str, ...] = DOCUMENTED_PROFILES) -> list[dict[str, Any]]:
    """One row per distinct deviation of a profile, with the scenarios that share it."""
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    rows: list[dict[str, Any]] = []
    for profile in profiles:
        seen: dict[tuple[str, ...], dict[str, Any]] = {}
        for name, recipe in sorted(load_profile_recipes(profile).items()):
            for d in recipe.deviations:
                key = tuple(d.values())
                if key not in seen:
                    seen[key] = {"profile": profile, "scenarios": [], **d}
                    rows.append(seen[key])
                seen[key]["scenarios"].append(name)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| profile | scenarios | topic | the paper / the authors' code | here | why | effect on verdicts |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["profile"], ", ".join(r["scenarios"]), r["topic"], r["paper"], r["here"], r["why"], r["effect"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(args: Any) -> int:
    print(markdown(deviation_rows()), end="")
    return 0
