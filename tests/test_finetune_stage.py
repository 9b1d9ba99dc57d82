"""The finetune stage on the tiny profile: fairseq's hubert_ctc trains, its CTC loss
falls, Mandarin labels reach fairseq intact, the exported checkpoint loads on its
own, adaptation continues a joint model, and bad starts are refused clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests._finetune_fixtures import finetune_run, make_finetune_clone, run_finetune
from tests.testdata import LIBRI_CLIP, non_numeric_leaves


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_corpus, tiny_manifests):
    return finetune_run(tmp_path_factory, tiny_corpus, tiny_manifests)


def test_joint_finetuning_trains_and_its_ctc_loss_falls(run):
    code, out = run.joint
    assert code == 0, out[-3000:]
    m = run.metrics("iter1")
    assert not non_numeric_leaves(m)
    assert m["updates"] == 30
    assert m["loss"]["last"] < 0.95 * m["loss"]["first"], m["loss"]  # 30 updates: 790 -> 702 when measured
    # one validation per language beside the joint one; the best checkpoint is chosen on the joint one
    assert {"valid_uer", "valid_en_uer", "valid_zh_uer"} <= set(m)
    assert (run.clone / "data" / "finetune" / "iter1" / "checkpoint.pt").is_file()


def test_generated_config_is_fairseqs_finetuning_recipe(run):
    import yaml

    cfg = yaml.safe_load((run.clone / "data" / "finetune" / "iter1" / "fairseq_config.yaml").read_text())
    assert cfg["model"]["_name"] == "hubert_ctc" and cfg["criterion"] == {"_name": "ctc", "zero_infinity": True}
    assert cfg["model"]["feature_grad_mult"] == 0.0 and cfg["model"]["freeze_finetune_updates"] == 10
    assert cfg["task"]["fine_tuning"] and cfg["task"]["pad_audio"] and not cfg["task"]["random_crop"]
    assert cfg["dataset"]["required_batch_size_multiple"] == 1
    assert cfg["lr_scheduler"]["_name"] == "tri_stage"
    assert cfg["checkpoint"]["best_checkpoint_metric"] == "uer"
    assert cfg["model"]["w2v_path"] == "data/pretrain/iter1/checkpoint.pt"  # relative: the same from any clone
    pretrain_normalize = yaml.safe_load(Path(run.clone / "params.yaml").read_text())["pretrain"]["model"][
        "extractor_mode"] == "layer_norm"
    assert cfg["task"]["normalize"] == pretrain_normalize


def test_adaptation_continues_the_joint_model_on_one_language(run):
    code, out = run.adapted
    assert code == 0, out[-3000:]
    cfg = (run.clone / "data" / "finetune" / "iter1_zh" / "fairseq_config.yaml").read_text()
    assert "finetune_from_model: data/finetune/iter1/checkpoint.pt" in cfg
    assert "train_subset: finetune_zh" in cfg and "valid_subset: valid_zh" in cfg
    m = run.metrics("iter1_zh")
    assert m["updates"] == 10 and "valid_zh_uer" in m and "valid_en_uer" not in m
    # fairseq loads the joint model's weights (finetune_from_model) and resets optimizer and schedule
    assert "loading pretrained model from data/finetune/iter1/checkpoint.pt" in out


READ_LABELS = """
import sys
from fairseq import tasks
from omegaconf import OmegaConf
if sys.argv[1] == "fixed":
    from hubert.fairseq import fixes
    fixes.apply()
cfg = OmegaConf.create(dict(_name="hubert_pretraining", data="data/letters", label_dir="data/letters", labels=["ltr"],
                            fine_tuning=True, single_target=True, pad_audio=True, random_crop=False))
task = tasks.setup_task(cfg)
task.load_dataset(sys.argv[2])
ds, d = task.datasets[sys.argv[2]], task.target_dictionary
for i in range(len(ds)):
    print(d.string(ds.get_label(i, 0)))
