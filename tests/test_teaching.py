"""Teaching mode over the real case library: walk-throughs staged from the case files, quiz answer keys
checked against the cases' front matter, seeds that repeat a quiz (also across processes), handouts in
Markdown, HTML and PDF (printed by the real chromium), and plain or PDF cases staged by paragraphs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from bot.cases import ORGANS, Case, load_cases
from bot.lexicon import Lexicon
from bot.settings import load_settings
from bot.teaching import KINDS, Question, Session, Teaching, WalkRecord, print_pdf
from bot.text import sentences
from conftest import CASEBOT, KNOWLEDGE, PROJECT_ROOT, run_casebot, write_case

LEXICON = Lexicon.load(KNOWLEDGE / "lexicon.yaml")
STANDARD = ["Presentation", "Prior treatment", "Resistance", "Next therapy", "Outcome", "Teaching points"]
SEEDS = range(25)
CASE = "ild-mmf-failure-nintedanib"


@pytest.fixture(scope="module")
def teaching() -> Teaching:
    teaching, skipped = Teaching.from_files(load_settings(knowledge=KNOWLEDGE))
    assert not skipped
    return teaching


def files() -> dict[str, Case]:
    """The shipped cases as their files say, read here rather than through teaching mode."""
    cases, _ = load_cases([KNOWLEDGE], LEXICON)
    return {case.id: case for case in cases}


def section(case: Case, heading: str) -> str:
    found = re.search(rf"^## {re.escape(heading)}\n([\s\S]*?)(?=^## |\Z)", case.body, re.MULTILINE)
    return found.group(1).strip() if found else ""


def names(therapy: str) -> list[str]:
    """Every way the lexicon writes a therapy."""
    return next((list(t.aliases) for t in LEXICON.terms if t.group == "therapies" and t.canonical == therapy),
                [therapy])


def mentions(text: str, aliases: list[str]) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(alias)}(?!\w)", text, re.IGNORECASE) for alias in aliases)


def squeeze(text: str) -> str:
    return " ".join(text.split())


def check_against_files(question: Question, cases: dict[str, Case]) -> None:
    """The answer key is what the case file records, and no other option is also right by it."""
    case = cases[question.case_id]
    others = [option for option in question.options if option != question.answer]
    assert question.answer in question.options
    assert len({option.lower() for option in question.options}) == len(question.options), question.options
    assert 3 <= len(question.options) <= 4
    assert f"[{case.id}]" in question.explanation
    assert case.id not in question.question and case.title not in question.question  # both give answers away
    if question.kind == "next-therapy":
        assert question.answer in case.next_therapies
        assert all(therapy in question.question for therapy in case.failed_therapies)
        assert not set(others) & set(case.therapies)
        assert not any(mentions(section(case, "Next therapy"), names(option)) for option in others), others
    elif question.kind in ("antibody", "antibody-risk"):
        assert question.answer in case.antibodies
        assert not set(others) & set(case.antibodies)
        aliases = next(t.aliases for t in LEXICON.terms if t.group == "antibodies" and t.canonical == question.answer)
        assert not mentions(question.question, list(aliases)), question.question  # the answer is not in the stem
        if question.kind == "antibody-risk":
            blanked = re.search(r"“(.+)”", question.question).group(1)
            whole = re.search(r"“(.+)”", question.explanation).group(1)
            assert squeeze(whole) in squeeze(case.body)  # the case's own sentence
            assert re.search(r"\b(risk|linked to|associated with)\b", whole, re.IGNORECASE)
            filled = re.fullmatch(re.escape(blanked).replace("_____", "(.+?)"), whole)
            assert filled and all(name.lower() in {a.lower() for a in aliases} for name in filled.groups())
    else:
        assert question.kind == "outcome"
        assert question.answer == case.outcome != "unknown"
        assert all(therapy in question.question for therapy in case.therapies)


def test_every_answer_key_matches_its_case_file_over_many_seeds_and_every_organ(teaching):
    cases = files()
    organs = [organ for organ in ORGANS if any(organ in case.organs for case in cases.values())]
    kinds = set()
    checked = 0
    quizzable = {organ: sum(1 for c in cases.values() if (not organ or organ in c.organs)
                            and teaching.case_questions(c.id)) for organ in [None, *organs]}
    for seed in SEEDS:
        for organ in [None, *organs]:
            questions = teaching.quiz(n=8, organ=organ, seed=seed)
            assert questions, (seed, organ)
            ids = [q.case_id for q in questions]
            assert len(set(ids)) == min(len(ids), quizzable[organ])  # a case repeats only once all have a question
            for question in questions:
                if organ:
                    assert organ in cases[question.case_id].organs
                check_against_files(question, cases)
                kinds.add(question.kind)
                checked += 1
    assert kinds == set(KINDS)
    assert checked > 1000
    for case_id in cases:  # and every question any case allows
        for question in teaching.case_questions(case_id, seed=5):
            check_against_files(question, cases)


SUBTYPE_WORDS = {"diffuse cutaneous SSc": "diffuse", "limited cutaneous SSc": "limited",
                 "SSc sine scleroderma": "sine", "an SSc overlap syndrome": "overlap", "systemic sclerosis": "unknown"}
STEM = re.compile(r"A patient with (?P<subtype>.+?)"
                  r"(?: \((?:(?P<organs>[^;)]+) involvement)?(?:; )?(?P<antibodies>[^)]*)\))?(?:[:.]|$)")


def described(question: Question) -> dict:
    """What the stem says of its patient, read from the question's words alone, as front-matter fields."""
    stem = STEM.match(question.question)
    assert stem, question.question
    course = re.search(r": (?:(.+?) had failed)?(?: and )?(?:(.+?) (?:followed|was given))?[.]", question.question)
    listed = lambda text: {t for part in (text or "").split(", ") for t in part.split(" and ") if t}  # noqa: E731
    return {"subtype": SUBTYPE_WORDS[stem["subtype"]],
            "organs": {o.strip().replace(" ", "-") for o in (stem["organs"] or "").split(",") if o.strip()},
            "antibodies": {a.strip() for a in (stem["antibodies"] or "").split(",") if a.strip()},
            "failed_therapies": listed(course and course[1]),
            "next_therapies": listed(course and course[2]) if question.kind == "outcome" else set()}


