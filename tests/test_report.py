"""The report: every verdict and flag from crafted metrics, the pipeline page with
real figures, and explaining fairseq logs from anywhere (the seed's numbers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hubert.report import explain
from hubert.report.answers import downstream_answer, flags_answer, labels_answer
from hubert.report.curves import Curve, Curves, from_records, read_log
from hubert.report.findings import (
    balance_findings,
    batch_findings,
    downstream_findings,
    label_findings,
    pretrain_findings,
)
from hubert.report.page import pipeline_report
from stages import report as report_stage

CHANCE_100 = math.log2(104)
CHANCE_500 = math.log2(504)


def codes(findings) -> dict[str, bool]:
    return {f.code: f.flag for f in findings}


def run_curves(first: float, last: float, *, n: int = 50, acc=(0.01, 0.3), pen=(3.0, 0.05), valid=None,
               extra: dict | None = None) -> Curves:
    """A train curve falling linearly from first to last over n records of 10 updates."""
    steps = np.arange(1, n + 1) * 10.0
    c = Curves({"train": {"loss_m": Curve(steps, np.linspace(first, last, n)),
                          "accuracy_m": Curve(steps, np.linspace(*acc, n)),
                          "features_pen": Curve(steps, np.linspace(*pen, n))}})
    if valid is not None:
        vsteps = np.linspace(steps[0], steps[-1], len(valid))
        c.splits["valid"] = {"loss_m": Curve(vsteps, np.array(valid, dtype=float))}
    for name, values in (extra or {}).items():
        c.splits["train"][name] = Curve(steps, np.asarray(values, dtype=float))
    return c


# ---------------------------------------------------------------- pretraining verdicts and flags
def test_healthy_run_gets_verdicts_without_flags():
    f = pretrain_findings("iteration 1", 100, run_curves(6.78, 3.4, valid=[7.0, 5.9, 4.9, 3.8]), prior=6.39,
                          iteration=1)
    got = codes(f)
    assert got == {"start_at_chance": False, "below_prior": False, "accuracy_rising": False, "reference": False,
                   "gap": False}
    text = " ".join(x.text for x in f)
    assert "chance level of 104 classes" in text and "2.99 bits below the label prior H(z) = 6.39" in text
    assert "3.14 bits (0.47 of chance) after 400k updates" in text


def test_first_loss_far_from_chance_is_flagged():
    got = codes(pretrain_findings("it", 100, run_curves(CHANCE_500, 3.0), prior=6.4))
    assert got["first_loss_off_chance"] is True and "start_at_chance" not in got


def test_log_starting_late_is_not_judged_against_chance():
    c = run_curves(5.0, 4.0)
    c.splits["train"]["loss_m"] = Curve(c.get("train", "loss_m").steps + 5000, c.get("train", "loss_m").values)
    f = pretrain_findings("it", 100, c)
    assert "first_loss_off_chance" not in codes(f) and "starts at update 5010" in f[0].text


def test_loss_not_below_prior_is_flagged():
    assert codes(pretrain_findings("it", 100, run_curves(6.7, 6.45), prior=6.39))["not_below_prior"] is True


def test_accuracy_not_rising_is_flagged():
    assert codes(pretrain_findings("it", 100, run_curves(6.7, 6.0, acc=(0.05, 0.052))))["accuracy_not_rising"]


def test_nan_is_flagged():
    c = run_curves(6.7, 3.0)
    values = c.get("train", "loss_m").values.copy()
    values[-1] = np.nan
    c.splits["train"]["loss_m"] = Curve(c.get("train", "loss_m").steps, values)
    assert codes(pretrain_findings("it", 100, c))["non_finite"] is True


def test_collapsing_loss_scale_is_flagged_and_a_healthy_one_is_not():
    collapsing = run_curves(6.7, 3.0, extra={"loss_scale": np.geomspace(128, 0.125, 50)})
    assert codes(pretrain_findings("it", 100, collapsing))["loss_scale_collapse"] is True
    healthy = run_curves(6.7, 3.0, extra={"loss_scale": np.full(50, 64.0)})
    assert codes(pretrain_findings("it", 100, healthy))["loss_scale_ok"] is False
    gave_up = run_curves(6.7, 3.0)
    gave_up.min_loss_scale_reached = True
    assert codes(pretrain_findings("it", 100, gave_up))["loss_scale_collapse"] is True


def test_widening_train_valid_gap_is_flagged():
    # train falls 6.7 -> 3.0 while valid rises: the gap grows at every validation
    got = codes(pretrain_findings("it", 100, run_curves(6.7, 3.0, valid=[6.5, 6.0, 6.1, 6.3])))
    assert got["gap_widening"] is True
    assert codes(pretrain_findings("it", 100, run_curves(6.7, 3.0, valid=[6.9, 5.8, 4.6, 3.4])))["gap"] is False


def test_missing_masked_loss_is_flagged():
    assert codes(pretrain_findings("it", 100, Curves({"train": {}})))["no_masked_loss"] is True


# ---------------------------------------------------------------- batch, balance, labels, downstream
def batch(workers: int, max_tokens: int, update_freq: int = 1) -> dict:
    samples = workers * max_tokens * update_freq
    return {"workers": workers, "max_tokens": max_tokens, "update_freq": update_freq,
            "hours_per_update": samples / 16000 / 3600, "ratio_to_reference": samples / (32 * 1_400_000)}


def test_the_seeds_batch_is_one_eighth_and_update_freq_8_closes_it():
    f = batch_findings("batch", batch(4, 1_400_000))
    assert codes(f) == {"batch_far_below_reference": True}
    assert "0.125 of fairseq's 32 x 1,400,000" in f[0].text and "update_freq 8 would match it" in f[0].text
    assert codes(batch_findings("batch", batch(4, 1_400_000, 8))) == {"batch": False}
    cpu = batch_findings("batch", batch(2, 320_000), on_gpus=False)[0].text
    assert "on 2 processes update_freq 70 would match it" in cpu


def test_a_language_starved_after_balancing_is_flagged():
    starved = {"pretrain": {"hours_after": {"en": 10.0, "zh": 1.0}, "hours_before": {"en": 10.0, "zh": 1.0}}}
    assert codes(balance_findings(starved)) == {"language_underrepresented": True}
    fine = {"pretrain": {"hours_after": {"en": 10.0, "zh": 6.0}, "hours_before": {"en": 10.0, "zh": 3.0}}}
    assert codes(balance_findings(fine)) == {"balance": False}


def labels_metrics(pnmi: float, floor: float, k: int = 100, rate: float = 100.0) -> dict:
    return {"n_clusters": k, "label_rate": rate, "pnmi_conditional": pnmi, "pnmi_conditional_shuffled": floor,
            "phone_purity": 0.3, "cluster_purity": 0.4,
            "per_language": {"en": {"pnmi": pnmi - 0.05, "pnmi_shuffled": floor},
                             "zh": {"pnmi": pnmi + 0.05, "pnmi_shuffled": floor}}}


def layers_metrics(best: float, mfcc: float) -> dict:
    return {"best_layer": 2, "best_pnmi": best, "seed_spread": 0.005, "n_layers": 2, "n_clusters": 100,
            "label_rate": 50.0,
            "mfcc_at_layer_rate": {"pnmi_conditional": mfcc, "pnmi_conditional_shuffled": 0.02,
                                   "pnmi_en": mfcc - 0.05, "pnmi_zh": mfcc + 0.05},
            "pnmi_conditional": {"layer_1": best - 0.01, "layer_2": best},
            "pnmi_conditional_std": {"layer_1": 0.002, "layer_2": 0.003},
            "pnmi_en": {"layer_1": best - 0.05, "layer_2": best - 0.04},
            "pnmi_zh": {"layer_1": best + 0.03, "layer_2": best + 0.05}}


def test_labels_at_their_shuffled_floor_are_flagged():
    assert codes(label_findings({1: labels_metrics(0.03, 0.02)}, None)) == {"pnmi_at_floor": True}


def test_iteration_2_labels_against_mfcc_at_the_same_k_and_rate():
    worse = label_findings({1: labels_metrics(0.5, 0.01), 2: labels_metrics(0.36, 0.03, rate=50.0)},
                           layers_metrics(0.40, 0.45))
    text = {f.code: f.text for f in worse}
    assert "less phone-like than MFCC labels" in text["iter2_not_better"] and "(PNMI 0.360 vs 0.450)" in \
        text["iter2_not_better"]
    # the advice does not say "train longer" unconditionally: longer training helps only while the layer rises
    assert "while its best layer still rises with updates, train longer" in text["iter2_not_better"]
    assert "below MFCC's 0.450" in text["layer_vs_mfcc"]
    better = codes(label_findings({2: labels_metrics(0.52, 0.03, rate=50.0)}, layers_metrics(0.50, 0.45)))
    assert better["iter2_beats_mfcc"] is False  # a verdict, not a flag
    # at another K the comparison is not made (PNMI grows with K)
    assert "iter2_beats_mfcc" not in codes(label_findings({2: labels_metrics(0.6, 0.03, k=500, rate=50.0)},
                                                          layers_metrics(0.50, 0.45)))


def evaluation() -> dict:
    def rates(zh: float, en: float) -> dict:
        return {"zh": {"cer": {"rate": zh, "low": zh - 0.02, "high": zh + 0.02}},
                "en": {"wer": {"rate": en, "low": en - 0.02, "high": en + 0.02}}}

    return {"scratch": rates(0.95, 0.99), "iter1": rates(0.40, 0.80),
            "floors": {"zh": {"constant_cer": 0.91}, "en": {"constant_wer": 0.87}},
            "compare": {"iter1_minus_scratch": {"zh_cer": {"difference": -0.21, "low": -0.24, "high": -0.18},
                                                "en_wer": {"difference": 0.01, "low": -0.01, "high": 0.03}},
                        "scratch_minus_iter1": {"zh_cer": {"difference": 0.21, "low": 0.18, "high": 0.24}}}}


def test_downstream_verdicts_quote_percentage_points_and_intervals():
    f = downstream_findings(evaluation())
    texts = [x.text for x in f]
    assert "iter1 beats scratch by 21.0 pp of zh CER [18.0, 24.0]" in texts
    assert any(t.startswith("iter1 and scratch are not distinguishable in en WER") for t in texts)
    assert "scratch is worse than iter1 by 21.0 pp of zh CER [18.0, 24.0]" in texts
    flagged = [x for x in f if x.flag]
    assert [x.code for x in flagged] == ["no_better_than_constant"] and flagged[0].text.startswith("scratch")


# ---------------------------------------------------------------- the pipeline's page
def write_tsv(path: Path, name: str, steps, values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{name}\n" + "".join(f"{s}\t{v}\n" for s, v in zip(steps, values, strict=True)))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    metrics, live = tmp_path / "metrics", tmp_path / "dvclive"
    metrics.mkdir()
    for it, (units, first, last, prior) in {1: (100, 6.8, 3.5, 6.39), 2: (100, 6.9, 5.6, 6.55)}.items():
        b = batch(1, 320000)
        (metrics / f"pretrain_iter{it}.json").write_text(json.dumps({
            "labels": {"units": units, "prior_entropy_bits": prior},
            "loss_m": {"first": first, "last": last, "last_over_chance": last / math.log2(units + 4),
                       "valid_last": last + 1},
            "accuracy_m": {"last": 0.3}, "training": {"updates": 500, "wall_time_s": 600.0, "audio_s_per_s": 40.0},
            "batch": b}))
        steps = list(range(10, 510, 10))
        plots = live / f"pretrain_iter{it}" / "plots" / "metrics"
        write_tsv(plots / "train/loss_m.tsv", "loss_m", steps, np.linspace(first, last, 50))
        write_tsv(plots / "train/accuracy_m.tsv", "accuracy_m", steps, np.linspace(0.02, 0.3, 50))
        write_tsv(plots / "train/features_pen.tsv", "features_pen", steps, np.linspace(3.2, 0.01, 50))
        write_tsv(plots / "train/lr.tsv", "lr", steps, np.linspace(1e-4, 5e-4, 50))
        write_tsv(plots / "train/audio_s_per_s.tsv", "audio_s_per_s", steps, np.full(50, 40.0))
        for split in ("valid", "valid_en", "valid_zh"):
            write_tsv(plots / f"{split}/loss_m.tsv", "loss_m", [250, 500], [first - 0.5, last + 1])
    (metrics / "labels_iter1.json").write_text(json.dumps(labels_metrics(0.50, 0.01)))
    (metrics / "labels_iter2.json").write_text(json.dumps(labels_metrics(0.41, 0.035, rate=50.0)))
    (metrics / "layers_iter1.json").write_text(json.dumps(layers_metrics(0.43, 0.51)))
    (metrics / "balance.json").write_text(json.dumps(
        {"pretrain": {"hours_after": {"en": 0.67, "zh": 0.56}, "hours_before": {"en": 0.67, "zh": 0.47}}}))
    (metrics / "eval.json").write_text(json.dumps(evaluation()))
    return tmp_path


def assert_real_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # something is drawn on it, not a blank canvas


def test_pipeline_report_writes_page_figures_and_a_self_contained_html(run_dir: Path):
    out = run_dir / "report"
    findings = pipeline_report(run_dir / "metrics", run_dir / "dvclive", out, {1: False, 2: False}, profile="demo")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["downstream.png", "labels.png", "loss.png", "loss_normalised.png", "training.png"]
    for p in out.glob("*.png"):
        assert_real_png(p)
    md = (out / "index.md").read_text()
    for name in pngs:
        assert f"]({name})" in md
    # error rates in percent, their paired differences in percentage points, one row per pair
    assert "| iter1 | 40.0 [38.0, 42.0] | 80.0 [78.0, 82.0] | - |" in md
    assert "| iter1 - scratch | -21.0 [-24.0, -18.0] better | +1.0 [-1.0, +3.0] tie | - |" in md
    assert "**Flag (batch, iteration 1)**" in md and "update_freq 140 would match it" in md
    assert "less phone-like than MFCC labels" in md and "issues/4907" in md and "issues/5526" in md
    html = (out / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(pngs) and 'src="loss.png"' not in html
    assert "<table>" in html
    assert {f.code for f in findings} >= {"start_at_chance", "below_prior", "iter2_not_better", "beats"}


def test_pipeline_report_is_byte_stable(run_dir: Path):
    a, b = run_dir / "a", run_dir / "b"
    for out in (a, b):
        pipeline_report(run_dir / "metrics", run_dir / "dvclive", out, {1: False, 2: False},
                        answers_out=out / "answers.json")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes(), p.name


def test_stages_that_have_not_run_are_named(run_dir: Path):
    (run_dir / "metrics" / "eval.json").unlink()
    (run_dir / "metrics" / "pretrain_iter2.json").unlink()
    out = run_dir / "report"
    pipeline_report(run_dir / "metrics", run_dir / "dvclive", out, {1: False, 2: False})
    md = (out / "index.md").read_text()
    assert "Stage `evaluate` has not run" in md and "Stage `pretrain_iter2` has not run" in md
    assert not (out / "downstream.png").exists()


def test_a_corpus_without_alignments_is_reported_without_label_quality(run_dir: Path):
    """An imported corpus without phone alignments: the label metrics have no PNMI and the
    layer sweep ranks nothing; the page says so instead of failing."""
    metrics = run_dir / "metrics"
    for it, rate in ((1, 100.0), (2, 50.0)):
        (metrics / f"labels_iter{it}.json").write_text(json.dumps(
            {"n_clusters": 100, "label_rate": rate, "utterances": {"total": 20, "aligned": 0}}))
    (metrics / "layers_iter1.json").write_text(json.dumps(
        {"n_layers": 2, "n_clusters": 100, "label_rate": 50.0, "utterances": 20, "aligned_utterances": 0}))
    out = run_dir / "report"
    findings = pipeline_report(metrics, run_dir / "dvclive", out, {1: False, 2: False})
    assert [f.code for f in findings if f.topic.startswith("labels")] == ["no_alignments", "no_alignments"]
    assert "No phone alignments" in (out / "index.md").read_text() and not (out / "labels.png").exists()


def test_report_stage_reads_gpus_from_params(run_dir: Path, tmp_path: Path):
    params = tmp_path / "params.yaml"
    import yaml

    from hubert.params import compose
    composed = yaml.safe_load(compose(Path(__file__).resolve().parent.parent / "params", ["profile=tiny"]))
    hardware = {**composed["pretrain"]["hardware"], "gpus": 4, "precision": "bf16", "num_workers": 2}
    nulls = dict.fromkeys(hardware)
    composed["pretrain"]["hardware"] = hardware
    composed["pretrain"]["iter2"]["hardware"] = nulls
    params.write_text(yaml.safe_dump(composed))
    for it in (1, 2):  # a run on 4 GPUs: its metrics say 4 workers
        path = run_dir / "metrics" / f"pretrain_iter{it}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "batch": batch(4, 320000)}))
    findings = report_stage.main(["--params", str(params), "--metrics", str(run_dir / "metrics"), "--live",
                                  str(run_dir / "dvclive"), "--out", str(tmp_path / "out"),
                                  "--answers", str(tmp_path / "answers.json")])
    text = next(f.text for f in findings if f.code == "batch_far_below_reference")
    assert "on 4 GPUs update_freq 35 would match it" in text  # 32 x 1.4M / (4 x 320000) = 35
    assert json.loads((tmp_path / "answers.json").read_text())["flags"]["count"] >= 1


# ---------------------------------------------------------------- the answers block
def test_the_page_opens_with_one_answer_per_question_and_writes_their_numbers(run_dir: Path):
    out = run_dir / "report"
    pipeline_report(run_dir / "metrics", run_dir / "dvclive", out, {1: False, 2: False},
                    answers_out=run_dir / "answers.json")
    md = (out / "index.md").read_text()
    head, rest = md.split("## Answers\n\n", 1)[1].split("\n## ", 1)
    assert rest.startswith("Data") and md.index("## Answers") < md.index("## Pretraining")
    lines = head.strip().split("\n")
    assert [line.split("**")[1] for line in lines] == [
        "Is the loss normal?", "Did iteration 2 give better labels?", "Which layer of the iteration-1 model?",
        "Which fine-tuned model transcribes best?", "How many flags?"]
    assert ("iteration 1: yes, 6.80 bits at the start against chance 6.70 (+1%), 3.50 after 500 updates, "
            "2.89 below the label prior 6.39") in lines[0]
    assert "no: iteration-2 PNMI 0.410 at K=100, 50 Hz is not above MFCC (iteration 1's kind) labels' 0.510" in lines[1]
    assert "layer 2 of 2: PNMI 0.430, below MFCC's 0.510 at K=100, 50 Hz (-0.080" in lines[2]
    assert "zh CER: iter1, 40.0% [38.0, 42.0]; -21.0 pp [-24.0, -18.0] against scratch (better)" in lines[3]
    assert "en WER: iter1, 80.0% [78.0, 82.0]; +1.0 pp [-1.0, +3.0] against scratch (not distinguishable)" in lines[3]
    assert lines[4].endswith("2 (pretraining 1, downstream 1), each beside its topic below.")
    # each flag sits in its topic's section, not in a list of its own
    assert md.index("**Flag (batch, iteration 1)**") > md.index("## Pretraining")
    assert md.index("**Flag (downstream)**") > md.index("## Downstream")
    numbers = json.loads((run_dir / "answers.json").read_text())
    assert numbers["loss"]["iter1"] == {"first_over_chance": 1.0149, "last_minus_prior_bits": -2.89,
                                        "updates": 500, "normal": True}
    assert numbers["labels_iter2"]["better"] is False and numbers["labels_iter2"]["iter2_minus_mfcc"] == -0.1
    assert numbers["layer"] == {"best_layer": 2, "best_pnmi": 0.43, "best_minus_mfcc": -0.08,
                                "seed_spread": 0.005, "above_mfcc": False}
    assert numbers["downstream"]["zh_cer"]["minus_scratch_pp"] == -21.0
    assert numbers["downstream"]["zh_cer"]["below_floor"] is True
    assert numbers["flags"] == {"count": 2, "pretraining": 1, "downstream": 1}


def test_iteration_2_labels_are_better_only_net_of_the_shuffled_floors_too():
    layers = layers_metrics(0.45, 0.44)  # MFCC 0.44 at 50 Hz, its shuffled floor 0.02
    win, got = labels_answer({2: labels_metrics(0.46, 0.03, rate=50.0)}, layers)
    assert win.text.startswith("yes: iteration-2 PNMI 0.460") and got["better"] is True
    assert got["iter2_minus_mfcc"] == 0.02 and got["iter2_minus_mfcc_net_of_floor"] == 0.01
    # ahead by more than the seed spread, but only by a larger finite-sample floor: not better
    lost, got = labels_answer({2: labels_metrics(0.46, 0.05, rate=50.0)}, layers)
    assert lost.text.startswith("no:") and got["better"] is False and got["iter2_minus_mfcc_net_of_floor"] == -0.01
    # iteration-1 labels at iteration 2's rate and K are compared too
    _, got = labels_answer({1: labels_metrics(0.47, 0.01, rate=50.0), 2: labels_metrics(0.46, 0.03, rate=50.0)},
                           layers)
    assert got["better"] is False and got["iter2_minus_iter1"] == -0.01
    # at another K nothing is compared, and the answer says why
    other, got = labels_answer({2: labels_metrics(0.6, 0.03, k=500, rate=50.0)}, layers)
    assert other.text.startswith("not measured: no MFCC or iteration-1 labels at iteration 2's K=500") and got == {}


def test_the_best_model_is_quoted_against_scratch_and_iter1_or_says_the_pair_is_missing():
    ev = evaluation()
    ev["iter2"] = {"zh": {"cer": {"rate": 0.30, "low": 0.28, "high": 0.32}},
                   "en": {"wer": {"rate": 0.90, "low": 0.88, "high": 0.92}}}
    ev["compare"]["iter2_minus_scratch"] = {"zh_cer": {"difference": -0.65, "low": -0.68, "high": -0.62}}
    ev["compare"]["iter2_minus_iter1"] = {"zh_cer": {"difference": -0.10, "low": -0.12, "high": -0.08}}
    answer, got = downstream_answer(ev)
    assert ("zh CER: iter2, 30.0% [28.0, 32.0]; -65.0 pp [-68.0, -62.0] against scratch (better); -10.0 pp "
            "[-12.0, -8.0] against iter1 (better)") in answer.text
    assert got["zh_cer"]["best"] == "iter2" and got["zh_cer"]["minus_iter1_pp"] == -10.0
    del ev["compare"]["iter2_minus_iter1"]
    answer, _ = downstream_answer(ev)
    assert "against iter1: not compared (add [iter2, iter1] to evaluate.compare)" in answer.text
    # the best of a set that never learned says so
    for v in ("iter1", "iter2"):
        ev[v]["en"]["wer"] = {"rate": 0.995, "low": 0.99, "high": 1.0}
    answer, got = downstream_answer(ev)
    assert "NO better than one constant output (87.0%)" in answer.text and got["en_wer"]["below_floor"] is False


def test_a_run_without_flags_says_nothing_looks_wrong():
    answer, got = flags_answer([])
    assert answer.text == "0: nothing looks wrong" and got == {"count": 0}


# ---------------------------------------------------------------- explaining a log from anywhere
CONFIG_DUMP = ("[2024-05-01 10:00:00,000][fairseq_cli.train][INFO] - {'_name': None, 'common': {'_name': None, "
               "'no_progress_bar': False, 'log_interval': 200, 'log_format': 'json', 'fp16': True, "
               "'memory_efficient_fp16': False, 'bf16': False}, 'distributed_training': {'_name': None, "
               "'distributed_world_size': 4}, 'dataset': {'_name': None, 'max_tokens': 1400000, "
               "'max_tokens_valid': 1400000}, 'optimization': {'_name': None, 'max_update': 400000, "
               "'update_freq': [1], 'lr': [0.00025]}}\n")


def seed_log(path: Path, units: int, first_total: float, last_total: float, pen0: float,
             fmt: str = "json") -> Path:
    """A made-up hydra_train.log of a run whose total loss goes first_total -> last_total, with the
    masked loss starting at chance and a feature penalty that fades, as in the seed's report."""
    chance = math.log2(units + 4)
    lines = [CONFIG_DUMP]
    n = 40
    for i in range(n):
        step = (i + 1) * 200
        pen = pen0 * 0.9 ** i if i else first_total - chance
        loss_m = chance + (last_total - 0.1 - chance) * (1 - math.exp(-4 * i / (n - 1))) / (1 - math.exp(-4))
        total = loss_m + (pen if i < n - 1 else 0.1)
        stats = {"epoch": 1, "update": i / 10, "loss": f"{total:.3f}", "loss_m_0": f"{loss_m:.3f}",
                 "loss_features_pen": f"{pen if i < n - 1 else 0.1:.3f}", "correct_m_0": f"{0.01 + 0.35 * i / n:.4f}",
                 "count_m_0": "4600", "loss_scale": "64", "num_updates": str(step), "lr": "0.00025"}
        if fmt == "json":
            lines.append(f"[2024-05-01 10:00:{i:02d},000][train_inner][INFO] - {json.dumps(stats)}\n")
        else:
            pairs = ", ".join(f"{k}={v}" for k, v in stats.items() if k not in ("epoch", "update"))
            lines.append(f"[2024-05-01 10:00:{i:02d},000][train_inner][INFO] - epoch 001:  {step} / 9999 {pairs}\n")
        if step % 2000 == 0:
            valid = {"epoch": 1, "valid_loss": f"{total + 0.3:.3f}", "valid_loss_m_0": f"{loss_m + 0.3:.3f}",
                     "valid_correct_m_0": "0.3", "valid_num_updates": str(step)}
            lines.append(f"[2024-05-01 10:01:00,000][valid][INFO] - {json.dumps(valid)}\n")
    lines.append("[2024-05-01 10:02:00,000][fairseq.trainer][INFO] - NOTE: gradient overflow detected, ignoring "
                 "gradient, setting loss scale to: 32.0\n")
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("fmt", ["json", "simple"])
def test_explain_the_seeds_iteration_1_log(tmp_path: Path, capsys, fmt: str):
    log = seed_log(tmp_path / "hydra_train.log", 100, 6.7, 3.3, 0.5, fmt)
    records, curves, config = read_log(log)
    assert config == {"distributed_world_size": 4, "max_tokens": 1400000, "update_freq": 1, "fp16": True,
                      "bf16": False}
    assert curves.get("train", "loss").first == pytest.approx(6.7, abs=1e-3)
    assert curves.get("train", "loss").last == pytest.approx(3.3, abs=1e-3)
    assert curves.overflows == 1
    assert explain.main([str(log), "--k", "100", "--iteration", "1", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"began at {CHANCE_100:.2f} bits of masked loss" in out and "chance level of 104 classes" in out
    assert "FLAG batch: effective batch 4 x 1,400,000 samples" in out and "update_freq 8 would match it" in out
    assert "the label prior H(z) is unknown" in out and "3.14 bits (0.47 of chance)" in out
    assert "fp16 loss scale healthy" in out and "1 overflow notes" in out
    for name in ("loss.png", "loss_normalised.png", "training.png"):
        assert_real_png(tmp_path / "out" / name)


def test_explain_the_seeds_iteration_2_log_with_its_dictionary_and_labels(tmp_path: Path, capsys):
    log = seed_log(tmp_path / "hydra_train.log", 500, 11.2, 4.0, 2.2)
    (tmp_path / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(500)))
    rng = np.random.default_rng(0)
    (tmp_path / "train.km").write_text("\n".join(" ".join(map(str, rng.integers(0, 500, 200))) for _ in range(50)))
    assert explain.main([str(log), "--dict", str(tmp_path / "dict.km.txt"), "--labels", str(tmp_path / "train.km"),
                         "--iteration", "2", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    pen = 11.2 - CHANCE_500
    assert f"began at {CHANCE_500:.2f} bits of masked loss + {pen:.2f} bits of feature penalty = 11.20: the " \
           "chance level of 504 classes" in out
    assert "below the label prior H(z) = 8.9" in out  # 10,000 uniform draws of 500 units: just under log2(500)
    assert "3.42 bits (0.38 of chance) after 400k updates" in out
    md = (tmp_path / "out" / "index.md").read_text()
    assert "K = 500" in md and "issues/5526" in md


def test_explain_names_the_keys_a_log_lacks(tmp_path: Path, capsys):
    log = tmp_path / "train.log"
    log.write_text('[2024-05-01][train_inner][INFO] - {"loss": "3.2", "num_updates": "10", "lr": "0.1"}\n')
    assert explain.main([str(log), "--k", "100", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{log}: its training records lack loss_m_0, correct_m_0" in err and "keys found: loss, lr, num_updates" \
        in err
    empty = tmp_path / "empty.log"
    empty.write_text("nothing fairseq wrote\n")
    assert explain.main([str(empty), "--k", "100", "--out", str(tmp_path / "out")]) == 2
    assert "lack num_updates, loss_m_0, correct_m_0 (0 records" in capsys.readouterr().err
    assert explain.main([str(tmp_path / "missing.log"), "--k", "100", "--out", str(tmp_path / "o")]) == 2
    assert "missing.log: no such file" in capsys.readouterr().err


def test_explain_without_a_config_dump_asks_for_the_batch(tmp_path: Path, capsys):
    log = seed_log(tmp_path / "hydra_train.log", 100, 6.7, 3.3, 0.5)
    log.write_text("".join(line for line in log.read_text().splitlines(keepends=True) if "fairseq_cli" not in line))
    assert explain.main([str(log), "--k", "100", "--out", str(tmp_path / "out")]) == 0
    assert "give --gpus and --max-tokens" in capsys.readouterr().out
    assert explain.main([str(log), "--k", "100", "--gpus", "8", "--max-tokens", "1400000", "--update-freq", "4",
                         "--out", str(tmp_path / "out")]) == 0
    assert "FLAG batch" not in capsys.readouterr().out  # 8 x 1.4M x 4 = the reference batch


def test_records_of_end_of_epoch_lines_are_not_doubled():
    records = [("train_inner", {"num_updates": 10.0, "loss_m_0": 6.7}),
               ("train", {"num_updates": 10.0, "loss_m_0": 6.5}),
               ("valid_en", {"num_updates": 10.0, "loss_m_0": 6.9})]
    c = from_records(records)
    assert list(c.get("train", "loss_m").values) == [6.7] and c.valid_splits() == ["valid_en"]


def test_tonal_labels_show_the_toneless_scores_beside():
    tonal = {**labels_metrics(0.45, 0.02),
             "toneless": {"pnmi_conditional": 0.48, "per_language": {"zh": {"pnmi": 0.55}}}}
    sweep = {**layers_metrics(0.40, 0.45), "toneless_best_layer": 1, "toneless_best_pnmi": 0.41,
             "toneless_best_minus_mfcc_at_layer_rate": -0.06}
    sweep["mfcc_at_layer_rate"]["toneless_pnmi_conditional"] = 0.47
    text = {f.code: f.text for f in label_findings({1: tonal}, sweep)}
    assert "PNMI 0.450 (en 0.400, zh 0.500) with Mandarin tones; 0.480 without them (zh 0.550)" in text["pnmi"]
    assert "without Mandarin tones the best layer (1) scores 0.410 against MFCC's 0.470 (-0.060)" in \
        text["layer_vs_mfcc"]
    plain = {f.code: f.text for f in label_findings({1: labels_metrics(0.45, 0.02)}, layers_metrics(0.40, 0.45))}
    assert "tones" not in plain["pnmi"] and "tones" not in plain["layer_vs_mfcc"]
