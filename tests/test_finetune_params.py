"""hubert.finetune.params: the finetune section (hubert_ctc recipe) and its variants."""

from __future__ import annotations

import copy

import pytest

from hubert.finetune.params import Variant, finetune_params, variants
from hubert.params import load_section


# ---------------------------------------------------------------- variants
def test_variants_valid_set():
    out = variants({"variants": {
        "scratch": {"init": "pretrain/iter1", "weights": "random"},
        "iter1": {"init": "pretrain/iter1"},
        "iter1_zh": {"init": "finetune/iter1", "languages": ["zh"]},
        "iter2": {"init": "pretrain/iter2", "lid": True, "max_update": 5},
    }})
    assert set(out) == {"scratch", "iter1", "iter1_zh", "iter2"}
    assert out["scratch"] == Variant(init="pretrain/iter1", languages=("en", "zh"), weights="random", lid=False)
    assert out["iter1_zh"].languages == ("zh",)
    assert out["iter1_zh"].weights == "pretrained"
    assert out["iter2"].max_update == 5 and out["iter2"].lid is True
    assert {name: v.parent for name, v in out.items()} == {"scratch": None, "iter1": None, "iter1_zh": "iter1",
                                                           "iter2": None}


def test_variants_chain_of_adaptations():
    out = variants({"variants": {"c": {"init": "finetune/b"}, "b": {"init": "finetune/a"},
                                 "a": {"init": "pretrain/iter2"}}})
    assert (out["a"].parent, out["b"].parent, out["c"].parent) == (None, "a", "b")


def test_no_variants():
    assert variants({}) == {}
    assert variants({"variants": None}) == {}


@pytest.mark.parametrize("spec, match", [
    ({"x": {"init": "pretrain/iter3"}}, r"finetune\.variants\.x\.init"),
    ({"x": {"init": "iter1"}}, r"finetune\.variants\.x\.init"),
    ({"x": {"init": "finetune/"}}, r"finetune\.variants\.x\.init"),
    ({"x": {"init": "finetune/nope"}}, r"finetune\.variants\.x\b.*'nope'"),
    ({"a": {"init": "finetune/b"}, "b": {"init": "finetune/a"}}, r"finetune\.variants\.a\b.*loop"),
    ({"a": {"init": "finetune/a"}}, r"finetune\.variants\.a\b.*loop"),
    ({"p": {"init": "pretrain/iter1", "lid": True}, "x": {"init": "finetune/p"}}, r"finetune\.variants\.x\.lid"),
    ({"p": {"init": "pretrain/iter1"}, "x": {"init": "finetune/p", "lid": True}}, r"finetune\.variants\.x\.lid"),
    ({"p": {"init": "pretrain/iter1"}, "x": {"init": "finetune/p", "weights": "random"}},
     r"finetune\.variants\.x\.weights"),
    ({"x": {"init": "pretrain/iter1", "weights": "scratch"}}, r"finetune\.variants\.x\.weights"),
    ({"x": {"init": "pretrain/iter1", "languages": []}}, r"finetune\.variants\.x\.languages"),
    ({"x": {"init": "pretrain/iter1", "languages": "zh"}}, r"finetune\.variants\.x\.languages='zh': give a list"),
    ({"x": {"init": "pretrain/iter1", "lid": "no"}}, r"finetune\.variants\.x\.lid='no'"),
    ({"x": {"init": "pretrain/iter1", "langauges": ["zh"]}}, r"finetune\.variants\.x\b.*langauges"),
    ({"x": {"init": "pretrain/iter1", "max_update": 0}}, r"finetune\.variants\.x\.max_update"),
    ({"x": {"init": "pretrain/iter1", "max_update": -3}}, r"finetune\.variants\.x\.max_update"),
])
def test_variants_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        variants({"variants": spec})


def test_variant_without_init_is_refused():
    with pytest.raises(TypeError):
        variants({"variants": {"x": {"languages": ["en"]}}})


# ---------------------------------------------------------------- the composed section
@pytest.fixture
def section(tiny_params):
    return load_section(tiny_params, "finetune")


def test_finetune_params_of_the_tiny_profile(section):
    p = finetune_params(section)
    # tiny profile over params/finetune/default.yaml
    assert p.model.mask_channel_length == 16 and p.model.freeze_finetune_updates == 10
    assert p.model.mask_prob == 0.75 and p.model.apply_mask is True
    assert p.optimization.lr == pytest.approx(5e-4) and p.optimization.max_update == 30
    assert p.optimization.phase_ratio == (0.1, 0.4, 0.5)
    assert p.optimization.adam_betas == (0.9, 0.98)
    assert p.batch.max_tokens == 100000 and p.batch.update_freq == 1
    assert (p.schedule.log_interval, p.schedule.validate_interval_updates) == (5, 10)
    declared = variants(section)
    assert declared["iter2_en"].parent == "iter2" and declared["iter2_en"].max_update == 10
    assert declared["iter2_zh"].languages == ("zh",)
    assert declared["scratch"].weights == "random" and declared["scratch"].parent is None
    assert declared["iter2_lid"].lid is True


@pytest.mark.parametrize("group, key, value, match", [
    ("model", "mask_prob", 1.5, r"finetune\.model\.mask_prob"),
    ("model", "dropout", -0.1, r"finetune\.model\.dropout"),
    ("model", "freeze_finetune_updates", -1, r"finetune\.model\.freeze_finetune_updates"),
    ("optimization", "phase_ratio", [0.1, 0.4, 0.4], r"phase_ratio"),
    ("optimization", "phase_ratio", [0.5, 0.5], r"phase_ratio"),
    ("optimization", "max_update", 0, r"finetune\.optimization\.max_update"),
    ("optimization", "final_lr_scale", 0.0, r"final_lr_scale"),
    ("batch", "update_freq", 0, r"finetune\.batch"),
    ("schedule", "log_interval", 0, r"finetune\.schedule"),
])
def test_finetune_params_errors(section, group, key, value, match):
    bad = copy.deepcopy(section)
    bad[group][key] = value
    with pytest.raises(ValueError, match=match):
        finetune_params(bad)


def test_finetune_params_typo_is_refused(section):
    bad = copy.deepcopy(section)
    bad["model"]["mask_prb"] = 0.5
    with pytest.raises(ValueError, match=r"finetune\.model.*mask_prb"):
        finetune_params(bad)