def fits(stem: dict, case: Case) -> bool:
    """The case is one the stem's patient could be: nothing the stem says is untrue of it."""
    return stem["subtype"] in ("unknown", case.subtype) and all(
        stem[field] <= set(getattr(case, field))
        for field in ("organs", "antibodies", "failed_therapies", "next_therapies"))


def test_a_question_has_one_right_answer_across_the_library(teaching):
    """Every case the stem fits counts as a right answer: none of their answers is offered as a wrong one
    (issue 18: "mycophenolate mofetil had failed" marked nintedanib wrong while another case gave it)."""
    cases = files()
    checked = 0
    for seed in SEEDS:
        for question in teaching.quiz(n=40, seed=seed):
            if question.kind == "antibody-risk":  # its stem is one case's own sentence
                continue
            stem = described(question)
            assert fits(stem, cases[question.case_id]), question.question
            right = set()
            for case in cases.values():
                if fits(stem, case):
                    right |= {"next-therapy": set(case.next_therapies), "antibody": set(case.antibodies),
                              "outcome": {case.outcome}}[question.kind]
            wrong = [option for option in question.options if option != question.answer]
            assert not right & set(wrong), (question.question, question.options, question.answer)
            checked += 1
    assert checked > 500
    issue = "A patient with diffuse cutaneous SSc (lung, skin involvement): mycophenolate mofetil had failed."
    reported = [q for seed in SEEDS for q in teaching.quiz(n=200, seed=seed) if q.question.startswith(issue)]
    assert reported and all("nintedanib" not in q.options for q in reported)


def test_cases_are_offered_by_neutral_labels_naming_no_therapy(teaching):
    labels = [teaching.label(case.id) for case in teaching.cases]
    assert len(set(labels)) == len(labels)
    therapy_words = {alias.lower() for t in LEXICON.terms if t.group == "therapies" for alias in t.aliases}
    for number, (case, label) in enumerate(zip(teaching.cases, labels), start=1):
        assert label.startswith(f"Case {number} — ") or label == f"Case {number}"
        assert case.id not in label and case.title not in label
        assert not any(mentions(label, [word]) for word in therapy_words), label
        assert all(organ.replace("-", " ") in label for organ in case.organs)
    lung = teaching.label(CASE)
    assert re.fullmatch(r"Case \d+ — diffuse, lung(?: and \w+)?", lung), lung


