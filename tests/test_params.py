"""hubert.params and stages.compose_params: Hydra composition of params/, the
generated params.yaml, and strict dataclass sections."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hubert.balance.splits import BalanceConfig
from hubert.corpus.build import CorpusParams
from hubert.corpus.synthetic import SyntheticConfig
from hubert.params import compose, from_dict, load_params, load_section
from stages import compose_params

REPO = Path(__file__).resolve().parent.parent
PARAMS = REPO / "params"
PROFILES = sorted(p.stem for p in (PARAMS / "profile").glob("*.yaml"))


def composed(overrides=()):
    return yaml.safe_load(compose(PARAMS, list(overrides)))


def default_profile() -> str:
    defaults = yaml.safe_load((PARAMS / "config.yaml").read_text())["defaults"]
    return next(d["profile"] for d in defaults if isinstance(d, dict) and "profile" in d)


def leaves(tree, prefix=()):
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, prefix + (key,))
    else:
        yield prefix, tree


def get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


# ---------------------------------------------------------------- composition
def test_profiles_exist():
    assert {"tiny", "demo", "base"} <= set(PROFILES)
    assert default_profile() == "demo"


def test_tiny_profile_overrides_the_sections():
    tiny, demo = composed(["profile=tiny"]), composed()
    assert tiny["profile_name"] == "tiny" and demo["profile_name"] == "demo"
    profile = yaml.safe_load((PARAMS / "profile" / "tiny.yaml").read_text())
    for path, value in leaves(profile):  # @package _global_: every key lands at the top level
        assert get(tiny, path) == value, path
    base = yaml.safe_load((PARAMS / "config.yaml").read_text())
    assert tiny["corpus"]["sample_rate"] == base["corpus"]["sample_rate"]  # untouched keys keep the default
    assert tiny["balance"]["alpha"] == base["balance"]["alpha"]
    synth = tiny["corpus"]["synthetic"]
    assert sum(synth["utterances"].values()) < sum(demo["corpus"]["synthetic"]["utterances"].values())
    assert tiny["balance"]["valid_speakers"] + tiny["balance"]["test_speakers"] + 1 <= min(synth["speakers"].values())


def test_demo_realistic_is_the_demo_with_recording_conditions_and_a_lower_lr():
    """demo-realistic extends demo (Hydra defaults): only its own keys differ, so a change
    to the demo recipe carries over, and the corpus, labels and model stay comparable."""
    demo, real = composed(["profile=demo"]), composed(["profile=demo-realistic"])
    changed = {path: value for path, value in leaves(real) if get(demo, path) != value}
    assert changed == {
        ("profile_name",): "demo-realistic",
        ("corpus", "synthetic", "realism", "enabled"): True,
        ("corpus", "synthetic", "realism", "rt60_s"): [0.3, 0.8],
        ("corpus", "synthetic", "realism", "snr_db"): [5.0, 20.0],
        ("pretrain", "optimization", "lr"): 0.0002,
        ("pretrain", "optimization", "warmup_updates"): 500,
    }
    synth = from_dict(CorpusParams, real["corpus"], "corpus").synthetic
    assert synth.realism.enabled and synth.realism.rt60_s == (0.3, 0.8)


def test_dotted_overrides_apply_after_the_profile():
    cfg = composed(["profile=tiny", "corpus.synthetic.seed=3", "corpus.synthetic.utterances.en=5",
                    "balance.alpha=0.3"])
    tiny = composed(["profile=tiny"])
    assert cfg["corpus"]["synthetic"]["seed"] == 3
    assert cfg["corpus"]["synthetic"]["utterances"] == {**tiny["corpus"]["synthetic"]["utterances"], "en": 5}
    assert cfg["balance"]["alpha"] == 0.3
    assert cfg["corpus"]["synthetic"]["speakers"] == tiny["corpus"]["synthetic"]["speakers"]


def test_default_profile_is_the_plain_composition():
    assert compose(PARAMS, [f"profile={default_profile()}"]) == compose(PARAMS)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_builds_the_corpus_and_balance_configs(profile):
    cfg = composed([f"profile={profile}"])
    corpus = from_dict(CorpusParams, cfg["corpus"], "corpus")  # unknown keys would raise here
    assert isinstance(corpus.synthetic, SyntheticConfig) and isinstance(corpus.synthetic.rate_wpm, tuple)
    balance = from_dict(BalanceConfig, cfg["balance"], "balance")
    assert 0.0 <= balance.alpha <= 1.0


def test_params_yaml_is_composed_from_params_dir():
    """params.yaml (what `dvc repro` reads) never drifts from params/."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    profile = yaml.safe_load(text)["profile_name"]
    expected = compose(PARAMS) if profile == default_profile() else compose(PARAMS, [f"profile={profile}"])
    assert text == expected, (f"params.yaml differs from params/ composed for profile {profile}: regenerate it "
                              f"with `make params PROFILE={profile}` "
                              f"(python -m stages.compose_params profile={profile})")


