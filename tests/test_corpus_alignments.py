"""hubert.corpus.alignments and the alignments of imports: MFA TextGrids and CTM files
attached by utterance id, gaps and silences as sil, and every bad or partial
alignment reported by file with the utterance kept."""

from __future__ import annotations

import json

import pytest

from hubert.corpus.alignments import fit_to_audio, load_alignments, phone_label
from hubert.corpus.build import ALIGNMENT_PROBLEMS, CorpusParams, corpus_metrics, make_corpus
from hubert.corpus.records import read_manifest
from hubert.corpus.synthetic import SyntheticConfig

RATE = 16000
NO_SYNTHETIC = SyntheticConfig(utterances={"en": 0, "zh": 0}, speakers={"en": 0, "zh": 0})

# The long text format, as the Montreal Forced Aligner writes it (words and phones tiers).
MFA_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.0
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.0
        intervals: size = 2
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 1.0
            text = "cat"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.0
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.1
            text = ""
        intervals [2]:
            xmin = 0.1
            xmax = 0.35
            text = "K"
        intervals [3]:
            xmin = 0.35
            xmax = 0.6
            text = "AE1"
        intervals [4]:
            xmin = 0.6
            xmax = 0.8
            text = "T"
        intervals [5]:
            xmin = 0.8
            xmax = 1.0
            text = "sp"
