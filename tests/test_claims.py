"""The claim check on the planted-sentence probe (tests/probes/claims.yaml): faithful paraphrases must keep their
citation and distortions (changed outcome, measure direction, therapy action, negation, severity, order, wrong
case) must lose it. Counts only; timings are for bench/verifier.py. Then `casebot check`, the same claim check
pointed at the library itself.

Targets (issue 16): at least 95% of each, per kind. Not met: the floors below are the counts measured on
2026-12-07 (tests/probes/probe.py, the check tuned on the older shipped probes only, the newer shipped and the
heldout probes only counted), so a regression fails; the targets stay in the issue."""

from __future__ import annotations

import pytest

from bot.answer import Answer, Citation, prompt
from bot.cli import main
from bot.embedding import MiniLMEmbeddings
from bot.evaluation import Expectations, TestResult, assess, summarise
from bot.lexicon import Lexicon
from bot.settings import PROJECT_ROOT, load_settings
from bot.verification import CitationVerifier
from probes.probe import Result, library_passages, load_probes, run

# library -> (faithful kept, distortions caught), measured 2026-12-07: shipped 105/115 and 121/130 after 48
# probes over eight unprobed cases were written (before the check was run on them: 16/24 kept, 17/24 caught, so
# the check had fitted the older shipped probes, 89/91 and 104/106), heldout 27/32 and 46/50 (2026-12-03: shipped
# 78/81 and 89/100, heldout 27/32 and 44/50); 2026-12-07 later, scoped negation (denials, "despite", a spent cue),
# elided subjects, drug levels and liver enzymes: shipped 111/115 and 123/130, heldout 27/32 and 46/50 (heldout
# only counted); 2026-12-08, the therapy put first ("on X ... kept rising" fails X), a risk judged "acceptable" or
# "too high" as a severity, a therapy begun only after an event it was given during ("a relapse despite X"):
# shipped 111/115 and 126/130 (was 123), heldout 27/32 and 46/50 (unchanged, only counted). The check is
# deterministic, so the floors are the measured counts.
FLOORS = {"shipped": (111, 126), "heldout": (27, 46)}
# The issue asks for at least 200 planted sentences.
MIN_PROBES = 200
KINDS = {"faithful", "outcome", "measure", "action", "negation", "severity", "order", "case"}


@pytest.fixture(scope="module")
def verifier() -> CitationVerifier:
    settings = load_settings()
    return CitationVerifier(Lexicon.load(settings.lexicon_path), MiniLMEmbeddings(), settings.verify_min_similarity)


@pytest.fixture(scope="module")
def passages(verifier) -> dict[str, dict[str, list[str]]]:
    return library_passages(verifier.lexicon)


@pytest.fixture(scope="module")
def results(verifier, passages) -> list[Result]:
    return run(verifier.verify, load_probes(), passages)


def test_the_probe_plants_enough_sentences_of_every_kind_in_both_libraries():
    probes = load_probes()
    assert len(probes) >= MIN_PROBES
    for library in FLOORS:
        assert {p.kind for p in probes if p.library == library} == KINDS, library


@pytest.mark.parametrize("library", sorted(FLOORS))
def test_faithful_paraphrases_keep_their_citation_and_distortions_lose_it(results, library):
    mine = [r for r in results if r.probe.library == library]
    kept = sum(r.kept for r in mine if r.probe.faithful)
    caught = sum(not r.kept for r in mine if not r.probe.faithful)
    wrong = [f"{'rejected' if r.probe.faithful else 'missed ' + r.probe.kind}: {r.probe.sentence} {r.problems}"
             for r in mine if not r.right]
    floor_kept, floor_caught = FLOORS[library]
    assert kept >= floor_kept and caught >= floor_caught, "\n".join(wrong)


def test_the_eval_counts_a_generated_sentence_the_claim_check_rejected_as_unfaithful(verifier, passages):
    """A backend that drifts (here: one outcome turned round) shows in the faithfulness metric of report.html."""
    case = "ild-mmf-failure-nintedanib"
    faithful = "Nintedanib was added to MMF, which she continued."
    distorted = "Mycophenolate was stopped and replaced by nintedanib."
    checked = verifier.verify(f"{faithful} [{case}] {distorted} [{case}]", {case: passages["shipped"][case]})
    assert [c.words for c in checked.unsupported] == [distorted]  # what the bot lists under `unsupported`
    note = prompt(load_settings().prompts_dir, "educational_note.md")
    answer = Answer(question="q", standalone_question="q", answer=f"{checked.text}\n\n{note}",
                    backend="openai:scripted-model", unsupported=[c.words for c in checked.unsupported],
                    citations=[Citation(case_id=case, title="t", source="s", passages=checked.evidence(case),
                                        score=0.8)],
                    retrieved=[case], timings_ms={"total": 1.0})
    turn = assess(Expectations(question="q", expect_cases=[case]), answer, {}, verifier.lexicon, note)
    assert turn.checked_sentences == 2
    assert turn.unfaithful_sentences == [f"{distorted} (the claim check found no cited case supporting it)"]
    summary = summarise([TestResult(id="t", suite="s", file="f", passed=True, latency_ms=1.0, turns=[turn])])
    assert summary.faithfulness == 0.5


