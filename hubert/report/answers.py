"""The report's first block: one line for each question a user brings to a HuBERT run,
computed from the run's metrics, and the same numbers as a small metrics file
(``metrics/answers.json``) so that ``dvc exp show`` puts them in columns and
``dvc metrics diff`` compares two runs' answers.

The questions: is the loss normal (its start against chance log2(K+4), its end
against the label prior H(z)); did iteration 2 give better labels (against MFCC's
and iteration 1's at the same K and frame rate, also net of each set's shuffled
floor); which layer of the iteration-1 model; which fine-tuned model transcribes
best, and by how much against scratch and iter1 (paired 95% intervals); how many
flags. Error rates are percent, their differences percentage points (pp).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hubert.labels.quality import chance_bits
from hubert.report.findings import FIRST_LOSS_TOLERANCE, Finding, section_of

HEADLINES = (("zh", "cer"), ("en", "wer"))


@dataclass(frozen=True)
class Answer:
    question: str
    text: str


def pct(rate: float) -> str:
    """An error rate (a fraction) in percent."""
    return f"{100 * rate:.1f}%"


def pp(diff: float) -> str:
    """A difference of error rates in percentage points, signed."""
    return f"{100 * diff:+.1f} pp"


def bounds(m: dict, signed: bool = False) -> str:
    """The 95% interval of an error rate (or, signed, of a paired difference) in percent."""
    fmt = "+.1f" if signed else ".1f"
    return f"[{100 * m['low']:{fmt}}, {100 * m['high']:{fmt}}]"


def side(d: dict) -> str:
    """Which side of 0 a paired difference a - b lies on: better (a makes fewer errors), worse, or
    tie (the interval includes 0)."""
    return "better" if d["high"] < 0 else "worse" if d["low"] > 0 else "tie"


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def loss_answer(pretrain: dict[int, dict]) -> tuple[Answer | None, dict]:
    if not pretrain:
        return None, {}
    parts, numbers = [], {}
    for it, m in sorted(pretrain.items()):
        units, prior, lm = m["labels"]["units"], m["labels"]["prior_entropy_bits"], m["loss_m"]
        chance = chance_bits(units)
        start_ok = abs(lm["first"] - chance) / chance <= FIRST_LOSS_TOLERANCE
        end_ok = lm["last"] < prior
        verdict = "yes" if start_ok and end_ok else "NO"
        parts.append(f"iteration {it}: {verdict}, {lm['first']:.2f} bits at the start against chance {chance:.2f} "
                     f"({(lm['first'] - chance) / chance:+.0%}), {lm['last']:.2f} after {m['training']['updates']} "
                     f"updates, {abs(prior - lm['last']):.2f} {'below' if end_ok else 'ABOVE'} the label prior "
                     f"{prior:.2f}")
        numbers[f"iter{it}"] = {"first_over_chance": _r(lm["first"] / chance), "last_minus_prior_bits":
                                _r(lm["last"] - prior), "updates": m["training"]["updates"],
                                "normal": start_ok and end_ok}
    return Answer("Is the loss normal?", "; ".join(parts)), numbers


def _scored(m: dict) -> tuple[float, float]:
    """A label set's PNMI and its PNMI net of its shuffled floor."""
    return m["pnmi_conditional"], m["pnmi_conditional"] - m["pnmi_conditional_shuffled"]


def labels_answer(labels: dict[int, dict], layers: dict | None) -> tuple[Answer | None, dict]:
    it2 = labels.get(2)
    if not it2 or "pnmi_conditional" not in it2:
        return None, {}
    k, rate = it2["n_clusters"], it2["label_rate"]
    pnmi2, net2 = _scored(it2)
    rivals = []  # (metrics key, name, pnmi, net of its shuffled floor)
    mfcc = (layers or {}).get("mfcc_at_layer_rate")
    if mfcc and layers["n_clusters"] == k and layers["label_rate"] == rate:
        # iteration 1 trained on MFCC labels: at iteration 2's rate they are its rival
        rivals.append(("mfcc", "MFCC (iteration 1's kind)", *_scored(mfcc)))
    it1 = labels.get(1)
    if it1 and "pnmi_conditional" in it1 and it1["n_clusters"] == k and it1["label_rate"] == rate:
        rivals.append(("iter1", "iteration-1", *_scored(it1)))
    if not rivals:
        return Answer("Did iteration 2 give better labels?",
                      f"not measured: no MFCC or iteration-1 labels at iteration 2's K={k} and {rate:g} Hz"), {}
    spread = (layers or {}).get("seed_spread", 0.0)
    numbers: dict = {"iter2_pnmi": _r(pnmi2), "iter2_pnmi_net_of_floor": _r(net2)}
    parts, better = [], True
    for key, name, pnmi, net in rivals:
        wins = pnmi2 - pnmi > spread and net2 > net
        better &= wins
        parts.append(f"{'above' if wins else 'not above'} {name} labels' {pnmi:.3f} ({pnmi2 - pnmi:+.3f}; net of "
                     f"shuffled floors {net2:.3f} vs {net:.3f})")
        numbers[f"iter2_minus_{key}"] = _r(pnmi2 - pnmi)
        numbers[f"iter2_minus_{key}_net_of_floor"] = _r(net2 - net)
    numbers["better"] = better
    text = (f"{'yes' if better else 'no'}: iteration-2 PNMI {pnmi2:.3f} at K={k}, {rate:g} Hz is " + ", ".join(parts)
            + (f" (k-means seed spread {spread:.3f})" if spread else ""))
    return Answer("Did iteration 2 give better labels?", text), numbers


