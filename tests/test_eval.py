"""`casebot eval`: scripted test prompts run through the real command line against the shipped library,
failures reported as what they are, metrics that catch a bad answer, reports a maintainer and CI can read,
comparison with an earlier run, and a passed count that an independent script confirms."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright

from bot.answer import Answer, Citation, prompt
from bot.evaluation import Expectations, TestResult, assess, evaluate, plan, summarise, validate
from conftest import PROJECT_ROOT, run_casebot

SRC_QUESTION = "Scleroderma renal crisis still worsening on ACE inhibitors: what was tried?"
SRC_CASE = "seed-src-ace-plasma-exchange"
ILD_QUESTION = "ATA-positive dcSSc-ILD with FVC still falling on MMF: what was added, and what did SENSCIS show?"
ILD_CASE = "ild-mmf-failure-nintedanib"
OTITIS_QUESTION = "What dose of amoxicillin should a 4-year-old get for acute otitis media?"
GAVE_CASE = "gi-dcssc-rnap-gave-endoscopic-ablation"


def planted_suite(fixed: bool = False) -> dict:
    """Six tests: two that pass and four with a planted fault (a wrong citation, a missing expected case and
    two wrong refusals). `fixed` removes the four faults and plants one in the first test instead."""
    return {"name": "planted", "tests": [
        {"id": "planted-ok", "question": SRC_QUESTION, "tags": ["kidney"], "expect_cases": [SRC_CASE],
         "must_include": ["plasma exchange"]} | ({"must_not_include": ["plasma exchange"]} if fixed else {}),
        {"id": "planted-wrong-citation", "question": ILD_QUESTION, "tags": ["lung"], "expect_cases": [ILD_CASE]}
        | ({} if fixed else {"forbid_cases": [ILD_CASE]}),
        {"id": "planted-missing-case", "question": SRC_QUESTION, "tags": ["kidney"],
         "expect_cases": [SRC_CASE] + ([] if fixed else [ILD_CASE])},
        {"id": "planted-answered-not-refused", "question": SRC_QUESTION, "tags": ["kidney", "refusal"],
         "expect_refusal": not fixed},
        {"id": "planted-refused-not-answered", "question": OTITIS_QUESTION, "tags": ["refusal"],
         "expect_refusal": fixed},
        {"id": "planted-conversation", "tags": ["gastrointestinal", "follow-up"], "turns": [
            {"question": "Is there a case of watermelon stomach causing anaemia in SSc?", "expect_cases": [GAVE_CASE]},
            {"question": "Which autoantibody did she have?", "expect_cases": [GAVE_CASE],
             "must_include": ["RNA polymerase"]}]},
    ]}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, knowledge_settings, knowledge_bot):
    """`casebot eval` over the planted file, with every report and JUnit XML."""
    folder = tmp_path_factory.mktemp("planted")
    suite = write_yaml(folder / "planted.yaml", planted_suite())
    reports = folder / "reports"
    result = run_casebot("eval", str(suite), "--db", str(knowledge_settings.db), "--report", str(reports),
                         "--junit", str(folder / "junit.xml"))
    return folder, result, json.loads((reports / "report.json").read_text(encoding="utf-8"))


def test_each_planted_fault_is_reported_as_what_it_is(planted_run):
    _, result, report = planted_run
    assert result.returncode == 1, result.stderr
    tests = {test["id"]: test for test in report["tests"]}
    assert tests["planted-ok"]["passed"] and tests["planted-ok"]["failures"] == []
    assert tests["planted-conversation"]["passed"] and len(tests["planted-conversation"]["turns"]) == 2
    assert tests["planted-wrong-citation"]["failures"] == [f"forbidden case {ILD_CASE} cited"]
    [missing] = tests["planted-missing-case"]["failures"]
    assert missing.startswith(f"expected case {ILD_CASE} not cited (cited: {SRC_CASE}")
    assert tests["planted-answered-not-refused"]["failures"] == ["expected a refusal, got an answer"]
    assert tests["planted-refused-not-answered"]["failures"] == ["answer refused"]
    assert (report["summary"]["total"], report["summary"]["passed"], report["summary"]["failed"]) == (6, 2, 4)
    assert report["summary"]["pass_rate"] == pytest.approx(2 / 6, abs=1e-4)
    # one refusal given (wrongly), one expected (not given): both refusal metrics are 0
    assert report["summary"]["refusal_precision"] == 0.0 and report["summary"]["refusal_recall"] == 0.0
    assert report["by_tag"]["refusal"] == {"total": 2, "passed": 0, "pass_rate": 0.0}
    # every failed test and each of its failures is in the terminal table
    for test in report["tests"]:
        assert f"{'PASS' if test['passed'] else 'FAIL'}    {test['id']}" in result.stdout
        for failure in test["failures"]:
            assert f"- {failure}" in result.stdout
    assert "2 of 6 tests passed, 4 failed" in result.stdout


def test_junit_has_one_testcase_per_test_with_its_failures(planted_run):
    folder, _, report = planted_run
    root = ET.parse(folder / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert set(cases) == {test["id"] for test in report["tests"]}
    assert root.get("tests") == "6" and root.get("failures") == "4"
    for test in report["tests"]:
        failure = cases[test["id"]].find("failure")
        if test["passed"]:
            assert failure is None
        else:
            assert failure.get("message") == test["failures"][0]
            assert failure.text == "\n".join(test["failures"])


def test_markdown_and_html_reports_show_the_failures_the_metrics_and_three_plots(planted_run):
    folder, _, report = planted_run
    markdown = (folder / "reports" / "report.md").read_text(encoding="utf-8")
    assert "**2 of 6 tests passed**" in markdown
    for label in ("retrieval recall@5", "retrieval MRR", "citation precision", "citation recall",
                  "citation validity", "uncited factual sentences", "faithfulness proxy", "refusal precision",
                  "refusal recall", "latency p50 (ms)", "latency p95 (ms)"):
        assert f"| {label} |" in markdown
    failed_section = markdown.split("## Failed tests")[1].split("## All tests")[0]
    for test in report["tests"]:
        assert (f"### {test['id']}" in failed_section) != test["passed"]
        assert all(f"- {failure}" in failed_section for failure in test["failures"])
    page = (folder / "reports" / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<link" not in page and "src=" not in page, "the report must load nothing"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        try:
            view = browser.new_page()
            view.goto((folder / "reports" / "report.html").as_uri())
            assert view.locator("#headline").inner_text() == "2 of 6 tests passed, 4 failed."
            for plot, must_show in (("plot-pass-rate-by-tag", ["kidney", "refusal", "1/3", "0/2"]),
                                    ("plot-latency", ["p50", "p95"]),
                                    ("plot-recall-per-test", ["planted-missing-case", "citation recall"])):
                box = view.locator(f"#{plot} svg").bounding_box()
                assert box and box["width"] > 300 and box["height"] > 150, plot
                text = view.locator(f"#{plot} svg").text_content()
                assert all(word in text for word in must_show), (plot, text)
            assert view.locator("tr.fail").count() == 4
        finally:
            browser.close()


@pytest.mark.parametrize("name, content, message", [
    ("typo.yaml", {"name": "s", "tests": [{"id": "t1", "question": "q?", "expect_case": ["a"]}]},
     "test 't1' field 'expect_case': Extra inputs are not permitted"),
    ("type.yaml", {"name": "s", "tests": [{"id": "t1", "question": "q?", "expect_refusal": "maybe"}]},
     "test 't1' field 'expect_refusal'"),
    ("turn.yaml", {"name": "s", "tests": [{"id": "t2", "turns": [{"expect_cases": ["a"]}]}]},
     "test 't2' field 'turns.0.question': Field required"),
    ("nofile.yaml", "name: s\ntests:\n  - id: [unclosed\n", "cannot read YAML"),
])
def test_a_malformed_file_is_rejected_naming_file_test_and_field(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
    result = run_casebot("eval", str(path), "--report", str(tmp_path / "reports"))
    assert result.returncode == 2
    assert str(path) in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "reports").exists(), "nothing is written for an invalid file"


def test_an_unknown_filter_and_a_duplicate_test_id_are_invalid_input(tmp_path, knowledge_settings, knowledge_bot):
    bad_filter = write_yaml(tmp_path / "filter.yaml", {"name": "s", "tests": [
        {"id": "f1", "question": SRC_QUESTION, "filters": {"organ": "liver"}}]})
    result = run_casebot("eval", str(bad_filter), "--db", str(knowledge_settings.db))
    assert result.returncode == 2
    assert f"{bad_filter}: test 'f1' field 'filters': unknown organ 'liver'" in result.stderr
    first = write_yaml(tmp_path / "a.yaml", {"name": "a", "tests": [{"id": "same", "question": SRC_QUESTION}]})
    second = write_yaml(tmp_path / "b.yaml", {"name": "b", "tests": [{"id": "same", "question": SRC_QUESTION}]})
    result = run_casebot("eval", str(first), str(second))
    assert result.returncode == 2 and f"{second}: test 'same' field 'id': also used in {first}" in result.stderr
    result = run_casebot("eval", str(first), "--tag", "no-such-tag")
    assert result.returncode == 2 and "no test has tag 'no-such-tag'" in result.stderr


def test_compare_lists_regressions_fixes_and_metric_deltas(planted_run, knowledge_settings):
    folder, _, old = planted_run
    suite = write_yaml(folder / "planted-fixed.yaml", planted_suite(fixed=True))
    reports = folder / "after"
    result = run_casebot("eval", str(suite), "--db", str(knowledge_settings.db), "--report", str(reports),
                         "--compare", str(folder / "reports" / "report.json"))
    assert result.returncode == 1, result.stderr
    report = json.loads((reports / "report.json").read_text(encoding="utf-8"))
    comparison = report["comparison"]
    assert comparison["regressions"] == ["planted-ok"]
    assert comparison["fixes"] == ["planted-wrong-citation", "planted-missing-case", "planted-answered-not-refused",
                                   "planted-refused-not-answered"]
    assert comparison["deltas"]["passed"] == {"before": 2, "now": 5, "delta": 3}
    assert comparison["deltas"]["refusal_recall"] == {"before": 0.0, "now": 1.0, "delta": 1.0}
    assert "regressions (passed before, fail now): planted-ok" in result.stdout
    assert "fixes (failed before, pass now): planted-wrong-citation, planted-missing-case" in result.stdout
    assert any(line.split()[:5] == ["refusal", "recall", "0.0%", "100.0%", "+100.0"] for line in result.stdout.splitlines())
    assert "- Regressions (passed before, fail now): planted-ok" in (reports / "report.md").read_text(encoding="utf-8")
    assert "Regressions (passed before, fail now): planted-ok" in (reports / "report.html").read_text(encoding="utf-8")


def test_an_unreadable_comparison_report_is_invalid_input(tmp_path):
    suite = write_yaml(tmp_path / "s.yaml", {"name": "s", "tests": [{"id": "t", "question": SRC_QUESTION}]})
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"summary": {}, "tests": [{"id": "t"}]}), encoding="utf-8")
    result = run_casebot("eval", str(suite), "--compare", str(old))
    assert result.returncode == 2 and f"{old}: not a casebot report.json: field 'tests.0.passed'" in result.stderr


@pytest.fixture(scope="module")
def full_run(planted_run, knowledge_settings):
    """`casebot eval` over the shipped eval set plus the planted file: the files and report.json."""
    folder, _, _ = planted_run
    files = [*sorted(str(p) for p in (PROJECT_ROOT / "evals").glob("*.yaml")), str(folder / "planted.yaml")]
    result = run_casebot("eval", *files, "--db", str(knowledge_settings.db), "--report", str(folder / "all"))
    assert result.returncode == 1, result.stderr
    return files, json.loads((folder / "all" / "report.json").read_text(encoding="utf-8"))


def test_passed_count_agrees_with_an_independent_count_over_chat_jsonl(full_run, knowledge_settings):
    """`casebot eval` and tests/independent_count.py (its own YAML reading and checks, answers from
    `casebot chat --jsonl`) must agree test by test."""
    files, report = full_run
    count = subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "independent_count.py"), *files,
                            "--db", str(knowledge_settings.db)], capture_output=True, text=True, cwd=PROJECT_ROOT,
                           timeout=900)
    assert count.returncode == 0, count.stderr
    independent = json.loads(count.stdout)
    summary = report["summary"]
    assert (summary["total"], summary["passed"], summary["failed"]) == \
        (independent["total"], independent["passed"], independent["failed"])
    assert [t["id"] for t in report["tests"] if not t["passed"]] == independent["failed_ids"]
    assert independent["failed"] >= 4 and summary["total"] > 80  # the planted faults, and the hard set's misses


def test_shipped_answers_keep_the_citation_invariants_the_metrics_measure(full_run):
    """The extractive answers cite only retrieved cases, mark every sentence and quote their evidence, so
    citation validity, the uncited share and the faithfulness proxy are perfect; anything else is listed."""
    _, report = full_run
    problems = [f"{test['id']}: {problem}" for test in report["tests"] for turn in test["turns"]
                for problem in turn["citation_problems"] + turn["uncited_sentences"] + turn["unfaithful_sentences"]]
    assert problems == []
    summary = report["summary"]
    assert (summary["citation_validity"], summary["uncited_sentence_share"], summary["faithfulness"]) == (1.0, 0.0, 1.0)


def test_metrics_catch_a_generated_answer_with_bad_citations_and_unsupported_claims(knowledge_bot):
    """An answer as an LLM backend might write it: a sentence without a marker, a marker for a case that was
    not retrieved, a sentence whose drug and number its cited passage does not contain, and a table with a
    row naming a therapy its case does not mention (the lead-in line and the header row are not statements;
    the case counts are tallies, not claims)."""
    note = prompt(knowledge_bot.settings.prompts_dir, "educational_note.md")
    passage = "In SENSCIS (576 patients, about half already on stable MMF) nintedanib reduced the yearly fall in FVC by 44%."
    text = (f"- Nintedanib cut the yearly fall in FVC by 44% in SENSCIS [{ILD_CASE}].\n"
            f"- She then had 12 cycles of rituximab [{ILD_CASE}].\n"
            "- Tocilizumab was also tried.\n"
            "- See also [ild-cart-merkt-2024].\n\n"
            "After **mycophenolate mofetil** failed, the library records:\n\n"
            "| next therapy | cases |\n|---|---|\n"
            f"| nintedanib | 1 | [{ILD_CASE}] |\n| lung transplantation | 1 | [{ILD_CASE}] |\n\n" + note)
    answer = Answer(question="q", standalone_question="q", answer=text, retrieved=[ILD_CASE, SRC_CASE],
                    citations=[Citation(case_id=ILD_CASE, title="t", source="s", passages=[passage], score=0.8)],
                    timings_ms={"total": 50.0})
    turn = assess(Expectations(question="q", expect_cases=[ILD_CASE]), answer, knowledge_bot.retriever.cases,
                  knowledge_bot.lexicon, note)
    assert turn.failures == []  # the expectations hold; only the metrics show what is wrong
    assert turn.citation_problems == ["[ild-cart-merkt-2024] is not a retrieved case",
                                      "[ild-cart-merkt-2024] has no entry in citations"]
    assert turn.factual_sentences == 6 and turn.uncited_sentences == ["Tocilizumab was also tried."]
    assert turn.checked_sentences == 4
    assert turn.unfaithful_sentences == [
        f"She then had 12 cycles of rituximab [{ILD_CASE}]. (not in the cited evidence: rituximab, 12)",
        f"| lung transplantation | 1 | [{ILD_CASE}] | (not in the cited evidence: lung transplantation)"]
    assert (turn.citation_precision, turn.citation_recall, turn.retrieval_recall, turn.reciprocal_rank) == \
        (1.0, 1.0, 1.0, 1.0)
    summary = summarise([TestResult(id="t", suite="s", file="f", passed=True, latency_ms=50.0, turns=[turn])])
    assert (summary.citation_validity, summary.uncited_sentence_share, summary.faithfulness) == (0.0, 0.1667, 0.5)


def test_test_filters_apply_to_every_turn_without_its_own(knowledge_bot, tmp_path):
    """Each test is its own conversation; a turn's own filters replace the test's."""
    suite = write_yaml(tmp_path / "filters.yaml", {"name": "filters", "tests": [
        {"id": "filtered", "filters": {"organ": "lung"}, "turns": [
            {"question": SRC_QUESTION, "expect_cases": [SRC_CASE]},
            {"question": SRC_QUESTION, "expect_cases": [SRC_CASE], "filters": {"organ": "kidney"}}]}]})
    [result] = evaluate(knowledge_bot, plan([suite]))
    first, second = result.turns
    assert first.filters == {"organ": "lung"} and SRC_CASE not in first.cited
    assert second.filters == {"organ": "kidney"} and SRC_CASE in second.cited
    assert result.failures == [f"turn 1: expected case {SRC_CASE} not cited (cited: {', '.join(first.cited) or 'none'})"]


def test_tags_select_the_tests_that_carry_them(tmp_path):
    suite = write_yaml(tmp_path / "planted.yaml", planted_suite())
    assert [p.test.id for p in plan([suite], ["refusal"])] == ["planted-answered-not-refused",
                                                               "planted-refused-not-answered"]
    assert [p.test.id for p in plan([suite], ["lung", "follow-up"])] == ["planted-wrong-citation",
                                                                         "planted-conversation"]
    assert len(plan([suite])) == 6


def test_an_expected_case_missing_from_the_library_is_warned_about(knowledge_bot, tmp_path):
    suite = write_yaml(tmp_path / "unknown.yaml", {"name": "s", "tests": [
        {"id": "u1", "question": SRC_QUESTION, "expect_cases": [SRC_CASE], "forbid_cases": ["no-such-case"]}]})
    assert validate(knowledge_bot, plan([suite])) == [
        f"{suite}: test 'u1' field 'forbid_cases': case 'no-such-case' is not in the library"]
