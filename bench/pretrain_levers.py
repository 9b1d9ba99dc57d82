"""Benchmark: seconds per pretraining update of the demo model under each CPU lever.

    python -m bench.pretrain_levers --config data/pretrain/iter1/fairseq_config.yaml

Builds fairseq's HubertModel from the model section of a pretrain stage's
generated config and times full updates (forward, HuBERT's masked cross-entropy
plus the feature penalty, backward, Adam) on one fixed batch of random audio
(``--clips`` clips of ``--seconds`` s, the demo's batch size) for each variant,
in alternation, best of ``--repeat`` rounds (the machine is shared: only ratios
measured side by side in one run mean anything):

- fp32: the config as it is;
- bf16 autocast: the same model as ``pretrain.hardware.precision: bf16`` trains it on
  the CPU (the plugin's cpu_autocast patches: forward under
  ``torch.autocast("cpu", bfloat16)``, fp32 weights, masking and logits);
- other CNN widths: each ``--cnn`` list of 7 widths (same kernels and strides;
  by default the 128-channel CNN of the earlier demo recipe and the narrow one of
  the current), in fp32 and under bf16 autocast; a list equal to the config's is
  skipped (it is the fp32 row);
- pre-LN: ``layer_norm_first`` on (its cost; its effect on learning needs a real run).

Prints seconds per update and the ratio to fp32.
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from hubert.pretrain.params import conv_feature_layers


def build(model_cfg: dict, units: int, seed: int, autocast: bool = False):
    from fairseq.data.dictionary import Dictionary
    from fairseq.models.hubert.hubert import HubertConfig, HubertModel

    from hubert.fairseq import cpu_autocast

    if autocast:
        class HubertModel(HubertModel):  # noqa: F811 (a patched subclass; fairseq's class stays as it is)
            pass

        cpu_autocast.patch(HubertModel)
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    torch.manual_seed(seed)
    d = Dictionary()
    for i in range(units):
        d.add_symbol(str(i))
    cfg = HubertConfig(**{k: v for k, v in model_cfg.items() if k != "_name"})
    task = HubertPretrainingConfig(label_rate=model_cfg["label_rate"], sample_rate=16000)
    return HubertModel(cfg, task, [d])


def update(model, opt, audio: torch.Tensor, labels: torch.Tensor) -> float:
    start = time.perf_counter()
    opt.zero_grad()
    padding = torch.zeros_like(audio, dtype=torch.bool)
    out = model(audio, target_list=[labels], padding_mask=padding, mask=True, features_only=False)
    logits = model.get_logits(out, True)[0]
    targets = model.get_targets(out, True)[0]
    loss = F.cross_entropy(logits, targets) + 10.0 * out["features_pen"]
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def conv_widths(conv_feature_layers: str) -> list[int]:
    """The channel counts of a conv_feature_layers string as the pretrain stage writes it:
    a plain literal ``[(32,10,5), ...]`` (ValueError for fairseq's ``[(512, 10, 5)] * 2`` form)."""
    return [int(c) for c, _, _ in ast.literal_eval(conv_feature_layers)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("data/pretrain/iter1/fairseq_config.yaml"))
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--cnn", action="append", default=None,
                        help="CNN widths to time, 7 comma-separated numbers (repeatable; default: "
                             "128,128,128,128,128,128,128 and 32,64,64,128,128,128,128)")
    parser.add_argument("--steps", type=int, default=5, help="timed updates per variant and round")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    base = yaml.safe_load(args.config.read_text())["model"]
    config_widths = conv_widths(base["conv_feature_layers"])
    variants = {f"the config (CNN {config_widths}), fp32": (base, False), "the config, bf16 autocast": (base, True)}
    for spec in args.cnn or ["128,128,128,128,128,128,128", "32,64,64,128,128,128,128"]:
        widths = [int(w) for w in spec.split(",")]
        if widths == config_widths:
            continue
        layers = conv_feature_layers(widths)
        variants[f"CNN {spec}, fp32"] = ({**base, "conv_feature_layers": layers}, False)
        variants[f"CNN {spec}, bf16 autocast"] = ({**base, "conv_feature_layers": layers}, True)
    variants["the config, pre-LN, fp32"] = ({**base, "layer_norm_first": True}, False)
    reference = next(iter(variants))
    samples = int(args.seconds * 16000)
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(args.clips, samples, generator=gen) * 0.1
    frames = int(samples / 16000 * base["label_rate"])
    labels = torch.randint(0, args.units, (args.clips, frames), generator=gen)
    models = {}
    for name, (cfg, autocast) in variants.items():
        model = build(cfg, args.units, seed=0, autocast=autocast).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        update(model, opt, audio, labels)  # warm-up: allocations, oneDNN kernels
        models[name] = (model, opt)
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeat):
        for name, (model, opt) in models.items():
            t = sum(update(model, opt, audio, labels) for _ in range(args.steps)) / args.steps
            best[name] = min(best[name], t)
    audio_s = args.clips * args.seconds
    print(f"{torch.get_num_threads()} threads, batch {args.clips} x {args.seconds:g} s, best of {args.repeat} rounds "
          f"of {args.steps} updates")
    print("| variant | s per update | audio s per s | vs the config in fp32 |\n|---|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t:.3f} | {audio_s / t:.1f} | {best[reference] / t:.2f}x |")


if __name__ == "__main__":
    main()