"""


@pytest.mark.parametrize("split", ["finetune_zh", "finetune"])
def test_mandarin_labels_reach_fairseq_intact(run, split):
    """Every label read back through fairseq's own dataset equals the .ltr line: the plugin's byte-offset
    reader. fairseq's own reader (without the fix) is shown to corrupt them, so the test means something."""
    env = dict(os.environ, PYTHONPATH=str(run.clone), PYTHONUTF8="1")
    expected = (run.clone / "data" / "letters" / f"{split}.ltr").read_text(encoding="utf-8").splitlines()
    got = {}
    for mode in ("fixed", "unfixed"):
        proc = subprocess.run([sys.executable, "-c", READ_LABELS, mode, split], cwd=run.clone, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got[mode] = proc.stdout.splitlines()
    assert any("我" in line or "的" in line or any("\u4e00" <= ch <= "\u9fff" for ch in line) for line in expected)
    assert got["fixed"] == expected
    assert got["unfixed"] != expected


def test_exported_checkpoint_loads_and_decodes_without_its_pretrained_checkpoint(run, tmp_path):
    """Copied alone to another folder (the pretrained checkpoint absent there), the model loads with our
    loader and with fairseq's own, and decodes real speech."""
    import torch

    from hubert.evaluate.run import Decoder
    from hubert.fairseq.checkpoint import allowed_globals

    alone = tmp_path / "elsewhere" / "model.pt"
    alone.parent.mkdir()
    shutil.copy(run.clone / "data" / "finetune" / "iter1" / "checkpoint.pt", alone)
    cwd = os.getcwd()
    os.chdir(tmp_path / "elsewhere")  # data/pretrain/iter1/checkpoint.pt does not exist from here
    try:
        assert not Path("data/pretrain/iter1/checkpoint.pt").exists()
        decoder = Decoder(alone)
        wav, rate = sf.read(LIBRI_CLIP, dtype="float32")
        text, lid = decoder(wav)
        assert isinstance(text, str) and lid is None
        from fairseq import checkpoint_utils

        with torch.serialization.safe_globals(allowed_globals()):
            models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(alone)])
        assert cfg.model._name == "hubert_ctc"
        with torch.inference_mode():
            same = models[0].eval()(source=torch.from_numpy(wav)[None], padding_mask=None)["encoder_out"]
            ours = decoder.model(source=torch.from_numpy(wav)[None], padding_mask=None)["encoder_out"]
        np.testing.assert_array_equal(same.numpy(), ours.numpy())
    finally:
        os.chdir(cwd)


def test_fairseqs_own_checkpoint_is_not_portable_and_the_loader_says_so(run, tmp_path):
    from hubert.fairseq.finetuned import load_finetuned

    raw = tmp_path / "checkpoint_best.pt"
    shutil.copy(run.clone / "data" / "finetune" / "iter1" / "checkpoints" / "checkpoint_best.pt", raw)
    with pytest.raises(ValueError, match="re-read its pretrained checkpoint"):
        load_finetuned(raw)


def test_a_pretrained_checkpoint_is_not_a_model_to_decode(run):
    from hubert.fairseq.finetuned import load_finetuned

    with pytest.raises(ValueError, match="needs a fine-tuned checkpoint"):
        load_finetuned(run.clone / "data" / "pretrain" / "iter1" / "checkpoint.pt")


# ---------------------------------------------------------------- bad input
def test_a_missing_start_is_named(run):
    code, out = run_finetune(run.clone, "iter1", "data/pretrain/iter2/checkpoint.pt")
    assert code != 0
    assert "finetune.variants.iter1: its start data/pretrain/iter2/checkpoint.pt does not exist" in out


def test_a_start_that_is_not_hubert_is_named(run, tmp_path):
    bogus = run.clone / "data" / "not_a_model.pt"
    bogus.write_bytes(b"not a checkpoint")
    code, out = run_finetune(run.clone, "iter1", "data/not_a_model.pt")
    assert code != 0 and "data/not_a_model.pt is not a fairseq checkpoint" in out
    # a fine-tuned model where a pretrained one is expected
    code, out = run_finetune(run.clone, "iter1", "data/finetune/iter1/checkpoint.pt")
    assert code != 0 and "not a pretrained HuBERT" in out