# `casebot check`, the library audit: one planted contradiction per copy of a shipped case, each found with its
# file and field; the shipped library itself is clean.
AUDITED = PROJECT_ROOT / "knowledge" / "cases" / "ild-cyc-failure-rituximab.md"
OUTCOME_TEXT = ("The result was partial: over the following year his FVC stopped falling but did not recover, "
                "breathlessness stayed the same and his skin softened a little.")
PLANTS = {
    "failed-worked": (lambda t: t.replace(OUTCOME_TEXT, OUTCOME_TEXT + " In the end cyclophosphamide worked."),
                      "failed_therapies", "cyclophosphamide worked"),
    "failed-and-next": (lambda t: t.replace("next_therapies: [rituximab]",
                                            "next_therapies: [rituximab, cyclophosphamide]"),
                        "failed_therapies, next_therapies", "both failed and next"),
    "never-given": (lambda t: t.replace(OUTCOME_TEXT, OUTCOME_TEXT + " Rituximab was never given."),
                    "next_therapies", "rituximab was not given"),
    "outcome": (lambda t: t.replace(OUTCOME_TEXT, "He died of respiratory failure within the year."),
                "outcome", "the case's outcome is partial"),
    "organ": (lambda t: t.replace("organs: [lung, skin]", "organs: [lung, skin, heart]"),
              "organs", "heart is listed but the text never describes it"),
    "section": (lambda t: t[: t.index("## Teaching points")], "body", "'## Teaching points' is missing"),
}


def test_the_shipped_library_passes_the_audit(capsys):
    assert main(["check"]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_the_audit_finds_a_planted_contradiction_with_its_file_and_field(tmp_path, capsys, plant):
    change, field_name, problem = PLANTS[plant]
    original = AUDITED.read_text(encoding="utf-8")
    planted = change(original).replace("id: ild-cyc-failure-rituximab", f"id: planted-{plant}")
    assert planted != original
    path = tmp_path / f"planted-{plant}.md"
    path.write_text(planted, encoding="utf-8")
    assert main(["check", "--source", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{path}: {field_name}: ") and problem in line for line in lines), lines
    assert all(line.startswith(str(path)) for line in lines), lines  # nothing else is flagged


def test_strict_ingest_refuses_a_case_its_own_text_contradicts_and_names_field_and_sentence(tmp_path, capsys):
    library = tmp_path / "library"
    library.mkdir()
    (library / AUDITED.name).write_text(AUDITED.read_text(encoding="utf-8"), encoding="utf-8")  # clean: ingested
    planted = {}
    for plant in ("failed-worked", "outcome"):
        change, field_name, problem = PLANTS[plant]
        path = library / f"planted-{plant}.md"
        path.write_text(change(AUDITED.read_text(encoding="utf-8")).replace(
            "id: ild-cyc-failure-rituximab", f"id: planted-{plant}"), encoding="utf-8")
        planted[path] = (field_name, problem)
    assert main(["ingest", "--strict", "--source", str(library), "--db", str(tmp_path / "db")]) == 2
    out = capsys.readouterr().out
    assert "1 added" in out and "2 rejected" in out, out
    refused = {line for line in out.splitlines() if line.startswith("rejected ")}
    sentences = {"failed-worked": '"In the end cyclophosphamide worked."',
                 "outcome": '"He died of respiratory failure within the year."'}
    for path, (field_name, problem) in planted.items():
        line = next(line for line in refused if line.startswith(f"rejected {path}: "))
        assert "its text contradicts its front matter (--strict)" in line, line
        assert f"{field_name}: " in line and problem in line, line
        assert sentences[path.stem.removeprefix("planted-")] in line, line


def test_the_audit_finds_a_copied_case_under_another_id(tmp_path, capsys):
    text = AUDITED.read_text(encoding="utf-8")
    (tmp_path / "a.md").write_text(text, encoding="utf-8")
    (tmp_path / "b.md").write_text(text.replace("id: ild-cyc-failure-rituximab", "id: copied-case"), encoding="utf-8")
    assert main(["check", "--source", str(tmp_path)]) == 1
    assert f"{tmp_path / 'b.md'}: body: a copy of {tmp_path / 'a.md'}" in capsys.readouterr().out


def test_the_audit_names_a_missing_folder(tmp_path, capsys):
    assert main(["check", "--source", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
