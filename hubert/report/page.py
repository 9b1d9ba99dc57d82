"""The report page: ``index.md`` with its PNG figures beside it, and ``index.html``,
the same page with the figures inlined (one self-contained file).

:func:`pipeline_report` reads this pipeline's metrics and DVCLive curves;
:func:`log_report` explains one fairseq HuBERT training log from anywhere.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from markdown_it import MarkdownIt

from hubert.labels.quality import chance_bits
from hubert.params import load_params
from hubert.pretrain.params import iteration_params
from hubert.report import figures
from hubert.report.answers import answers, answers_markdown, bounds, pct, side
from hubert.report.curves import Curves, from_dvclive
from hubert.report.findings import (
    ISSUE_4907,
    ISSUE_5526,
    REFERENCES,
    SEED_RUN,
    Finding,
    balance_findings,
    batch_findings,
    downstream_findings,
    label_findings,
    length_findings,
    pretrain_findings,
    section_of,
)

ITERATIONS = (1, 2)
SOURCES = (f"- LibriSpeech 960 h, HuBERT Base, 32 GPUs x 1.4M samples: fairseq issue 4907 ({ISSUE_4907}): "
           + "; ".join(f"iteration {it}: masked loss {r.loss_m} bits, masked accuracy {r.accuracy_m} at "
                       f"{r.updates // 1000}k updates" for it, refs in REFERENCES.items() for r in refs),
           f"- zh + en, 4 GPUs x 1.4M samples and no update_freq (one eighth of the reference batch): fairseq "
           f"issue 5526 ({ISSUE_5526}): total loss "
           + "; ".join(f"iteration {it} (K={k}) {a} -> {b}" for it, (k, a, b) in SEED_RUN.items()))


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _not_run(stage: str, path: Path) -> str:
    return f"_Stage `{stage}` has not run: {path} is missing (`dvc repro {stage}`)._\n"


def findings_markdown(findings: list[Finding]) -> str:
    """Flags first, then the verdicts, each as one bullet naming its topic."""
    flags = [f for f in findings if f.flag]
    lines = [f"- **Flag ({f.topic})**: {f.text}." for f in flags]
    lines += [f"- {f.topic}: {f.text}." for f in findings if not f.flag]
    return "\n".join(lines) + "\n" if lines else ""


def _section(findings: list[Finding], name: str, skip: tuple[str, ...] = ()) -> str:
    """The findings of one report section (its flags first), before its tables."""
    mine = [f for f in findings if section_of(f.topic) == name and f.code not in skip]
    return findings_markdown(mine) + "\n" if mine else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _interval(m: dict) -> str:
    """An error rate and its interval in percent."""
    return f"{100 * m['rate']:.1f} {bounds(m)}"


def _difference(d: dict) -> str:
    """A paired difference in percentage points, its interval, and which side it is on."""
    return f"{100 * d['difference']:+.1f} {bounds(d, signed=True)} {side(d)}"


def _pct(x) -> str:
    return pct(x) if isinstance(x, (int, float)) else "-"


def write_page(out: Path, title: str, body: str) -> None:
    """index.md as written, and index.html with every figure inlined as a data URI."""
    (out / "index.md").write_text(f"# {title}\n\n{body}", encoding="utf-8")
    html = MarkdownIt("commonmark").enable("table").render(f"# {title}\n\n{body}")

    def inline(match: re.Match) -> str:
        data = base64.b64encode((out / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    html = re.sub(r'src="([^"/]+\.png)"', inline, html)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")
    (out / "index.html").write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
                                    f"<style>{style}</style></head><body>\n{html}</body></html>\n", encoding="utf-8")


# ---------------------------------------------------------------- this pipeline's run
def export_markdown(export: Path | None, measured: dict | None) -> str:
    """The exported transformers folders (stage export), each with the class that loads it and
    its measured difference from fairseq."""
    if export is None or measured is None:
        return _not_run("export", Path("metrics/export.json"))
    rows = []
    for it, m in sorted(measured.get("pretrain", {}).items()):
        rows.append([f"`{(export / 'pretrain' / it).as_posix()}`", "HubertModel",
                     f"{m['max_abs_diff']:.1e} (every layer's hidden states)"])
    for name, m in sorted(measured.get("finetune", {}).items()):
        rows.append([f"`{(export / 'finetune' / name).as_posix()}`", "HubertForCTC + Wav2Vec2Processor",
                     f"{m['logits_max_abs_diff']:.1e} (logits); greedy output "
                     f"{'equal' if m['greedy_equal'] else 'DIFFERENT'}"])
    return (_table(["folder", "transformers class", f"max difference from fairseq ({measured['probe_seconds']} s "
                                                    "test utterance)"], rows)
            + "\nLoad one with `HubertModel.from_pretrained(folder)` (or `HubertForCTC` and "
              "`Wav2Vec2Processor`).\n")


def pipeline_report(metrics: Path, live: Path, out: Path, on_gpus: dict[int, bool],
                    profile: str = "", export: Path | None = None,
                    answers_out: Path | None = None) -> list[Finding]:
    """Write the report of this pipeline's run into ``out``; returns its findings.
    ``on_gpus``: whether each pretraining iteration ran on GPUs. A stage that has not run is
    said so on the page. ``answers_out``: where the answers' numbers go (a metrics file)."""
    out.mkdir(parents=True, exist_ok=True)
    findings: list[Finding] = []
    sections: list[str] = []
    runs: dict[str, tuple[int, Curves, float | None, int | None]] = {}
    pretrain: dict[int, dict] = {}
    pre_rows = []
    shown_batch = None
    for it in ITERATIONS:
        path = metrics / f"pretrain_iter{it}.json"
        m = _read(path)
        if m is None:
            sections.append(_not_run(f"pretrain_iter{it}", path))
            continue
        pretrain[it] = m
        curves = from_dvclive(live / f"pretrain_iter{it}" / "plots" / "metrics")
        units, prior = m["labels"]["units"], m["labels"]["prior_entropy_bits"]
        topic = f"iteration {it}"
        findings += pretrain_findings(topic, units, curves, prior, it)
        if m["batch"] != shown_batch:  # iteration 2's only when it differs from iteration 1's
            findings += batch_findings(f"batch, {topic}", m["batch"], on_gpus.get(it, False))
            shown_batch = m["batch"]
        runs[f"iteration {it} (K={units})"] = (units, curves, prior, it)
        t, lm = m["training"], m["loss_m"]
        # the budget side by side: updates and the audio they saw (updates x batch)
        hours = f"{t['audio_hours']:.1f}" if "audio_hours" in t else "-"
        pre_rows.append([str(it), str(units), f"{chance_bits(units):.2f}", f"{prior:.2f}", f"{lm['first']:.2f}",
                         f"{lm['last']:.2f}", f"{lm['last_over_chance']:.2f}", f"{m['accuracy_m']['last']:.3f}",
                         f"{lm.get('valid_last', float('nan')):.2f}", str(t["updates"]), hours,
                         f"{t['wall_time_s'] / 60:.1f}", f"{t['audio_s_per_s']:.1f}"])
    if runs:
        figures.loss_figure(runs, out / "loss.png")
        figures.normalised_figure(runs, out / "loss_normalised.png")
        figures.training_figure({k: v[1] for k, v in runs.items()}, out / "training.png")
        sections.insert(0, _table(
            ["iteration", "K", "chance log2(K+4)", "prior H(z)", "first loss_m", "last loss_m", "last / chance",
             "masked accuracy", "valid loss_m", "updates", "audio hours seen", "minutes", "audio s per s"], pre_rows)
            + "\n![masked loss in bits](loss.png)\n\n![normalised masked loss](loss_normalised.png)\n\n"
            "![accuracy, learning rate, throughput](training.png)\n")
    pretraining = "\n".join(sections)

    labels = {it: m for it in ITERATIONS if (m := _read(metrics / f"labels_iter{it}.json")) is not None}
    layers = _read(metrics / "layers_iter1.json")
    findings += label_findings(labels, layers)
    label_md = "" if 1 in labels else _not_run("kmeans_iter1", metrics / "labels_iter1.json")
    # without phone alignments the label metrics carry no PNMI (an imported corpus without them)
    scored = {it: m for it, m in labels.items() if "pnmi_conditional" in m}
    swept = layers if layers and "best_pnmi" in layers else None
    if labels and not scored:
        label_md += "_No phone alignments: label quality (PNMI, purities) and the layer sweep are not measured._\n"
    if scored:
        figures.labels_figure(scored, swept, out / "labels.png")
        rows = []
        for it, m in sorted(scored.items()):
            langs = m.get("per_language", {})
            rows.append([str(it), str(m["n_clusters"]), f"{m['label_rate']:g}", f"{m['pnmi_conditional']:.3f}",
                         *(f"{langs[lang]['pnmi']:.3f}" if lang in langs else "-" for lang in ("en", "zh")),
                         f"{m['pnmi_conditional_shuffled']:.3f}", f"{m['phone_purity']:.3f}",
                         f"{m['cluster_purity']:.3f}"])
        label_md += _table(["iteration", "K", "Hz", "PNMI", "en", "zh", "shuffled floor", "phone purity",
                            "cluster purity"], rows) + "\n![label quality and layer sweep](labels.png)\n"
    if layers is None:
        label_md += "\n" + _not_run("layers_iter1", metrics / "layers_iter1.json")

    evaluation = _read(metrics / "eval.json")
    if evaluation is None:
        down = _not_run("evaluate", metrics / "eval.json")
    else:
        findings += downstream_findings(evaluation)
        figures.downstream_figure(evaluation, out / "downstream.png")
        rows = []
        for v, m in evaluation.items():
            if v in ("floors", "compare"):
                continue
            cells = [_interval(m[lang][metric]) if metric in m.get(lang, {}) else "-"
                     for lang, metric in (("zh", "cer"), ("en", "wer"), ("mix", "mer"))]
            rows.append([v, *cells])
        floors = evaluation.get("floors", {})
        down = (_table(["variant", "zh CER % [95%]", "en WER % [95%]", "code-switched MER % [95%]"], rows)
                + f"\nConstant-output floors: zh CER {_pct(floors.get('zh', {}).get('constant_cer'))}, en WER "
                  f"{_pct(floors.get('en', {}).get('constant_wer'))}.\n")
        pairs = evaluation.get("compare", {})
        if pairs:
            keys = ("zh_cer", "en_wer", "mix_mer")
            down += ("\nPaired differences a - b on the same test utterances, in percentage points with their 95% "
                     "interval (negative: a makes fewer errors; tie: the interval includes 0):\n\n"
                     + _table(["a - b", "zh CER pp", "en WER pp", "code-switched MER pp"],
                              [[pair.replace("_minus_", " - "), *(_difference(d[k]) if k in d else "-" for k in keys)]
                               for pair, d in pairs.items()]))
        down += "\n![downstream](downstream.png)\n"

    balance = _read(metrics / "balance.json")
    if balance is not None:
        findings += balance_findings(balance)
        findings += length_findings(balance, _read(metrics / "letters.json"))

    block, numbers = answers(pretrain, labels, layers, evaluation, findings)
    if answers_out is not None:
        answers_out.parent.mkdir(parents=True, exist_ok=True)
        answers_out.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    data = _section(findings, "data")
    body = (f"Profile: {profile or 'unknown'}. Every statement below is computed from this run's own metrics "
            "(`metrics/`, `dvclive/`). Error rates are in percent, their differences in percentage points (pp)."
            "\n\n## Answers\n\n" + answers_markdown(block)
            + ("\n## Data\n\n" + data if data else "")
            + "\n## Pretraining\n\n" + _section(findings, "pretraining")
            + "fairseq logs every loss in bits. The masked loss starts at the chance level "
              "log2(K+4) (K units and 4 special symbols); the label prior H(z) is what knowing only the units' "
              "frequencies would score. The feature penalty (10 x the mean squared CNN output) is added to "
              "fairseq's total `loss`, not to `loss_m_0`.\n\n" + pretraining
            + "\n## Labels\n\n" + _section(findings, "labels")
            + "PNMI: the share of the phone's information that the unit carries (frame-level "
              "alignments of the held-out valid voices).\n\n" + label_md
            + "\n## Downstream (CTC fine-tuning, held-out voices)\n\n"
            # the pairwise verdicts are the table's rows; the flags stay as bullets
            + _section(findings, "downstream", skip=("beats", "worse", "tie")) + down
            + "\n## Models for Hugging Face transformers\n\n" + export_markdown(export, _read(metrics / "export.json"))
            + "\n## Sources\n\n" + "\n".join(SOURCES) + "\n")
    write_page(out, "HuBERT run report", body)
    return findings


