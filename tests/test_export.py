"""hubert.export and the export stage: the pipeline's models in Hugging Face transformers,
proven on real speech (the LibriSpeech clip) against fairseq, layer by layer, for the tiny
run's models and a randomly initialised model of the demo profile's shape; the exported
CTC models transcribe the tiny run's test utterances as the evaluate stage did; the
README's load lines run as written."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from hubert.export import ExportError, ctc_vocabulary, export_hf, hidden_state_differences, hubert_config
from hubert.finetune.letters import UNK_TEXT, text_of
from tests._pretrain_fixtures import compose_params
from tests.testdata import LIBRI_CLIP

pytest.importorskip("transformers")  # the hf extra: make install and CI install it
pytestmark = pytest.mark.slow
TOLERANCE = 1e-5
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    wav, rate = sf.read(LIBRI_CLIP, dtype="float32")
    assert rate == 16000
    return wav


def random_checkpoint(profile: str, path: Path, units: int = 100) -> Path:
    """A randomly initialised fairseq HubertModel of ``profile``'s iteration-1 shape, saved as the
    pretrain stage saves its checkpoints (cfg, task_state with the label dictionary)."""
    from fairseq.data.dictionary import Dictionary
    from fairseq.models.hubert.hubert import HubertConfig, HubertModel
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
    from omegaconf import OmegaConf

    from hubert.pretrain.config import fairseq_config
    from hubert.pretrain.params import iteration_params, resolve_precision

    p = iteration_params(yaml.safe_load(compose_params([f"profile={profile}"]))["pretrain"], "iter1")
    p = dataclasses.replace(p, hardware=resolve_precision(p.hardware, cpuinfo=None))
    cfg = fairseq_config(p, manifests="m", labels="l", label_rate=100.0, save_dir="s", sample_rate=16000,
                         user_dir="u")
    model_cfg = OmegaConf.merge(OmegaConf.structured(HubertConfig), cfg["model"])
    task_cfg = OmegaConf.merge(OmegaConf.structured(HubertPretrainingConfig), cfg["task"])
    dictionary = Dictionary()
    for i in range(units):
        dictionary.add_symbol(str(i))
    torch.manual_seed(0)
    model = HubertModel(model_cfg, task_cfg, [dictionary])
    torch.save({"model": model.state_dict(), "cfg": {"model": OmegaConf.to_container(model_cfg, enum_to_str=True),
                                                     "task": OmegaConf.to_container(task_cfg, enum_to_str=True)},
                "task_state": {"dictionaries": [dictionary]}, "optimizer_history": [{"num_updates": 0}]}, path)
    return path


# ---------------------------------------------------------------- pretrained: every layer
def test_a_demo_shaped_model_exports_layer_for_layer(tmp_path, clip):
    checkpoint = random_checkpoint("demo", tmp_path / "demo.pt")
    info = export_hf(checkpoint, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (info["class"], config["architectures"]) == ("HubertModel", ["HubertModel"])
    assert config["conv_dim"] == [32, 64, 64, 128, 128, 128, 128] and config["hidden_size"] == 256
    assert config["conv_kernel"] == [10, 3, 3, 3, 3, 2, 2] and config["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    differences = hidden_state_differences(checkpoint, tmp_path / "hf", clip)
    print("demo shape, max |difference| per layer:", differences)
    assert len(differences) == 4 and max(differences) <= TOLERANCE, differences


def test_the_tiny_runs_models_export_layer_for_layer(tiny_exp_clone, clip):
    for it in ("iter1", "iter2"):
        exported = tiny_exp_clone.root / "data/export/pretrain" / it
        differences = hidden_state_differences(tiny_exp_clone.root / f"data/pretrain/{it}/checkpoint.pt", exported,
                                               clip)
        print(f"tiny {it}, max |difference| per layer:", differences)
        assert len(differences) == 2 and max(differences) <= TOLERANCE, (it, differences)
    metrics = json.loads((tiny_exp_clone.root / "metrics/export.json").read_text())
    assert set(metrics["pretrain"]) == {"iter1", "iter2"} and metrics["pretrain"]["iter1"]["layers"] == 2
    assert set(metrics["finetune"]) == {"scratch", "iter1", "iter2", "iter2_lid", "iter2_en", "iter2_zh"}
    assert all(m["greedy_equal"] == 1 and m["logits_max_abs_diff"] <= TOLERANCE for m in metrics["finetune"].values())


def test_settings_transformers_cannot_express_are_refused_by_name():
    base = {"conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4", "encoder_embed_dim": 64, "encoder_layers": 2,
            "encoder_attention_heads": 2, "encoder_ffn_embed_dim": 128, "conv_pos": 16, "conv_pos_groups": 4}
    with pytest.raises(ExportError, match="conv_feature_layers"):
        hubert_config(base, {})  # an expression fairseq eval()s: not a literal list
    base["conv_feature_layers"] = "[(32,10,5), (32,3,2)]"
    for key, value in (("layer_type", "conformer"), ("pos_enc_type", "rope"), ("extractor_mode", "other"),
                       ("activation_fn", "swishy")):
        with pytest.raises(ExportError, match=f"model.{key}="):
            hubert_config({**base, key: value}, {})
    assert hubert_config({**base, "layer_norm_first": True}, {}).do_stable_layer_norm


def test_a_checkpoint_that_is_no_hubert_is_named(tmp_path):
    torch.save({"model": {}, "cfg": {"model": {"_name": "wav2vec2"}}}, tmp_path / "w2v.pt")
    with pytest.raises(ExportError, match="model type 'wav2vec2'"):
        export_hf(tmp_path / "w2v.pt", tmp_path / "out")
    assert subprocess.run([sys.executable, "-m", "hubert.export", "hf", str(tmp_path / "w2v.pt"),
                           str(tmp_path / "out")], capture_output=True, text=True).returncode == 2


# ---------------------------------------------------------------- fine-tuned: transcripts
def test_ctc_vocabulary_keeps_fairseqs_indices_and_names_the_blank_as_transformers_does():
    assert ctc_vocabulary(["<s>", "<pad>", "</s>", "<unk>", "<en>", "|", "我"]) == {
        "<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<en>": 4, "|": 5, "我": 6}
    with pytest.raises(ExportError, match="starts <s> <pad> </s> <unk>"):
        ctc_vocabulary(["a", "b"])


def collapse(ids: list[int], blank: int = 0) -> list[int]:
    out = []
    for i, t in enumerate(ids):
        if t != blank and (i == 0 or t != ids[i - 1]):
            out.append(t)
    return out


def as_evaluate_writes(decoded: str) -> str:
    """transformers' decoding (special tokens kept) written as the evaluate stage writes a
    transcript: fairseq's specials and the language-ID tokens dropped, <unk> as one ⁇."""
    return re.sub(r"</?s>|<[a-z]{2,3}>", "", decoded.replace("<unk>", UNK_TEXT))


