"""Adding a case from the web app (bot/intake.py): checked as ingest checks files, written whole, indexed on
its own, answerable at once; refused files leave the library and the index as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cases import load_cases
from bot.conversation import CaseBot
from bot.index import CaseIndex
from bot.intake import IntakeError, add, check, form_markdown
from bot.settings import load_settings
from conftest import CASE_TEMPLATE, write_case

NEW_CASE = CASE_TEMPLATE.format(
    id="added-calcinosis-case", title="Limited SSc with calcinosis cutis treated with intralesional injections",
    subtype="limited", organs="skin", failed="topical nitrates", next="intralesional injections",
    outcome="partial", presentation="Hard calcinosis deposits ulcerated over both elbows.",
    prior="Topical nitrates were tried for the surrounding ischaemia.", resistance="The deposits kept growing.",
    next_text="Intralesional injections were given into the calcinosis deposits.",
    outcome_text="The deposits softened partly.", teaching="Calcinosis can answer partly to local injections.")


@pytest.fixture
def library(tmp_path) -> tuple[CaseBot, Path]:
    """A small library of its own, indexed, and the bot over it."""
    knowledge = tmp_path / "knowledge"
    write_case(knowledge / "cases", id="kept-lung-case", title="Lung fibrosis after MMF", failed="MMF",
               next="rituximab", outcome="improved", resistance="The lung fibrosis progressed despite MMF.")
    write_case(knowledge / "cases", id="kept-renal-case", title="Renal crisis after ACE inhibitors", organs="kidney",
               failed="ACE inhibitors", next="plasma exchange", outcome="stabilised")
    bot = CaseBot(load_settings(db=tmp_path / "db", knowledge=knowledge), log=lambda m: None)
    return bot, knowledge


def existing(bot: CaseBot) -> set[str]:
    return set(bot.retriever.refresh().cases)


def test_a_checked_case_is_written_indexed_and_answerable_at_once(library):
    bot, knowledge = library
    question = "Calcinosis growing despite topical nitrates: what was tried?"
    assert bot.ask(question, "before").refused
    draft = check("my calcinosis case.md", NEW_CASE.encode(), bot.settings, bot.lexicon, existing(bot))
    assert draft.filename == "added-calcinosis-case.md"
    assert not (knowledge / "cases" / draft.filename).exists(), "checking writes nothing"
    report = add(draft, bot.settings, bot.lexicon)
    assert report.added == ["added-calcinosis-case"] and report.removed == []
    assert (knowledge / "cases" / draft.filename).read_text() == NEW_CASE
    assert sorted(p.name for p in (knowledge / "cases").iterdir()) == [
        "added-calcinosis-case.md", "kept-lung-case.md", "kept-renal-case.md"], "no partial file is left"
    answer = bot.ask(question, "after")
    assert not answer.refused
    assert [c.case_id for c in answer.citations][:1] == ["added-calcinosis-case"]
    # A full ingest of the folder afterwards finds the index already in line with it.
    again = CaseIndex(bot.settings).ingest([knowledge], bot.lexicon, progress=False)
    assert again.added == [] and again.removed == [] and len(again.unchanged) == 3


def test_adding_one_file_keeps_cases_indexed_from_other_folders(library, tmp_path):
    bot, knowledge = library
    elsewhere = tmp_path / "elsewhere"
    write_case(elsewhere, id="other-folder-case", title="Digital ulcers after bosentan", organs="vascular")
    CaseIndex(bot.settings).ingest([knowledge, elsewhere], bot.lexicon, progress=False)
    add(check("new.md", NEW_CASE.encode(), bot.settings, bot.lexicon, existing(bot)), bot.settings, bot.lexicon)
    assert existing(bot) == {"kept-lung-case", "kept-renal-case", "other-folder-case", "added-calcinosis-case"}


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("notes.docx", b"a case", "only .markdown, .md, .pdf, .txt case files can be added"),
    ("empty.md", b"  \n", "file is empty"),
    ("bad.md", NEW_CASE.replace("outcome: partial", "outcome: cured").encode(), "'cured'"),
    ("unclosed.md", NEW_CASE.replace("\n---\n## Presentation", "\n## Presentation").encode(), "front matter"),
    ("binary.txt", b"\x00\x01\x02\xff" * 40, "binary"),
    ("broken.pdf", b"%PDF-1.4 not really a pdf", "PDF"),
    ("named.md", NEW_CASE.replace("Hard calcinosis", "Mrs Jane Doe had hard calcinosis").encode(),
     "line 14: possible name with title 'Mrs Jane Doe'"),
    ("dup.md", NEW_CASE.replace("id: added-calcinosis-case", "id: kept-lung-case").encode(),
     "already has a case with id 'kept-lung-case'"),
])
def test_unusable_files_are_refused_with_the_reason_and_nothing_changes(library, name, data, reason):
    bot, knowledge = library
    before = sorted(p.name for p in (knowledge / "cases").iterdir())
    with pytest.raises(IntakeError) as refused:
        check(name, data, bot.settings, bot.lexicon, existing(bot))
    assert name in str(refused.value) and reason in str(refused.value)
    assert sorted(p.name for p in (knowledge / "cases").iterdir()) == before
    assert existing(bot) == {"kept-lung-case", "kept-renal-case"}


def test_a_plain_text_file_takes_its_id_from_the_file_name(library):
    bot, knowledge = library
    text = b"Scleroderma heart involvement after MMF\n\nMyocarditis progressed despite MMF; cyclophosphamide followed."
    draft = check("Heart Case 7.txt", text, bot.settings, bot.lexicon, existing(bot))
    assert (draft.filename, draft.case.id, draft.case.title) == (
        "heart-case-7.txt", "heart-case-7", "Scleroderma heart involvement after MMF")
    add(draft, bot.settings, bot.lexicon)
    assert "heart-case-7" in existing(bot)


def test_the_form_makes_a_case_file_in_the_library_format(library, tmp_path):
    bot, _ = library
    fields = {"id": "form-made-case", "title": "Diffuse SSc skin progressing on methotrexate", "subtype": "diffuse",
              "organs": ["skin"], "antibodies": ["anti-Scl-70"], "failed_therapies": ["MTX"],
              "next_therapies": ["tocilizumab"], "outcome": "stabilised", "evidence": "composite-vignette",
              "source": ""}
    sections = {"Presentation": "Skin score rose.", "Resistance": "Progressed despite methotrexate.",
                "Teaching points": "- Tocilizumab can stabilise skin."}
    markdown = form_markdown(fields, sections)
    draft = check("form-made-case.md", markdown.encode(), bot.settings, bot.lexicon, existing(bot))
    case = draft.case
    assert (case.id, case.subtype, case.organs, case.antibodies, case.failed_therapies, case.outcome) == (
        "form-made-case", "diffuse", ["skin"], ["anti-Scl-70"], ["methotrexate"], "stabilised")
    assert [line for line in markdown.splitlines() if line.startswith("## ")] == [
        "## Presentation", "## Resistance", "## Teaching points"]
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "form-made-case.md").write_text(markdown)
    cases, rejections = load_cases([tmp_path / "check"], bot.lexicon)
    assert rejections == [] and cases[0].title == fields["title"]
