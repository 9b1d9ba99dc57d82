"""The headline of ``dvc exp show``: about 15 columns instead of hundreds.

    python -m hubert.experiments          # the workspace, the commit and its experiments
    python -m hubert.experiments -A       # any arguments after the name go to `dvc exp show --json`

Columns: the experiment, the params that differ between the rows shown, and
the metrics that answer the project's questions: masked loss over chance per
pretraining iteration, label PNMI per iteration, the best layer minus MFCC
(same K and frame rate), and zh CER / en WER of the scratch, iter1 and iter2
fine-tunings, and how many flags the report raised (``metrics/answers.json``). A row
that lacks a metric shows "-".
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

# (column, metrics file, dotted key)
HEADLINE = (
    ("loss1/chance", "metrics/pretrain_iter1.json", "loss_m.last_over_chance"),
    ("loss2/chance", "metrics/pretrain_iter2.json", "loss_m.last_over_chance"),
    ("pnmi1", "metrics/labels_iter1.json", "pnmi_conditional"),
    ("pnmi2", "metrics/labels_iter2.json", "pnmi_conditional"),
    ("layer-mfcc", "metrics/layers_iter1.json", "best_minus_mfcc_at_layer_rate"),
    *((f"{v} {m}", "metrics/eval.json", f"{v}.{lang}.{m}.rate")
      for v in ("scratch", "iter1", "iter2") for lang, m in (("zh", "cer"), ("en", "wer"))),
    ("flags", "metrics/answers.json", "flags.count"),
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def rows(exp_show: list[dict]) -> list[dict[str, Any]]:
    """(name, params, metrics) of every row of ``dvc exp show --json``: the workspace,
    each commit, and each commit's experiments."""

    def row(entry: dict) -> dict[str, Any] | None:
        data = entry.get("data") or {}
        if not data:
            return None
        params = {k: v for f in (data.get("params") or {}).values() for k, v in flatten(f.get("data") or {}).items()}
        metrics = {name: (f.get("data") or {}) for name, f in (data.get("metrics") or {}).items()}
        rev = entry.get("rev") or ""
        name = entry.get("name") or (rev if rev == "workspace" else rev[:7])
        return {"name": name, "params": params, "metrics": metrics}

    out = []
    for baseline in exp_show:
        found = row(baseline)
        if found:
            out.append(found)
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                found = row({**rev, "name": rev.get("name") or experiment.get("name")})
                if found:
                    out.append(found)
    return out


def _metric(metrics: dict[str, Any], path: str, key: str) -> Any:
    value: Any = metrics.get(path, {})
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def headline(table: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the headline table; params are those whose values differ between rows."""
    keys = sorted({k for r in table for k in r["params"]})
    differ = [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True) for r in table}) > 1]
    header = ["experiment", *differ, *(c for c, _, _ in HEADLINE)]
    body = []
    for r in table:
        cells = [r["name"], *(json.dumps(r["params"].get(k)) if not isinstance(r["params"].get(k), str)
                              else r["params"][k] for k in differ)]
        for _, path, key in HEADLINE:
            value = _metric(r["metrics"], path, key)
            cells.append(f"{value:.4g}" if isinstance(value, (int, float)) else "-")
        body.append(cells)
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"


def main(argv: list[str] | None = None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    proc = subprocess.run(["dvc", "exp", "show", "--json", *args], capture_output=True, text=True, check=True)
    text = markdown(*headline(rows(json.loads(proc.stdout))))
    print(text, end="")
    return text


if __name__ == "__main__":
    main()
