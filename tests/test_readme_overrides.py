"""Every `-S` override the README and docs/*.md show composes through Hydra (as `dvc exp run`
does) and gives params every stage accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from hubert.balance.splits import BalanceConfig
from hubert.corpus.build import CorpusParams
from hubert.labels.params import SweepConfig, iteration_config
from hubert.params import compose, from_dict
from hubert.pretrain.params import ITERATIONS, iteration_params

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDERS = {"key=value"}  # prose, not an override
GROUPS = ("profile", "experiment")  # params/<group>/<name>.yaml


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # the front page and its topics


def readme_overrides(doc: Path = REPO / "README.md") -> list[list[str]]:
    """The `-S` values of each line of ``doc`` that has any, in order."""
    found = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        if "-S " not in line:
            continue
        words = shlex.split(" ".join(re.findall(r"-S\s+(?:'[^']*'|\"[^\"]*\"|[^\s`]+)", line)))
        values = [w for w in words if w != "-S" and w not in PLACEHOLDERS]
        if values:
            found.append(values)
    return found


def check_params(params: dict) -> None:
    from_dict(CorpusParams, params["corpus"], "corpus")
    from_dict(BalanceConfig, params["balance"], "balance")
    for iteration in ITERATIONS:
        iteration_config(params["labels"], iteration)
        iteration_params(params["pretrain"], iteration)
    from_dict(SweepConfig, params["labels"].get("sweep"), "labels.sweep")


def docs_overrides() -> list[tuple[str, list[str]]]:
    """(file, its `-S` values) for every line of README.md and docs/*.md that has any."""
    return [(doc.relative_to(REPO).as_posix(), values) for doc in DOCS for values in readme_overrides(doc)]


def test_the_readme_shows_overrides():
    assert len(readme_overrides()) >= 4
    assert len(docs_overrides()) > len(readme_overrides())  # the docs show more than the front page


@pytest.mark.parametrize(("doc", "overrides"), docs_overrides(),
                         ids=[f"{doc}: {' '.join(values)}" for doc, values in docs_overrides()])
def test_readme_override_composes_and_validates(doc: str, overrides: list[str]):
    params = yaml.safe_load(compose(REPO / "params", overrides))
    check_params(params)
    parser = OverridesParser.create()
    for override in overrides:
        parsed = parser.parse_override(override)
        if parsed.key_or_group in GROUPS:  # a config group: its file names itself
            assert params[f"{parsed.key_or_group}_name"] == parsed.value()
            continue
        node = params
        for part in parsed.key_or_group.split("."):
            node = node[part]
        assert node == parsed.value(), (doc, override)


def test_per_iteration_override_needs_no_plus_and_reaches_only_its_iteration():
    params = yaml.safe_load(compose(REPO / "params", ["profile=base", "pretrain.iter2.hardware.precision=bf16",
                                                       "pretrain.iter1.optimization.max_update=800000"]))
    iter1, iter2 = (iteration_params(params["pretrain"], it) for it in ITERATIONS)
    assert (iter1.hardware.precision, iter2.hardware.precision) == ("fp16", "bf16")
    assert (iter1.optimization.max_update, iter2.optimization.max_update) == (800000, 400000)


def test_iteration_blocks_mirror_every_shared_key():
    """A shared key missing from pretrain.<iteration> could only be overridden with Hydra's `+`."""
    params = yaml.safe_load(compose(REPO / "params", []))["pretrain"]
    shared = {k: v for k, v in params.items() if k not in ITERATIONS}

    def keys(tree: dict, prefix: str = "") -> set[str]:
        return {f"{prefix}{k}" for k in tree} | {
            sub for k, v in tree.items() if isinstance(v, dict) for sub in keys(v, f"{prefix}{k}.")}

    for iteration in ITERATIONS:
        assert keys(params[iteration]) == keys(shared), iteration
