"""The pipeline's fairseq checkpoints as Hugging Face transformers models.

    python -m hubert.export hf CHECKPOINT OUT_DIR

- A pretrained checkpoint (``model._name: hubert``) becomes a ``HubertModel`` folder:
  config.json derived from the checkpoint's own fairseq config, the weights as
  safetensors, and a feature extractor (preprocessor_config.json) that normalises
  the waveform exactly when fairseq's task did. The pretraining head (final_proj,
  label embeddings) has no place in HubertModel and is left out.
- A fine-tuned checkpoint (``hubert_ctc``, as the finetune stage exports it)
  becomes a ``HubertForCTC`` folder with a processor whose tokenizer decodes the
  letter vocabulary: Han characters, Latin letters, ``|`` as the word separator,
  the language-ID tokens of a LID variant as special tokens.

Everything is written with transformers' own classes (HubertConfig,
save_pretrained), so the format is theirs. A fairseq setting that transformers'
HuBERT cannot express is refused by name rather than exported approximately.
transformers is the optional extra ``hf`` (``pip install .[hf]``).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from hubert.fairseq.checkpoint import safe_load

# fairseq HuBERT config values transformers' HuBERT has no counterpart for: (key, the value it can express)
UNSUPPORTED = (("layer_type", "transformer"), ("pos_enc_type", "abs"), ("attn_type", ""),
               ("pos_conv_depth", 1), ("checkpoint_activations", None))
# fairseq TransformerSentenceEncoderLayer -> transformers HubertEncoderLayer
LAYER_KEYS = {"self_attn.k_proj": "attention.k_proj", "self_attn.v_proj": "attention.v_proj",
              "self_attn.q_proj": "attention.q_proj", "self_attn.out_proj": "attention.out_proj",
              "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
              "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm"}
# the pretraining head: HubertModel has no module for it
PRETRAINING_HEAD = ("final_proj.", "label_embs_concat")


class ExportError(ValueError):
    """A checkpoint that cannot be written as a transformers model, with the reason."""


def require_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ExportError("the Hugging Face export needs transformers: pip install '.[hf]' (make install does)") \
            from exc
    return transformers


# ---------------------------------------------------------------- config
def conv_layers(model_cfg: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(channels, kernel, stride) of each CNN layer from fairseq's conv_feature_layers string."""
    try:
        layers = ast.literal_eval(model_cfg["conv_feature_layers"])
    except (ValueError, SyntaxError) as exc:
        raise ExportError(f"model.conv_feature_layers={model_cfg['conv_feature_layers']!r} is not a literal list "
                          "of (channels, kernel, stride)") from exc
    return [tuple(int(x) for x in layer) for layer in layers]