'''


def manifest_import(tmp_path, make_wav, ids, seconds=1.0, lang="en"):
    root = tmp_path / "corpus"
    for i in ids:
        make_wav(root / "clips" / f"{i}.wav", seconds=seconds)
    manifest = root / "all.tsv"
    manifest.write_text("path\ttext\tlang\tspeaker\n" + "".join(f"clips/{i}.wav\tthe cat\t{lang}\ts{i}\n" for i in ids),
                        encoding="utf-8")
    return manifest


def build(tmp_path, manifest, alignments, **spec):
    params = CorpusParams(imports=[{"format": "manifest", "root": str(manifest), "alignments": str(alignments),
                                    **spec}], synthetic=NO_SYNTHETIC)
    out = tmp_path / "out"
    built = make_corpus(params, out, progress=False)
    return built, {u.id: u for u in read_manifest(out / "manifest.jsonl")}, out


def test_phone_labels_map_silences():
    assert [phone_label(x) for x in ("", "sil", "SP", "spn", "<eps>", " AE1 ")] == ["sil"] * 5 + ["AE1"]


def test_mfa_textgrid_attaches_its_phones_tier(tmp_path, make_wav):
    manifest = manifest_import(tmp_path, make_wav, ["a1"])
    grids = tmp_path / "mfa"
    grids.mkdir()
    (grids / "a1.TextGrid").write_text(MFA_TEXTGRID, encoding="utf-8")
    built, utts, out = build(tmp_path, manifest, grids)
    assert built.alignment_problems == []
    assert utts["a1"].alignment == [["sil", 0.0, 0.1], ["K", 0.1, 0.35], ["AE1", 0.35, 0.6], ["T", 0.6, 0.8],
                                    ["sil", 0.8, 1.0]]
    assert corpus_metrics(built.kept, built.rejected, RATE, 0)["aligned_utterances"] == 1
    assert (out / ALIGNMENT_PROBLEMS).read_text() == ""


def test_ctm_gaps_become_silence_and_a_bad_line_costs_only_its_utterance(tmp_path, make_wav):
    manifest = manifest_import(tmp_path, make_wav, ["a1", "a2", "a3"])
    ctm = tmp_path / "phones.ctm"
    ctm.write_text(";; aligner output\n"
                   "a1 1 0.20 0.30 K 1.0\n"
                   "a1 1 0.50 0.20 AE1\n"          # a gap before it: sil, and after it until the end
                   "a2 1 0.10 oops T\n"            # malformed: a2 is reported and kept without phones
                   "a2 1 0.30 0.20 AE1\n"
                   "zz 1 0.00 0.50 T\n",           # no such utterance in the import
                   encoding="utf-8")
    built, utts, out = build(tmp_path, manifest, ctm)
    assert utts["a1"].alignment == [["sil", 0.0, 0.2], ["K", 0.2, 0.5], ["AE1", 0.5, 0.7], ["sil", 0.7, 1.0]]
    assert utts["a2"].alignment is None and utts["a3"].alignment is None  # all three kept
    problems = {p.id: p for p in built.alignment_problems}
    assert set(problems) == {"a2", "zz"}
    assert f"{ctm}:4" in problems["a2"].detail and "fix or remove the line" in problems["a2"].detail
    assert "no utterance zz in this import" in problems["zz"].detail
    written = [json.loads(line) for line in (out / ALIGNMENT_PROBLEMS).read_text().splitlines()]
    assert {w["id"] for w in written} == {"a2", "zz"} and all(w["source"] == str(ctm) for w in written)


def test_unreadable_textgrid_and_wrong_tier_are_reported_by_name(tmp_path, make_wav):
    manifest = manifest_import(tmp_path, make_wav, ["a1", "a2", "a3"])
    grids = tmp_path / "mfa"
    grids.mkdir()
    (grids / "a1.TextGrid").write_text("this is not a TextGrid\n", encoding="utf-8")
    (grids / "a2.TextGrid").write_text(MFA_TEXTGRID.replace('name = "phones"', 'name = "segments"'),
                                       encoding="utf-8")
    (grids / "a3.TextGrid").write_text(MFA_TEXTGRID, encoding="utf-8")
    built, utts, _ = build(tmp_path, manifest, grids)
    problems = {p.id: p.detail for p in built.alignment_problems}
    assert str(grids / "a1.TextGrid") in problems["a1"] and "re-export it" in problems["a1"]
    assert "no tier 'phones'" in problems["a2"] and "alignment_tier" in problems["a2"]
    assert utts["a3"].alignment is not None and utts["a1"].alignment is None and utts["a2"].alignment is None
    assert len(utts) == 3


def test_another_tier_name_can_be_chosen(tmp_path, make_wav):
    manifest = manifest_import(tmp_path, make_wav, ["a1"])
    grids = tmp_path / "mfa"
    grids.mkdir()
    (grids / "a1.TextGrid").write_text(MFA_TEXTGRID.replace('name = "phones"', 'name = "segments"'),
                                       encoding="utf-8")
    built, utts, _ = build(tmp_path, manifest, grids, alignment_tier="segments")
    assert built.alignment_problems == [] and utts["a1"].alignment[1] == ["K", 0.1, 0.35]


def test_alignment_of_another_recording_is_not_attached(tmp_path, make_wav):
    manifest = manifest_import(tmp_path, make_wav, ["a1"], seconds=0.6)  # the TextGrid runs to 1.0 s
    grids = tmp_path / "mfa"
    grids.mkdir()
    (grids / "a1.TextGrid").write_text(MFA_TEXTGRID, encoding="utf-8")
    built, utts, _ = build(tmp_path, manifest, grids)
    assert utts["a1"].alignment is None
    (problem,) = built.alignment_problems
    assert problem.source == str(grids / "a1.TextGrid") and "another recording" in problem.detail


@pytest.mark.parametrize("intervals, message", [
    ([], "no interval"),
    ([("a", 0.0, 0.5), ("b", 0.4, 0.8)], "overlaps"),
    ([("a", 0.5, 0.5)], "empty or reversed"),
])
def test_bad_intervals_are_refused(intervals, message):
    with pytest.raises(ValueError, match=message):
        fit_to_audio(intervals, 1.0)


def test_missing_alignment_source_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.imports\\[\\].alignments"):
        load_alignments(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no .TextGrid or .ctm file" in load_alignments(empty).problems[0].detail