def without_switch_spaces(text: str) -> str:
    """A transcript without the space the evaluate stage writes at a switch between Han and Latin
    script that no ``|`` marks (transformers' tokenizer joins them), whitespace collapsed."""
    text = re.sub(r"(?<=[\u4e00-\u9fff])\s+(?=[^\s\u4e00-\u9fff])|(?<=[^\s\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])",
                  "", text)
    return " ".join(text.split())


def test_the_exported_ctc_models_transcribe_the_test_utterances_as_evaluate_did(tiny_exp_clone):
    from transformers import HubertForCTC, Wav2Vec2Processor

    from hubert.corpus.audio import load_mono

    root = tiny_exp_clone.root
    letters = root / "data/letters"
    lines = (letters / "test.tsv").read_text().splitlines()
    paths = {Path(rel).stem: Path(lines[0]) / rel for rel in (line.split("\t")[0] for line in lines[1:])}
    for variant in ("iter1", "iter2_lid", "iter2_zh"):
        folder = root / "data/export/finetune" / variant
        model, processor = HubertForCTC.from_pretrained(folder).eval(), Wav2Vec2Processor.from_pretrained(folder)
        rows = [json.loads(r) for r in (root / f"data/eval/{variant}/utterances.jsonl").read_text().splitlines()]
        tests = [r for r in rows if r["set"] == "test"]
        assert tests, variant
        for r in tests:
            wav = load_mono(root / paths[r["id"]] if not paths[r["id"]].is_absolute() else paths[r["id"]], 16000)
            with torch.inference_mode():
                logits = model(processor(wav, sampling_rate=16000, return_tensors="pt").input_values).logits[0]
            ids = logits.argmax(-1).tolist()
            # the greedy transcript, in the letter vocabulary, exactly the evaluate stage's
            tokens = processor.tokenizer.convert_ids_to_tokens(collapse(ids))
            assert text_of(tokens) == (r["hyp"], r["lid"]), (variant, r["id"])
            # and transformers' own decoding, up to the spaces at unmarked script switches
            decoded = as_evaluate_writes(processor.decode(ids))
            assert without_switch_spaces(decoded) == without_switch_spaces(r["hyp"]), (variant, r["id"])
        special = set(processor.tokenizer.all_special_tokens)
        assert ({"<en>", "<zh>"} <= special) == (variant == "iter2_lid")


# ---------------------------------------------------------------- the README's load lines
def readme_block(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(title, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_load_lines_run_as_written(tiny_exp_clone):
    code = readme_block("## Load the models")
    assert "weights_only=False" not in code and "add_safe_globals([Dictionary])" in code
    # what the load lines give, on real speech: the three models agree
    check = """
import json
import soundfile as sf
wav, _ = sf.read("../shared/testdata/librispeech/6313-76958-0021.flac", dtype="float32")
x = torch.from_numpy(wav)[None]
with torch.inference_mode():
    ours = hubert.extract_features(x, padding_mask=None, mask=False)[0]
    theirs = model(x).last_hidden_state
    torchaudios = ta_model.extract_features(x)[0][-1]
    logits = ctc(x).logits
print(json.dumps({"hf": float((theirs - ours).abs().max()), "torchaudio": float((torchaudios - ours).abs().max()),
                  "vocabulary": logits.shape[-1], "tokens": len(processor.tokenizer)}))
"""
    proc = subprocess.run([sys.executable, "-c", code + check], cwd=tiny_exp_clone.root, env=tiny_exp_clone.env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["hf"] <= TOLERANCE and got["torchaudio"] <= TOLERANCE, got
    assert got["vocabulary"] == got["tokens"], got
