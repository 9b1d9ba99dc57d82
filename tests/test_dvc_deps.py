"""dvc.yaml's deps cover all the code each stage runs, and nothing it does not.

DVC re-runs a stage when one of its deps changes, so a library module that a
stage imports but does not list leaves its outputs stale without a word. The
code a stage runs is derived here from the source: its script, every
``hubert`` module it imports (transitively, at any depth of the file: lazy
imports inside functions count), the ``__init__.py`` of their packages unless
it holds only a docstring, and the fairseq plugin that the launcher makes
fairseq import (it runs in the training subprocess, not through an import).
A dep covers a file when it names it or a folder above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# code that a module makes another process run (fairseq's common.user_dir)
SUBPROCESS_CODE = {"hubert/fairseq/launcher.py": ["hubert/fairseq/hubert_dvc_plugin/__init__.py"]}
CODE_ROOTS = ("hubert/", "stages/")


def module_file(module: str, repo: Path = REPO) -> str | None:
    """The repository file of a dotted module name, or None when it is not ours."""
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(repo).as_posix()
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names a file imports (``from a.b import c`` gives a.b and a.b.c: c may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import of {node.module!r}; use absolute imports")
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("hubert", "stages")}


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def code_run_by(script: str, repo: Path = REPO) -> set[str]:
    """Every repository file the script runs, as repository-relative paths."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        for module in imported_modules(repo / rel):
            parts = module.split(".")
            # the packages on the way: Python runs each __init__.py
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]), repo)
                if found and not (found.endswith("__init__.py") and docstring_only(repo / found)):
                    todo.append(found)
        todo += SUBPROCESS_CODE.get(rel, [])
    return seen


def stage_script(cmd: str) -> str:
    words = cmd.split()
    scripts = [w for w in words if w.startswith("stages/") and w.endswith(".py")]
    if len(scripts) != 1:
        raise AssertionError(f"cmd {cmd!r}: expected one stages/*.py script")
    return scripts[0]


def dep_problems(dvc_yaml: dict, repo: Path = REPO) -> list[str]:
    """One message per stage and missing (or superfluous) code dep."""
    problems = []
    for name, stage in dvc_yaml["stages"].items():
        stage = stage.get("do", stage)  # a foreach stage: its template
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        needed = code_run_by(stage_script(stage["cmd"]), repo)

        def covered(path: str, deps: list[str] = deps) -> bool:
            return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)

        problems += [f"stage {name}: runs {path} but its deps do not list it (nor a folder above it)"
                     for path in sorted(needed) if not covered(path)]
        for dep in deps:
            if dep.startswith(CODE_ROOTS) and not any(p == dep or p.startswith(dep.rstrip("/") + "/")
                                                      for p in needed):
                problems.append(f"stage {name}: lists {dep}, which it does not run")
    return problems


def load_dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def test_every_stage_lists_the_code_it_runs():
    problems = dep_problems(load_dvc_yaml())
    assert not problems, "dvc.yaml deps drift from the code:\n" + "\n".join(problems)


def test_a_removed_dep_is_named():
    dvc_yaml = load_dvc_yaml()
    deps = dvc_yaml["stages"]["kmeans_iter1"]["deps"]
    removed = "hubert/labels/quality.py"
    assert removed in deps
    deps.remove(removed)
    assert dep_problems(dvc_yaml) == [f"stage kmeans_iter1: runs {removed} but its deps do not list it "
                                      "(nor a folder above it)"]


def test_a_dep_on_code_the_stage_does_not_run_is_named():
    dvc_yaml = load_dvc_yaml()
    dvc_yaml["stages"]["corpus"]["deps"].append("hubert/pretrain/run.py")
    assert dep_problems(dvc_yaml) == ["stage corpus: lists hubert/pretrain/run.py, which it does not run"]


def test_a_folder_dep_covers_its_modules():
    dvc_yaml = load_dvc_yaml()
    stage = dvc_yaml["stages"]["kmeans_iter1"]
    stage["deps"] = [d for d in stage["deps"] if not d.startswith("hubert/labels/")] + ["hubert/labels"]
    assert dep_problems(dvc_yaml) == []


def test_lazy_imports_and_package_inits_count(tmp_path: Path):
    (tmp_path / "hubert" / "pkg").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    (tmp_path / "hubert" / "__init__.py").write_text('"""Only a docstring: runs nothing."""\n')
    (tmp_path / "hubert" / "pkg" / "__init__.py").write_text("SETTING = 1\n")
    (tmp_path / "hubert" / "pkg" / "lazy.py").write_text("X = 1\n")
    (tmp_path / "hubert" / "pkg" / "top.py").write_text("def f():\n    from hubert.pkg import lazy\n")
    (tmp_path / "stages" / "s.py").write_text("import json\nfrom hubert.pkg.top import f\n")
    assert code_run_by("stages/s.py", tmp_path) == {
        "stages/s.py", "hubert/pkg/__init__.py", "hubert/pkg/top.py", "hubert/pkg/lazy.py"}


@pytest.mark.parametrize("script", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "stages").glob("*.py")))
def test_no_stage_defines_a_class(script: str):
    tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
    assert not [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)], f"{script} defines a class"


def test_no_library_module_imports_a_stage():
    offenders = [lib.relative_to(REPO).as_posix() for lib in (REPO / "hubert").rglob("*.py")
                 if any(m.split(".")[0] == "stages" for m in imported_modules(lib))]
    assert not offenders, f"library modules import a stage: {offenders}"