def test_the_student_handout_stops_at_each_pause_and_holds_no_answer_key(teaching, tmp_path):
    questions = teaching.quiz(n=4, seed=7)
    session = Session(walks=[WalkRecord(case_id=CASE, group_answer="nintedanib")], questions=questions,
                      responses=[q.answer for q in questions])
    student = teaching.handout_markdown(session, student=True)
    educator = teaching.handout_markdown(session)
    walk = teaching.walkthrough(CASE)
    assert teaching.label(CASE) in student and "What would you consider next?" in student
    assert all(squeeze(stage.text) in squeeze(student) for stage in walk.before)
    for hidden in [*walk.reveal, *walk.teaching]:
        assert squeeze(hidden.text) not in squeeze(student) and squeeze(hidden.text) in squeeze(educator)
    assert CASE not in student and walk.case.title not in student and "[" not in student
    assert "nintedanib" not in student.split("## Quiz")[0].lower()  # the answer: the group's, the title name it
    assert "Answer key" not in student and "Group's choice" not in student
    for question in questions:
        assert question.question in student and question.explanation not in student
        assert all(f"- {letter}. {option}" in student for letter, option in zip("ABCD", question.options))
    assert "Answer key" in educator and CASE in educator
    page = tmp_path / "student.pdf"
    teaching.export(session, "pdf", page, student=True)
    printed = "\n".join(p.extract_text() for p in PdfReader(page).pages)
    assert "What would you consider next?" in printed and "Answer key" not in printed and CASE not in printed


def test_the_same_seed_gives_the_same_quiz_and_other_seeds_other_quizzes(teaching):
    again, _ = Teaching.from_files(load_settings(knowledge=KNOWLEDGE))
    first = teaching.quiz(n=6, seed=42)
    assert len(first) == 6
    assert again.quiz(n=6, seed=42) == first
    assert teaching.quiz(n=6, organ="lung", seed=42) == again.quiz(n=6, organ="ILD", seed=42)  # lexicon synonym
    assert any(teaching.quiz(n=6, seed=seed) != first for seed in (1, 2, 3))


def test_a_walkthrough_follows_the_case_sections_then_the_related_cases_of_the_library(teaching):
    cases = files()
    for case in cases.values():
        walk = teaching.walkthrough(case.id)
        headings = [stage.heading for stage in walk.before + walk.reveal + walk.teaching]
        assert headings == [h for h in STANDARD if section(case, h)], case.id
        assert [s.heading for s in walk.before] == STANDARD[:3]  # the pause comes after the resistance
        for stage in walk.before + walk.reveal + walk.teaching:
            assert squeeze(stage.text) == squeeze(section(case, stage.heading).replace("[", "(").replace("]", ")"))
        assert walk.related, case.id
        for related in walk.related:
            other = cases[related.case_id]
            assert other.id != case.id
            assert set(other.failed_therapies) & set(case.failed_therapies) or set(other.organs) & set(case.organs)
    walk = teaching.walkthrough(CASE)  # cases sharing the failed therapy come before those sharing only an organ
    sharing = [r.case_id for r in walk.related if "mycophenolate mofetil" in cases[r.case_id].failed_therapies]
    assert [r.case_id for r in walk.related][: len(sharing)] == sharing and sharing


@pytest.fixture(scope="module")
def mixed_library(tmp_path_factory) -> Path:
    """A library with one front-matter case and three without standard sections: text, Markdown, PDF."""
    folder = tmp_path_factory.mktemp("mixed") / "knowledge"
    cases = folder / "cases"
    write_case(cases, id="std-case", organs="lung", failed="MMF", next="nintedanib", outcome="stabilised")
    (cases / "ulcer-note.txt").write_text(
        "Digital ulcers in limited SSc\n\nA woman had digital ulcers despite nifedipine.\n\n"
        "Sildenafil was added at 20 mg three times daily.\n\nThe ulcers healed within three months.\n",
        encoding="utf-8")
    (cases / "renal-report.md").write_text(
        "# Renal crisis report\n\nA man presented with renal crisis and a rising creatinine.\n\n"
        "Captopril was increased every day.\n\nKidney function recovered without dialysis.\n", encoding="utf-8")
    page = ("<html><body><p>Scanned calcinosis report</p><p>A woman had calcinosis of the fingers. "
            "Topical nitrates did not help. Deposits kept growing for a year. Surgery removed the largest deposit. "
            "The wound healed slowly. Pain improved afterwards.</p></body></html>")
    print_pdf(page, cases / "scanned-calcinosis.pdf")
    return folder