def test_a_language_without_finetuning_data_is_named(run, tmp_path):
    from hubert.finetune.params import Variant
    from hubert.finetune.run import train_subsets

    letters = tmp_path / "letters"
    shutil.copytree(run.clone / "data" / "letters", letters)
    (letters / "finetune_zh.tsv").write_text("data/corpus\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no fine-tuning data for zh in .*finetune_<lang>\.tsv"):
        train_subsets(Variant(init="pretrain/iter1", languages=("zh",)), letters)
    with pytest.raises(ValueError, match="no fine-tuning data for xx"):
        train_subsets(Variant(init="pretrain/iter1", languages=("en", "xx")), run.clone / "data" / "letters")


def test_a_finetuned_checkpoint_with_another_vocabulary_is_refused(run, tmp_path):
    from hubert.finetune.run import check_dictionary

    dictionary = tmp_path / "dict.ltr.txt"
    lines = (run.clone / "data" / "letters" / "dict.ltr.txt").read_text(encoding="utf-8").splitlines()
    dictionary.write_text("\n".join(lines[:-1] + ["齉 1"]) + "\n", encoding="utf-8")
    checkpoint = run.clone / "data" / "finetune" / "iter1" / "checkpoint.pt"
    check_dictionary(checkpoint, run.clone / "data" / "letters" / "dict.ltr.txt")  # its own: fine
    with pytest.raises(ValueError, match=r"outputs another vocabulary than .*dict\.ltr\.txt"):
        check_dictionary(checkpoint, dictionary)


def test_masking_that_fairseq_cannot_draw_is_refused_before_launching(run, tmp_path):
    clone = make_finetune_clone(tmp_path / "repo", run.clone / "data" / "corpus", run.clone / "data" / "manifests",
                                run.clone / "data" / "pretrain" / "iter1" / "checkpoint.pt",
                                overrides=["finetune.model.mask_channel_length=64"])
    code, out = run_finetune(clone, "iter1", "data/pretrain/iter1/checkpoint.pt")
    assert code != 0 and "mask_channel_length=64 must be below the model's encoder_embed_dim=64" in out
    params = clone / "params.yaml"
    params.write_text(params.read_text().replace("mask_channel_length: 64", "mask_channel_length: 32")
                      .replace("mask_channel_prob: 0.5", "mask_channel_prob: 0.25"))
    code, out = run_finetune(clone, "iter1", "data/pretrain/iter1/checkpoint.pt")
    assert code != 0 and "fairseq fails when no channel span is drawn" in out
    assert not (clone / "data" / "finetune" / "iter1" / "checkpoints" / "checkpoint_last.pt").exists()


def test_metrics_file_is_numbers_only(run):
    for variant in ("iter1", "iter1_zh"):
        assert not non_numeric_leaves(json.loads(
            (run.clone / "metrics" / "finetune" / f"{variant}.json").read_text()))


def test_what_a_finished_run_may_and_may_not_be_continued_with(run):
    """A new learning rate, mask or batch starts over (else a finished run would report the old model under
    the new params); a longer run, other hardware or logging continue."""
    import copy

    import yaml

    from hubert.finetune.run import run_identity

    config = yaml.safe_load((run.clone / "data" / "finetune" / "iter1" / "fairseq_config.yaml").read_text())
    starts = [run.clone / "data" / "pretrain" / "iter1" / "checkpoint.pt"]
    inputs = [run.clone / "data" / "letters" / "finetune.tsv"]
    base = run_identity(config, starts, inputs)

    def changed(section: str, key: str, value) -> bool:
        other = copy.deepcopy(config)
        other[section][key] = value
        return run_identity(other, starts, inputs) != base

    assert changed("optimization", "lr", [0.001])
    assert changed("model", "mask_prob", 0.3)
    assert changed("dataset", "max_tokens", 50000)
    assert changed("common", "seed", 7)
    assert not changed("optimization", "max_update", 60)
    assert not changed("dataset", "num_workers", 2)
    assert not changed("common", "log_interval", 1)
    assert not changed("distributed_training", "distributed_world_size", 2)