def hubert_config(model_cfg: dict[str, Any], task_cfg: dict[str, Any], **extra: Any):
    """transformers' HubertConfig of a fairseq HuBERT model config (``cfg.model``)."""
    from transformers import HubertConfig
    from transformers.activations import ACT2FN

    for key, expressible in UNSUPPORTED:
        value = model_cfg.get(key, expressible)
        if key == "checkpoint_activations":
            continue  # a training-time memory trade, no effect on the weights or outputs
        if value != expressible:
            raise ExportError(f"model.{key}={value!r}: transformers' HuBERT supports only {expressible!r}")
    mode = model_cfg.get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise ExportError(f"model.extractor_mode={mode!r}: transformers' HuBERT has group (default) and layer norm")
    activation = model_cfg.get("activation_fn", "gelu")
    if activation not in ACT2FN:
        raise ExportError(f"model.activation_fn={activation!r} is not one of transformers' activations")
    conv = conv_layers(model_cfg)
    return HubertConfig(
        hidden_size=int(model_cfg["encoder_embed_dim"]),
        num_hidden_layers=int(model_cfg["encoder_layers"]),
        num_attention_heads=int(model_cfg["encoder_attention_heads"]),
        intermediate_size=int(model_cfg["encoder_ffn_embed_dim"]),
        hidden_act=activation,
        hidden_dropout=float(model_cfg.get("dropout", 0.1)),
        attention_dropout=float(model_cfg.get("attention_dropout", 0.1)),
        activation_dropout=float(model_cfg.get("activation_dropout", 0.0)),
        feat_proj_dropout=float(model_cfg.get("dropout_input", 0.0)),
        layerdrop=float(model_cfg.get("encoder_layerdrop", 0.0)),
        layer_norm_eps=1e-5,  # torch's LayerNorm default, fairseq's
        feat_extract_norm="group" if mode == "default" else "layer",
        feat_extract_activation="gelu",
        feat_proj_layer_norm=True,  # fairseq's HubertModel.layer_norm on the CNN features
        conv_dim=[c for c, _, _ in conv], conv_kernel=[k for _, k, _ in conv], conv_stride=[s for _, _, s in conv],
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        num_conv_pos_embeddings=int(model_cfg["conv_pos"]),
        num_conv_pos_embedding_groups=int(model_cfg["conv_pos_groups"]),
        conv_pos_batch_norm=bool(model_cfg.get("conv_pos_batch_norm", False)),
        do_stable_layer_norm=bool(model_cfg.get("layer_norm_first", False)),
        # fairseq's time masking draws at least 2 spans (HubertModel.apply_mask)
        mask_time_prob=float(model_cfg.get("mask_prob", 0.0)), mask_time_length=int(model_cfg.get("mask_length", 10)),
        mask_time_min_masks=2,
        mask_feature_prob=float(model_cfg.get("mask_channel_prob", 0.0)),
        mask_feature_length=int(model_cfg.get("mask_channel_length", 10)),
        **extra,
    )


# ---------------------------------------------------------------- weights
def convert_weights(fairseq: dict[str, torch.Tensor], model_cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A fairseq HubertModel state dict as transformers' HubertModel's (keys renamed, nothing recomputed)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in fairseq.items():
        if key.startswith(PRETRAINING_HEAD):
            continue
        name = rename(key)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise ExportError(f"weights transformers' HuBERT has no place for: {unknown[:5]}")
    if "feature_projection.projection.weight" not in out:
        # fairseq drops post_extract_proj when the CNN's width is the encoder's: the identity
        dim = int(model_cfg["encoder_embed_dim"])
        out["feature_projection.projection.weight"] = torch.eye(dim)
        out["feature_projection.projection.bias"] = torch.zeros(dim)
    return out


_CONV = re.compile(r"feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)$")
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(\w+(?:\.\w+)?)\.(weight|bias)$")


def rename(key: str) -> str | None:
    """The transformers name of a fairseq HubertModel weight, or None."""
    if key == "mask_emb":
        return "masked_spec_embed"
    if m := _CONV.match(key):
        layer, part, kind = m.groups()
        return f"feature_extractor.conv_layers.{layer}.{'conv' if part == '0' else 'layer_norm'}.{kind}"
    fixed = {"layer_norm.weight": "feature_projection.layer_norm.weight",
             "layer_norm.bias": "feature_projection.layer_norm.bias",
             "post_extract_proj.weight": "feature_projection.projection.weight",
             "post_extract_proj.bias": "feature_projection.projection.bias",
             "encoder.layer_norm.weight": "encoder.layer_norm.weight",
             "encoder.layer_norm.bias": "encoder.layer_norm.bias",
             "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
             # torch.nn.utils.weight_norm's names (fairseq) -> parametrizations.weight_norm's (transformers 5)
             "encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
             "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
             "encoder.pos_conv.0.parametrizations.weight.original0":
                 "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
             "encoder.pos_conv.0.parametrizations.weight.original1":
                 "encoder.pos_conv_embed.conv.parametrizations.weight.original1"}
    if key in fixed:
        return fixed[key]
    if m := _LAYER.match(key):
        layer, module, kind = m.groups()
        if module in LAYER_KEYS:
            return f"encoder.layers.{layer}.{LAYER_KEYS[module]}.{kind}"
    return None


def _load_strict(model, weights: dict[str, torch.Tensor], source: Path) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ExportError(f"{source}: the converted weights do not fit transformers' model (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")


def feature_extractor(task_cfg: dict[str, Any]):
    from transformers import Wav2Vec2FeatureExtractor

    # fairseq layer-normalises the whole waveform exactly when task.normalize is set
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=int(task_cfg.get("sample_rate", 16000)),
                                    padding_value=0.0, do_normalize=bool(task_cfg.get("normalize", False)),
                                    return_attention_mask=bool(task_cfg.get("normalize", False)))


