"""The stats report of a generate-preferences run: Markdown + PNG (pass-rate histogram over
instructions, rows per dataset, drops per gate), and the same table for the terminal."""

from __future__ import annotations

from typing import Any

from codealign.tasks.plots import png_bytes, pyplot


def table_rows(stats: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(dataset, rows, drops) — the table printed and written."""
    rows = []
    for name, d in stats["datasets"].items():
        drops = ", ".join(f"{why}: {n}" for why, n in d["dropped"].items()) or "-"
        rows.append((name, str(d["rows"]), drops))
    return rows


def markdown(stats: dict[str, Any], run_id: str, header: dict[str, str]) -> str:
    rates = stats["pass_rates"]
    lines = [f"# generate-preferences run {run_id}", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += [f"- **instructions**: {stats['instructions']}, **responses**: {stats['responses']}",
              f"- **mean pass rate over kept instructions**: {sum(rates) / len(rates):.3f}" if rates else
              "- **mean pass rate**: n/a", "", "![stats](report.png)", "",
              "| dataset | rows | dropped instructions (why: count) |", "| --- | ---: | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in table_rows(stats)]
    lines += ["", "## Gates", "", "| gate | count |", "| --- | ---: |"]
    lines += [f"| instruction dropped: {k} | {v} |" for k, v in stats["instructions_dropped"].items()]
    lines += [f"| response flagged: {k} | {v} |" for k, v in stats["responses_flagged"].items()]
    if stats["contamination"]:
        lines += ["", "## Decontamination drops", "", "| instruction | where | matched benchmark task |",
                  "| --- | --- | --- |"]
        lines += [f"| {c['instruction_id']} | {c['where']} | {c['matched']} |" for c in stats["contamination"]]
    return "\n".join(lines) + "\n"


def png(stats: dict[str, Any], run_id: str) -> bytes:
    fig, axes = pyplot().subplots(1, 3, figsize=(16, 4.5))
    axes[0].hist(stats["pass_rates"], bins=[i / 10 for i in range(11)], color="#4477aa", edgecolor="white")
    axes[0].set(title="pass rate over instructions", xlabel="share of responses passing", ylabel="instructions")
    names = list(stats["datasets"])
    axes[1].barh(names, [stats["datasets"][n]["rows"] for n in names], color="#228833")
    axes[1].set(title="rows per dataset (pairs per kind and dimension)", xlabel="rows")
    axes[1].invert_yaxis()
    gates = {**{f"drop: {k}": v for k, v in stats["instructions_dropped"].items()},
             **{f"flag: {k}": v for k, v in stats["responses_flagged"].items()}}
    for d in stats["datasets"].values():
        for why, n in d["dropped"].items():
            gates[f"no row: {why}"] = max(gates.get(f"no row: {why}", 0), n)
    axes[2].barh(list(gates) or ["none"], list(gates.values()) or [0], color="#ee6677")
    axes[2].set(title="drops per gate", xlabel="count")
    axes[2].invert_yaxis()
    return png_bytes(fig, f"generate-preferences {run_id}", dpi=90)
