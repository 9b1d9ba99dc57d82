"""The experiment workflow on the tiny profile, end to end through real DVC in a throwaway
clone (tests/_exp_fixtures.py): ``dvc exp run -S`` through the Hydra composition, a queued
sweep, ``dvc metrics diff`` / ``dvc plots diff`` between experiments one parameter apart,
the headline view (hubert.experiments), and resume in queued runs.

The parameter is ``finetune.variants.iter1.max_update`` (30 in the tiny profile): late and
cheap (only finetune@iter1, evaluate and export depend on it; nothing upstream re-runs). A longer
max_update resumes the finished run from its checkpoint at update 30, in the workspace and
in the queue's temporary workspaces alike: fairseq's checkpoints are a cached ``persist``
output, so ``dvc checkout`` puts them there.
"""

from __future__ import annotations

import re

import pytest

from hubert.experiments import HEADLINE
from tests._exp_fixtures import KEY

pytestmark = pytest.mark.slow

# clocks: they differ between any two runs
CLOCKS = {"decode_s", "train_s", "s_per_update", "wall_time_s", "audio_s_per_s"}
RESUMED = "finetune iter1: resuming from data/finetune/iter1/checkpoints/checkpoint_last.pt at update 30"


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def moved(diff: dict) -> set[str]:
    """``file:key`` of every metric that ``dvc metrics diff --json`` says changed, clocks left out."""
    return {f"{path}:{key}" for path, keys in diff.items() for key, d in keys.items()
            if key.rsplit(".", 1)[-1] not in CLOCKS and d.get("old") != d.get("new")}


def exp_rows(clone) -> dict[str, dict]:
    """name -> params and metrics (flat, clocks left out) of the experiments in ``dvc exp show --json``."""
    out = {}
    for baseline in clone.json("exp", "show", "--json"):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = flat((data.get("params") or {}).get("params.yaml", {}).get("data") or {})
                metrics = {f"{p}:{k}": v for p, m in (data.get("metrics") or {}).items()
                           for k, v in flat(m.get("data") or {}).items() if k.rsplit(".", 1)[-1] not in CLOCKS}
                out[rev.get("name") or exp.get("name")] = {"params": params, "metrics": metrics}
    return out


def test_one_key_reruns_only_what_reads_it_and_resumes(tiny_exp_longer):
    ran = re.findall(r"Running stage '([^']+)'", tiny_exp_longer)
    assert ran[0] == "finetune@iter1" and ran[-1] == "report" and sorted(ran[1:-1]) == ["evaluate", "export"], ran
    assert RESUMED in tiny_exp_longer


def test_metrics_diff_moves_the_fine_tuning_metrics_and_no_other(tiny_exp_clone, tiny_exp_longer):
    changed = moved(tiny_exp_clone.json("metrics", "diff", "HEAD", "iter1-40", "--json"))
    assert {"metrics/finetune/iter1.json:updates", "metrics/finetune/iter1.json:loss.last"} <= changed
    # nothing of pretraining, labels or the other variants. The scores move only with iter1's model:
    # the stage exports the best by valid error, which 10 more updates may or may not replace
    # (the report's answers quote the best model's scores and its differences from iter1, and count flags)
    iter1 = re.compile(r"metrics/(finetune/iter1\.json:|eval\.json:(iter1\.|compare\.(iter1_minus_|\w+_minus_iter1\.))"
                       r"|export\.json:finetune\.iter1\.|answers\.json:(downstream|flags)\.)")
    assert all(iter1.match(c) for c in changed), sorted(c for c in changed if not iter1.match(c))
    if "metrics/finetune/iter1.json:best_update" not in changed:  # the same model: the same scores
        assert all(c.startswith("metrics/finetune/iter1.json:") for c in changed), changed


def test_plots_diff_overlays_the_longer_curve_only(tiny_exp_clone, tiny_exp_longer):
    plots = tiny_exp_clone.json("plots", "diff", "HEAD", "iter1-40", "--json", "--split")["data"]
    rows = {plot_id: [r for entry in entries for r in entry["anchor_definitions"]["<DVC_METRIC_DATA>"]]
            for plot_id, entries in plots.items() if plot_id.endswith(".tsv")}

    def by_rev(plot_id):
        out = {}
        for r in rows[plot_id]:
            out.setdefault(r["rev"], []).append({k: v for k, v in r.items() if k != "rev"})
        return out

    loss = by_rev("dvclive/finetune/iter1/plots/metrics/train/loss.tsv")
    assert [max(int(r["step"]) for r in loss[rev]) for rev in ("HEAD", "iter1-40")] == [30, 40]
    # the resumed run's curve continues the baseline's: the same points up to update 30
    assert loss["iter1-40"][:len(loss["HEAD"])] == loss["HEAD"]
    others = [p for p in rows if "/finetune/iter1/" not in p]
    assert any("pretrain_iter1" in p for p in others) and any("finetune/iter2/" in p for p in others)
    for plot_id in others:
        curves = by_rev(plot_id)
        if "audio_s_per_s" not in plot_id:  # a clock
            assert curves["HEAD"] == curves["iter1-40"], plot_id


def test_queued_sweep_resumes_and_matches_the_workspace_run(tiny_exp_clone, tiny_exp_sweep, tiny_exp_longer):
    rows = exp_rows(tiny_exp_clone)
    assert {"q-35", "q-40", "iter1-40"} <= set(rows)
    assert [rows[n]["params"][KEY] for n in ("q-35", "q-40", "iter1-40")] == [35, 40, 40]
    # the queue's temporary workspaces get the baseline's checkpoints from the cache and continue
    # from update 30 instead of starting over (with `cache: false` they started pretrain_iter1 over)
    for name, log in tiny_exp_sweep.items():
        assert RESUMED in log, name
        assert "starting from update 0" not in log, name
    # resumed from the same checkpoint, the queued run of 40 trains the same model as the workspace
    # run of 40; one that started over would not (the learning-rate schedule depends on max_update)
    finetune = {n: {k: v for k, v in rows[n]["metrics"].items() if k.startswith("metrics/finetune/iter1.json:")}
                for n in rows}
    assert finetune["q-40"] == finetune["iter1-40"]
    assert finetune["q-35"]["metrics/finetune/iter1.json:updates"] == 35
    changed = moved(tiny_exp_clone.json("metrics", "diff", "q-35", "q-40", "--json"))
    assert "metrics/finetune/iter1.json:updates" in changed
    assert all(c.startswith("metrics/finetune/iter1.json:") for c in changed), changed


def test_headline_view_is_narrow_and_names_the_differing_param(tiny_exp_clone, tiny_exp_sweep, tiny_exp_longer):
    text = tiny_exp_clone.run("python", "-m", "hubert.experiments").stdout
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["experiment", KEY, *(c for c, _, _ in HEADLINE)]
    assert len(header) <= 15
    cells = {row[0]: row for row in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert [cells[n][1] for n in ("q-35", "q-40", "iter1-40")] == ["35", "40", "40"]
    assert all(cells["iter1-40"][header.index(c)] not in ("", "-") for c, _, _ in HEADLINE)
