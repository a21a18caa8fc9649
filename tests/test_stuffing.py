"""Keyword stuffing (issue 21, item 5): a case whose text is the lexicon's terms and common clinical words repeated
hundreds of times must not win retrieval, answer off-topic questions or pass the web app's "Add a case" check."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from bot.conversation import CaseBot
from bot.evaluation import evaluate, plan, summarise
from bot.index import CaseIndex, format_report
from bot.intake import IntakeError, check
from bot.lexicon import Lexicon
from bot.settings import load_settings
from conftest import CASE_TEMPLATE, KNOWLEDGE, PROJECT_ROOT, run_casebot

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")
EVAL_FILES = sorted((PROJECT_ROOT / "evals").glob("*.yaml"))
STUFFED_ID = "zz-stuffed-everything"
COMMON_WORDS = ("patient treatment therapy dose disease symptoms options response failed worsening despite started "
                "improved stable outcome management first-line second-line escalation trial evidence child adult "
                "infection antibiotic pain exercise rehabilitation surgery target risk weeks months years").split()


def stuffed_case(folder: Path) -> Path:
    """A valid case file whose six sections are 1,200 words each drawn from every canonical lexicon name (organs,
    subtypes, antibodies, therapies) and common clinical words: ~100 KB, within the size limit."""
    raw = yaml.safe_load((KNOWLEDGE / "lexicon.yaml").read_text(encoding="utf-8"))
    words = [name for group in ("organs", "subtypes", "antibodies", "therapies") for name in raw[group]] + COMMON_WORDS
    rng = random.Random(21)
    sections = [" ".join(rng.choice(words) for _ in range(1200)) for _ in range(6)]
    text = CASE_TEMPLATE.format(
        id=STUFFED_ID, title="Systemic sclerosis in every organ on every therapy", subtype="diffuse",
        organs="skin, lung, kidney, heart, gastrointestinal, vascular", failed="mycophenolate mofetil",
        next="rituximab", outcome="improved", presentation=sections[0], prior=sections[1], resistance=sections[2],
        next_text=sections[3], outcome_text=sections[4], teaching=sections[5])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{STUFFED_ID}.md"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def stuffed_library(tmp_path_factory):
    """The shipped library plus the stuffed case, indexed by a plain ingest into a fresh index."""
    folder = tmp_path_factory.mktemp("stuffed")
    path = stuffed_case(folder / "extra")
    settings = load_settings(db=folder / "chroma", knowledge=KNOWLEDGE)
    report = CaseIndex(settings).ingest([KNOWLEDGE, path.parent], LEXICON, progress=False)
    return CaseBot(settings, log=lambda message: None), report, path


def test_ingest_indexes_the_stuffed_case_and_names_it(stuffed_library):
    bot, report, path = stuffed_library
    assert STUFFED_ID in report.added and STUFFED_ID in bot.retriever.cases
    [line] = [line for line in format_report(report).splitlines() if line.startswith(f"check {path}:")]
    assert "keyword stuffing" in line and "distinct" in line and "not searched" in line


def test_a_stuffed_case_neither_moves_the_shipped_eval_nor_answers_off_topic_questions(knowledge_bot, stuffed_library):
    """The issue measured 100% -> 78.2% with such a case, refusal recall 100% -> 9.1%. Both runs here use the same
    code and the same shipped files, so only the stuffed case differs."""
    bot, _, _ = stuffed_library
    planned = plan(EVAL_FILES)
    shipped, stuffed = summarise(evaluate(knowledge_bot, planned)), evaluate(bot, planned)
    with_stuffing = summarise(stuffed)
    assert with_stuffing.pass_rate >= shipped.pass_rate - 0.01, (shipped.passed, with_stuffing.passed)
    assert with_stuffing.refusal_recall >= shipped.refusal_recall - 0.01
    cited_off_topic = [result.id for result in stuffed for turn in result.turns
                       if turn.expect_refusal and STUFFED_ID in turn.cited]
    assert cited_off_topic == []


def test_the_stuffed_case_ranks_below_the_case_a_question_is_about(stuffed_library):
    bot, _, _ = stuffed_library
    hits = bot.retriever.search("ATA-positive dcSSc-ILD with FVC still falling on MMF: what was added?")
    ranked = [hit.case.id for hit in hits]
    assert ranked[0] == "ild-mmf-failure-nintedanib" and STUFFED_ID not in ranked[:5]


def test_add_a_case_refuses_stuffed_text_by_name(tmp_path):
    settings = load_settings(db=tmp_path / "db", knowledge=tmp_path / "knowledge")
    path = stuffed_case(tmp_path / "upload")
    with pytest.raises(IntakeError) as refused:
        check(path.name, path.read_bytes(), settings, LEXICON, set())
    message = str(refused.value)
    assert message.startswith(f"{path.name}: keyword stuffing: ") and "distinct" in message and "times" in message

    one_word = CASE_TEMPLATE.format(
        id="one-word-stuffed", title="Skin thickening on rituximab", subtype="diffuse", organs="skin", failed="",
        next="rituximab", outcome="improved", presentation="Skin thickening progressed. " + "rituximab " * 80,
        prior="None.", resistance="Progressive.", next_text="Rituximab was given.", outcome_text="Softer skin.",
        teaching="None.")
    with pytest.raises(IntakeError, match=r"one-word-stuffed\.md: keyword stuffing: 'rituximab' is \d+ of its"):
        check("one-word-stuffed.md", one_word.encode(), settings, LEXICON, set())


def test_no_shipped_or_heldout_case_reads_as_stuffing():
    """The thresholds leave every real case with room: `casebot check` names none of them."""
    result = run_casebot("check", "--source", str(KNOWLEDGE), "--source", str(PROJECT_ROOT / "tests" / "heldout"))
    assert "keyword stuffing" not in result.stdout, result.stdout


def test_casebot_check_names_the_stuffed_file(tmp_path):
    path = stuffed_case(tmp_path / "library")
    result = run_casebot("check", "--source", str(path.parent))
    assert result.returncode == 1
    assert f"{path}: body: keyword stuffing: " in result.stdout