# ---------------------------------------------------------------- the two exports
def export_pretrained(state: dict[str, Any], out: Path, source: Path) -> dict[str, Any]:
    from transformers import HubertModel

    model_cfg, task_cfg = dict(state["cfg"]["model"]), dict(state["cfg"]["task"])
    config = hubert_config(model_cfg, task_cfg, architectures=["HubertModel"])
    model = HubertModel(config)
    _load_strict(model, convert_weights(state["model"], model_cfg), source)
    model.save_pretrained(out, safe_serialization=True)
    feature_extractor(task_cfg).save_pretrained(out)
    return {"class": "HubertModel", "layers": config.num_hidden_layers, "hidden_size": config.hidden_size}


def ctc_vocabulary(symbols: list[str]) -> dict[str, int]:
    """vocab.json for fairseq's target dictionary: the same indices, the CTC blank (fairseq's
    ``<s>`` at 0) named ``<pad>`` and index 1 ``<s>``, as transformers' CTC models name them
    (its CTC loss and tokenizer take the pad token as the blank)."""
    if symbols[:4] != ["<s>", "<pad>", "</s>", "<unk>"]:
        raise ExportError(f"a fairseq target dictionary starts <s> <pad> </s> <unk>, this one {symbols[:4]}")
    names = ["<pad>", "<s>", *symbols[2:]]
    if len(set(names)) != len(names):
        raise ExportError("the target dictionary repeats a symbol")
    return {s: i for i, s in enumerate(names)}