def test_committed_params_yaml_is_the_default_profile():
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run([git, "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"params.yaml not committed yet: {proc.stderr.strip()}")
    assert yaml.safe_load(proc.stdout)["profile_name"] == default_profile(), (
        "the committed params.yaml must be the default profile: `make params PROFILE=demo` before committing")


def test_compose_params_main_writes_the_composition(tmp_path):
    out = tmp_path / "params.yaml"
    compose_params.main(["profile=tiny", "corpus.synthetic.seed=7", "--out", str(out)])
    assert out.read_text(encoding="utf-8") == compose(PARAMS, ["profile=tiny", "corpus.synthetic.seed=7"])
    assert load_section(out, "corpus")["synthetic"]["seed"] == 7


def test_compose_rejects_unknown_profile_and_key():
    from hydra.errors import HydraException

    with pytest.raises(HydraException):
        compose(PARAMS, ["profile=nope"])
    with pytest.raises(Exception, match="nope"):
        compose(PARAMS, ["corpus.nope=1"])  # a typo is not silently added


# ---------------------------------------------------------------- loading sections
def test_load_section_and_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("corpus: {sample_rate: 8000}\nbalance: {alpha: 1.0}\n", encoding="utf-8")
    assert load_section(path, "corpus") == {"sample_rate": 8000}
    with pytest.raises(KeyError, match="make params"):
        load_section(path, "labels")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_params(bad)


# ---------------------------------------------------------------- from_dict
@dataclasses.dataclass(frozen=True)
class Inner:
    size: int = 1
    pair: tuple = (0, 0)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = dataclasses.field(default_factory=Inner)
    maybe: tuple | None = None
    sizes: dict = dataclasses.field(default_factory=dict)


def test_from_dict_nested_and_tuples():
    obj = from_dict(Outer, {"name": "x", "inner": {"pair": [3, 4]}, "maybe": [1, 2, 3], "sizes": {"en": 2}})
    assert obj == Outer("x", Inner(1, (3, 4)), (1, 2, 3), {"en": 2})
    assert isinstance(obj.inner.pair, tuple) and isinstance(obj.maybe, tuple)
    assert from_dict(Outer, {"name": "y"}) == Outer("y")  # missing keys take the default
    assert from_dict(Outer, {"name": "y", "maybe": None}).maybe is None


def test_from_dict_rejects_unknown_keys_with_their_path():
    with pytest.raises(ValueError, match=r"unknown key\(s\) in Outer: colour"):
        from_dict(Outer, {"name": "x", "colour": "red"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) in cfg\.inner: sise") as err:
        from_dict(Outer, {"name": "x", "inner": {"sise": 2}}, "cfg")
    assert "known: size, pair" in str(err.value)


def test_from_dict_missing_required_key_raises():
    with pytest.raises(TypeError, match="name"):
        from_dict(Outer, {})


def test_from_dict_on_real_sections():
    corpus = from_dict(CorpusParams, {"synthetic": {"seed": 4, "rate_wpm": [100, 120]}}, "corpus")
    assert corpus.synthetic.seed == 4 and corpus.synthetic.rate_wpm == (100, 120)
    assert corpus.sample_rate == 16000 and corpus.imports == []
    with pytest.raises(ValueError, match=r"corpus\.synthetic: speeds"):
        from_dict(CorpusParams, {"synthetic": {"speeds": 3}}, "corpus")


def test_compose_works_after_fairseq_registered_its_own_config_schema():
    from fairseq.dataclass.initialize import hydra_init

    hydra_init()  # what `import fairseq` does: registers a schema named "config"
    text = compose(PARAMS, ["profile=tiny"])
    assert "profile_name: tiny" in text