def layer_answer(layers: dict | None) -> tuple[Answer | None, dict]:
    if not layers or "best_pnmi" not in layers:
        return None, {}
    best, mfcc = layers["best_pnmi"], layers["mfcc_at_layer_rate"]["pnmi_conditional"]
    spread, diff = layers.get("seed_spread", 0.0), best - mfcc
    side = "above" if diff > spread else "below" if diff < -spread else "level with"
    text = (f"layer {layers['best_layer']} of {layers['n_layers']}: PNMI {best:.3f}, {side} MFCC's {mfcc:.3f} at "
            f"K={layers['n_clusters']}, {layers['label_rate']:g} Hz ({diff:+.3f}, k-means seed spread {spread:.3f})")
    return (Answer("Which layer of the iteration-1 model?", text),
            {"best_layer": layers["best_layer"], "best_pnmi": _r(best), "best_minus_mfcc": _r(diff),
             "seed_spread": _r(spread), "above_mfcc": diff > spread})


def _against(evaluation: dict, a: str, b: str, key: str) -> tuple[str, dict]:
    if a == b:
        return "", {}
    d = evaluation.get("compare", {}).get(f"{a}_minus_{b}", {}).get(key)
    if d is None:
        return f"; against {b}: not compared (add [{a}, {b}] to evaluate.compare)", {}
    sure = {"tie": "not distinguishable"}.get(side(d), side(d))
    return (f"; {pp(d['difference'])} {bounds(d, signed=True)} against {b} ({sure})",
            {f"minus_{b}_pp": _r(100 * d["difference"], 2), f"minus_{b}_low_pp": _r(100 * d["low"], 2),
             f"minus_{b}_high_pp": _r(100 * d["high"], 2)})


def downstream_answer(evaluation: dict | None) -> tuple[Answer | None, dict]:
    if not evaluation:
        return None, {}
    variants = [v for v in evaluation if v not in ("floors", "compare") and isinstance(evaluation[v], dict)]
    parts, numbers = [], {}
    for lang, metric in HEADLINES:
        rated = [(evaluation[v][lang][metric]["rate"], v) for v in variants
                 if metric in evaluation[v].get(lang, {})]
        if not rated:
            continue
        rate, best = min(rated)
        m = evaluation[best][lang][metric]
        key = f"{lang}_{metric}"
        floor = evaluation.get("floors", {}).get(lang, {}).get(f"constant_{metric}")
        entry = {"best": best, "best_pct": _r(100 * rate, 2), "best_low_pct": _r(100 * m["low"], 2),
                 "best_high_pct": _r(100 * m["high"], 2)}
        text = f"{lang} {metric.upper()}: {best}, {pct(rate)} {bounds(m)}"
        for rival in ("scratch", "iter1"):
            said, got = _against(evaluation, best, rival, key)
            text += said
            entry.update(got)
        if floor is not None:
            entry["below_floor"] = rate < floor
            if rate >= floor:
                text += f"; NO better than one constant output ({pct(floor)})"
        numbers[key] = entry
        parts.append(text)
    if not parts:
        return None, {}
    return Answer("Which fine-tuned model transcribes best?", " | ".join(parts)), numbers


def flags_answer(findings: list[Finding]) -> tuple[Answer, dict]:
    by_section = Counter(section_of(f.topic) for f in findings if f.flag)
    count = sum(by_section.values())
    where = ", ".join(f"{s} {n}" for s, n in by_section.items())
    text = f"{count}" + (f" ({where}), each beside its topic below" if count else ": nothing looks wrong")
    return Answer("How many flags?", text), {"count": count, **by_section}


def answers(pretrain: dict[int, dict], labels: dict[int, dict], layers: dict | None, evaluation: dict | None,
            findings: list[Finding]) -> tuple[list[Answer], dict]:
    """The answers block and its numbers (``metrics/answers.json``); a question whose
    stage has not run is left out (the page names the stage)."""
    out, numbers = [], {}
    for name, (answer, got) in (("loss", loss_answer(pretrain)), ("labels_iter2", labels_answer(labels, layers)),
                                ("layer", layer_answer(layers)), ("downstream", downstream_answer(evaluation)),
                                ("flags", flags_answer(findings))):
        if answer is not None:
            out.append(answer)
        if got:
            numbers[name] = got
    return out, numbers


def answers_markdown(block: list[Answer]) -> str:
    return "\n".join(f"- **{a.question}** {a.text}." for a in block) + "\n"
