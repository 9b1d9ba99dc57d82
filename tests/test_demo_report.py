"""docs/demo-report is the committed demo run's report: it must be what `make demo-report`
makes from the committed params.yaml, metrics/ and dvclive/, byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hubert.report.committed import OUT, differences, main, regenerate

REPO = Path(__file__).resolve().parent.parent


def test_the_committed_demo_report_is_what_the_committed_metrics_make(tmp_path: Path):
    fresh = tmp_path / "report"
    regenerate(REPO, fresh)
    assert differences(REPO / OUT, fresh) == [], "docs/demo-report is stale: run `make demo-report` and commit it"
    html = (REPO / OUT / "index.html").read_text(encoding="utf-8")
    pngs = sorted(p.name for p in (REPO / OUT).glob("*.png"))
    assert "downstream.png" in pngs and html.count('src="data:image/png;base64,') == len(pngs)


def test_a_changed_committed_metric_makes_the_check_fail(tmp_path: Path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    for name in ("metrics", "dvclive"):
        shutil.copytree(REPO / name, repo / name)
    assert main(["--repo", str(repo), "--out", str(REPO / OUT), "--check"]) == 0
    path = repo / "metrics" / "eval.json"
    ev = json.loads(path.read_text())
    ev["iter1"]["zh"]["cer"]["rate"] += 0.01
    path.write_text(json.dumps(ev))
    assert main(["--repo", str(repo), "--out", str(REPO / OUT), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{REPO / OUT}/index.md: differs" in err and "downstream.png: differs" in err and "make demo-report" in err


def test_a_figure_no_longer_made_is_named(tmp_path: Path):
    committed, fresh = tmp_path / "a", tmp_path / "b"
    for d in (committed, fresh):
        d.mkdir()
        (d / "index.md").write_text("same")
    (committed / "old.png").write_bytes(b"x")
    (fresh / "new.png").write_bytes(b"y")
    assert differences(committed, fresh) == [f"new.png: not in {committed}", "old.png: no longer made"]