def test_cases_without_sections_are_staged_by_paragraphs_and_left_out_of_quizzes(mixed_library):
    teaching, skipped = Teaching.from_files(load_settings(knowledge=mixed_library))
    assert not skipped
    assert set(teaching.by_id) == {"std-case", "ulcer-note", "renal-report", "scanned-calcinosis"}
    for case_id in ("ulcer-note", "renal-report", "scanned-calcinosis"):
        walk = teaching.walkthrough(case_id)
        assert walk.before and walk.reveal and not walk.teaching, case_id
        assert [s.heading for s in walk.before + walk.reveal] == [f"Part {n}" for n in
                                                                   range(1, len(walk.before) + 2)]
        staged = squeeze(" ".join(s.text for s in walk.before + walk.reveal))
        body = teaching.by_id[case_id].body
        assert all(squeeze(sentence) in staged for sentence in sentences(body) if not sentence.startswith("#"))
        assert walk.summary == "" and walk.related == []
        handout = teaching.handout_markdown(Session(walks=[WalkRecord(case_id=case_id)]))
        assert "What would you consider next?" in handout and f"[{case_id}]" in handout
    assert "healed" in teaching.walkthrough("ulcer-note").reveal[0].text  # the last paragraph is the reveal
    assert len(teaching.walkthrough("scanned-calcinosis").before) >= 1  # one PDF block, split by sentences
    for seed in SEEDS:
        assert {q.case_id for q in teaching.quiz(n=10, seed=seed)} == {"std-case"}

    result = run_casebot("teach", "scanned-calcinosis", env={"CASEBOT_KNOWLEDGE": str(mixed_library)})
    assert result.returncode == 0, result.stderr
    assert "Part 1" in result.stdout and "Pain improved afterwards" in result.stdout


def test_quiz_json_from_the_cli_is_the_same_for_a_seed_in_any_process(teaching):
    runs = [run_casebot("quiz", "--n", "6", "--seed", "11", "--json", env={"PYTHONHASHSEED": hash_seed})
            for hash_seed in ("1", "2")]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    quiz = json.loads(runs[0].stdout)
    assert len(quiz) == 6
    for item in quiz:
        assert {"question", "options", "answer", "case_id", "explanation"} <= set(item)
        assert item["answer"] in item["options"]
    assert quiz == [q.model_dump() for q in teaching.quiz(n=6, seed=11)]
    plain = run_casebot("quiz", "--n", "2", "--organ", "kidney", "--seed", "3")
    assert plain.returncode == 0 and "## Answer key" in plain.stdout
    assert "seed" not in plain.stderr  # a given seed is not announced; a random one is
    drawn = run_casebot("quiz", "--n", "1", "--json")
    seed = re.search(r"--seed (\d+)", drawn.stderr).group(1)
    assert run_casebot("quiz", "--n", "1", "--json", "--seed", seed).stdout == drawn.stdout


def test_unknown_case_ids_and_organs_are_refused_by_name(teaching):
    result = run_casebot("teach", "ild-mmf-failure-nintedanb")
    assert result.returncode == 2 and not result.stdout
    assert "'ild-mmf-failure-nintedanb'" in result.stderr and CASE in result.stderr  # the near miss is offered
    result = run_casebot("quiz", "--organ", "liver")
    assert result.returncode == 2
    assert "'liver'" in result.stderr and "lung, pulmonary-hypertension" in result.stderr
    assert run_casebot("quiz", "--organ", "lungs", "--n", "1", "--seed", "1").returncode == 0  # a synonym
    result = run_casebot("quiz", "--n", "0")
    assert result.returncode == 2 and "not 0" in result.stderr


def test_teach_prints_markdown_and_writes_html_and_pdf_handouts(teaching, tmp_path):
    case = files()[CASE]
    result = run_casebot("teach", CASE)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    order = [text.index(f"### {h}") for h in STANDARD[:3]] + [text.index("What would you consider next?")] + [
        text.index(f"### {h} [{CASE}]") for h in STANDARD[3:]]
    assert order == sorted(order)  # staged, the pause before the reveal
    assert all(squeeze(s) in squeeze(text) for h in STANDARD for s in sentences(section(case, h)))
    assert text.index("## Quiz") < text.index("## Answer key")
    assert len(re.findall(r"^\d+\. \*\*[A-D]\. ", text, re.MULTILINE)) == len(teaching.case_questions(CASE)) == 3
    for related in teaching.walkthrough(CASE).related:
        assert f"- [{related.case_id}]" in text

    page = tmp_path / "out" / "handout.html"
    result = run_casebot("teach", CASE, "--format", "html", "--output", str(page))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == page.resolve()
    shown = page.read_text(encoding="utf-8")
    assert f'<span class="cite">[{CASE}]</span>' in shown and "<style>" in shown and "http" not in shown

    pdf = tmp_path / "handout.pdf"
    result = run_casebot("teach", CASE, "--format", "pdf", "--output", str(pdf))
    assert result.returncode == 0, result.stderr
    assert pdf.read_bytes().startswith(b"%PDF-")
    printed = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert CASE in printed and "What would you consider next?" in printed and "Answer key" in printed