def report_of_params(params_path: Path, metrics: Path, live: Path, out: Path, *, export: Path | None = None,
                     answers_out: Path | None = None) -> list[Finding]:
    """:func:`pipeline_report` with the profile and the pretraining hardware read from params.yaml."""
    params = load_params(params_path)
    on_gpus = {int(it[-1]): iteration_params(params["pretrain"], it).hardware.gpus > 0 for it in ("iter1", "iter2")}
    return pipeline_report(metrics, live, out, on_gpus, profile=str(params.get("profile_name", "")), export=export,
                           answers_out=answers_out)


# ---------------------------------------------------------------- any fairseq log
def log_report(curves: Curves, units: int, out: Path, *, source: str, prior: float | None = None,
               iteration: int | None = None, batch: dict | None = None,
               note: str = "") -> list[Finding]:
    """Explain one training log: the loss verdicts, health flags and figures."""
    out.mkdir(parents=True, exist_ok=True)
    topic = f"iteration {iteration}" if iteration else "this run"
    findings = pretrain_findings(topic, units, curves, prior, iteration)
    if batch is not None:
        findings += batch_findings("batch", batch)
    runs = {f"{topic} (K={units})": (units, curves, prior, iteration)}
    figures.loss_figure(runs, out / "loss.png")
    figures.normalised_figure(runs, out / "loss_normalised.png")
    figures.training_figure({topic: curves}, out / "training.png")
    body = (f"Log: `{source}`, K = {units} (chance log2(K+4) = {chance_bits(units):.2f} bits)"
            + (f", label prior H(z) = {prior:.2f} bits" if prior is not None else "") + ".\n\n"
            + (note + "\n\n" if note else "")
            + "## Verdicts\n\n" + findings_markdown(findings)
            + "\n## Curves\n\n![masked loss in bits](loss.png)\n\n![normalised masked loss](loss_normalised.png)\n\n"
              "![accuracy, learning rate, throughput](training.png)\n\n## Sources\n\n" + "\n".join(SOURCES) + "\n")
    write_page(out, "HuBERT training log explained", body)
    return findings