def export_ctc(state: dict[str, Any], out: Path, source: Path) -> dict[str, Any]:
    from transformers import HubertForCTC, Wav2Vec2CTCTokenizer, Wav2Vec2Processor

    from hubert.finetune.letters import BOUNDARY, is_lid_token

    pretrained = state["cfg"]["model"].get("w2v_args")
    if not pretrained:
        raise ExportError(f"{source}: this fine-tuned checkpoint does not carry its pretrained config (w2v_args); "
                          "export the one the finetune stage writes (data/finetune/<variant>/checkpoint.pt)")
    dictionary = state["task_state"]["target_dictionary"]
    vocab = ctc_vocabulary(list(dictionary.symbols))
    model_cfg, task_cfg = dict(pretrained["model"]), dict(pretrained["task"])
    ft = state["cfg"]["model"]
    # the fine-tuning recipe's regularisation (what further fine-tuning in transformers would use)
    for ours, theirs in (("dropout", "dropout"), ("attention_dropout", "attention_dropout"),
                         ("activation_dropout", "activation_dropout"), ("layerdrop", "encoder_layerdrop"),
                         ("mask_prob", "mask_prob"), ("mask_length", "mask_length"),
                         ("mask_channel_prob", "mask_channel_prob"), ("mask_channel_length", "mask_channel_length")):
        if ours in ft:
            model_cfg[theirs] = ft[ours]
    config = hubert_config(model_cfg, task_cfg, architectures=["HubertForCTC"], vocab_size=len(vocab),
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, ctc_zero_infinity=True,
                           final_dropout=float(ft.get("final_dropout", 0.0)))
    model = HubertForCTC(config)
    weights = {}
    for key, value in state["model"].items():
        if key.startswith("w2v_encoder.w2v_model."):
            weights[key[len("w2v_encoder.w2v_model."):]] = value
    hubert = convert_weights(weights, model_cfg)
    converted = {f"hubert.{k}": v for k, v in hubert.items()}
    converted["lm_head.weight"] = state["model"]["w2v_encoder.proj.weight"]
    converted["lm_head.bias"] = state["model"]["w2v_encoder.proj.bias"]
    _load_strict(model, converted, source)
    model.save_pretrained(out, safe_serialization=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    lid = [s for s in vocab if is_lid_token(s)]
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>", word_delimiter_token=BOUNDARY, do_lower_case=False,
                                     additional_special_tokens=lid)
    Wav2Vec2Processor(feature_extractor=feature_extractor(task_cfg), tokenizer=tokenizer).save_pretrained(out)
    return {"class": "HubertForCTC", "layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "vocabulary": len(vocab), "lid_tokens": len(lid)}


def export_hf(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``checkpoint`` (pretrained or fine-tuned) as a transformers model folder ``out``."""
    require_transformers()
    from hubert.fairseq import fixes

    fixes.apply()
    checkpoint, out = Path(checkpoint), Path(out)
    state = safe_load(checkpoint)
    name = (state.get("cfg") or {}).get("model", {}).get("_name")
    if name == "hubert":
        return export_pretrained(state, out, checkpoint)
    if name == "hubert_ctc":
        return export_ctc(state, out, checkpoint)
    raise ExportError(f"{checkpoint}: model type {name!r}; the export takes a pretrained HuBERT (hubert) or a "
                      "fine-tuned one (hubert_ctc)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubert.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="format", required=True)
    hf = sub.add_parser("hf", help="a transformers HubertModel / HubertForCTC folder")
    hf.add_argument("checkpoint", type=Path)
    hf.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        info = export_hf(args.checkpoint, args.out)
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    print(f"export: {args.checkpoint} -> {args.out} ({info['class']}, {info['layers']} layers x "
          f"{info['hidden_size']}); load it with {info['class']}.from_pretrained({str(args.out)!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------- verification
def hidden_state_differences(checkpoint: str | Path, exported: str | Path, wav) -> list[float]:
    """Max |difference| of every transformer layer's output, fairseq's HubertModel against the
    exported HubertModel, on one waveform (1-D float array at the model's rate)."""
    from transformers import HubertModel

    from hubert.fairseq.checkpoint import load_hubert

    fairseq_model, task_cfg = load_hubert(checkpoint)
    hf_model = HubertModel.from_pretrained(exported).eval()
    x = _waveform(wav, bool(task_cfg.normalize))
    with torch.inference_mode():
        hf_states = hf_model(x, output_hidden_states=True).hidden_states
        out = []
        for layer in range(1, len(fairseq_model.encoder.layers) + 1):
            ours, _ = fairseq_model.extract_features(x, padding_mask=None, mask=False, output_layer=layer)
            out.append(float((ours - hf_states[layer]).abs().max()))
    return out


def ctc_differences(checkpoint: str | Path, exported: str | Path, wav) -> tuple[float, bool]:
    """(max |difference| of the CTC logits, whether the greedy outputs agree) of the fine-tuned
    fairseq model and the exported HubertForCTC on one waveform."""
    from transformers import HubertForCTC

    from hubert.fairseq.finetuned import load_finetuned

    fairseq_model, task = load_finetuned(checkpoint)
    hf_model = HubertForCTC.from_pretrained(exported).eval()
    x = _waveform(wav, bool(task.cfg.normalize))
    with torch.inference_mode():
        ours = fairseq_model(source=x, padding_mask=None)["encoder_out"][:, 0]  # (T, V): time-major
        theirs = hf_model(x).logits[0]
    return float((ours - theirs).abs().max()), bool(torch.equal(ours.argmax(-1), theirs.argmax(-1)))


def _waveform(wav, normalize: bool) -> torch.Tensor:
    x = torch.as_tensor(wav, dtype=torch.float32)[None]
    return torch.nn.functional.layer_norm(x, x.shape[1:]) if normalize else x