def test_teach_student_writes_the_handout_without_the_answer_key_or_the_reveal(teaching, tmp_path):
    """Issue 18, item 9: `casebot teach --student` is the copy handed out before the session."""
    walk = teaching.walkthrough(CASE)
    result = run_casebot("teach", CASE, "--student")
    assert result.returncode == 0, result.stderr
    student = result.stdout
    assert teaching.label(CASE) in student and "What would you consider next?" in student
    assert all(squeeze(stage.text) in squeeze(student) for stage in walk.before)
    for hidden in [*walk.reveal, *walk.teaching]:  # what was done, how it went, the teaching points
        assert squeeze(hidden.text) not in squeeze(student)
    assert "Answer key" not in student and CASE not in student and walk.case.title not in student
    questions = teaching.case_questions(CASE)
    assert questions and all(q.question in student and q.explanation not in student for q in questions)
    assert "nintedanib" not in student.split("## Quiz")[0].lower()  # the therapy that followed, never named

    result = run_casebot("teach", CASE, "--student", "--format", "pdf", cwd=tmp_path,
                         env={"CASEBOT_KNOWLEDGE": str(KNOWLEDGE)})  # written where it is run, named as a copy
    assert result.returncode == 0, result.stderr
    pdf = tmp_path / f"casebot-handout-{CASE}-student.pdf"
    assert Path(result.stdout.strip()).name == pdf.name and pdf.read_bytes().startswith(b"%PDF-")
    printed = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "What would you consider next?" in printed and "Answer key" not in printed and CASE not in printed


def test_a_pdf_handout_without_chromium_says_so_and_writes_nothing(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "handout.pdf"
    result = run_casebot("teach", CASE, "--format", "pdf", "--output", str(out), env={"PATH": str(empty)})
    assert result.returncode == 2
    assert "chromium" in result.stderr and "not installed" in result.stderr
    assert not out.exists()


def test_handouts_keep_the_groups_answers_and_show_case_html_as_text(tmp_path):
    cases = tmp_path / "knowledge" / "cases"
    write_case(cases, id="xss-case", organs="kidney", failed="ACE inhibitors", next="plasma exchange",
               outcome="stabilised", presentation="<script>alert(1)</script> <img src=x onerror=alert(2)> "
               "See [other-case] too.")
    write_case(cases, id="other-case", organs="kidney", failed="ACE inhibitors", next="eculizumab", outcome="died")
    teaching, _ = Teaching.from_files(load_settings(knowledge=tmp_path / "knowledge"))
    questions = teaching.case_questions("xss-case")
    wrong = next(option for option in questions[0].options if option != questions[0].answer)
    session = Session(walks=[WalkRecord(case_id="xss-case", group_answer="<b>Plasma exchange</b>, then [x-case]")],
                      questions=questions[:2], responses=[wrong, questions[1].answer])
    text = teaching.handout_markdown(session)
    assert "> <b>Plasma exchange</b>, then (x-case)" in text  # the group's words, unable to plant a citation
    assert f"Group's choice: {wrong} (wrong)." in text and f"Group's choice: {questions[1].answer} (correct)." in text
    assert "(other-case)" in text and "See [other-case]" not in text
    page = teaching.handout_html(session)
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;Plasma exchange&lt;/b&gt;" in page
    assert '<span class="cite">[other-case]</span>' in page  # cited as a related case, not planted
    assert page.count('<span class="cite">[x-case]</span>') == 0


def test_output_piped_into_head_ends_quietly():
    """`casebot quiz | head -0`: the reader closes the pipe before the quiz is written; no traceback follows."""
    quiz = subprocess.Popen([*CASEBOT, "quiz", "--n", "40", "--seed", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=PROJECT_ROOT)
    quiz.stdout.close()  # what `head` does once it has its lines
    assert quiz.wait(timeout=120) == 0
    errors = quiz.stderr.read()
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors
