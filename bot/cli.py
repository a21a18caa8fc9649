"""The `casebot` command line: ingest, ask, chat, eval, serve, feedback, pathways, teach, quiz, similar, check."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bot.settings import Settings, load_settings

if TYPE_CHECKING:
    from bot.teaching import Teaching


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="casebot", description="Case-review assistant for resistant SSc")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="build or refresh the index from case files")
    ingest.add_argument("--source", action="append", type=Path, help="case folder (repeatable); default: knowledge/")
    ingest.add_argument("--reset", action="store_true", help="delete the index first and rebuild it")
    ingest.add_argument("--strict", action="store_true", help="refuse files with likely patient identifiers "
                        "or whose text contradicts their front matter (as `casebot check` finds)")

    ask = commands.add_parser("ask", help="answer one question")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the answer object as JSON")
    ask.add_argument("--k", type=positive_int, help="cite at most this many cases (1 or more)")
    ask.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                     help="organ, subtype, therapy or outcome (repeatable)")

    chat = commands.add_parser("chat", help="a conversation in the terminal")
    chat.add_argument("--jsonl", action="store_true", help='read {"question", "conversation"} lines, write answers')

    serve = commands.add_parser("serve", help="the web app")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    feedback = commands.add_parser("feedback", help="clinicians' ratings and comments from the web app")
    feedback_actions = feedback.add_subparsers(dest="action", required=True)
    feedback_export = feedback_actions.add_parser("export", help="write every rating and comment to a CSV file")
    feedback_export.add_argument("file", type=Path, metavar="FILE.csv")

    evaluate = commands.add_parser("eval", help="run scripted test prompts and report (exit 0 all passed, "
                                   "1 some failed, 2 invalid input)")
    evaluate.add_argument("files", nargs="+", type=Path, metavar="FILE.yaml")
    evaluate.add_argument("--report", type=Path, default=Path("reports"),
                          help="folder for report.json, report.md, report.html (default reports/)")
    evaluate.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    evaluate.add_argument("--compare", type=Path, metavar="OLD/report.json", help="an earlier run's report.json")
    evaluate.add_argument("--tag", action="append", default=[], help="run only tests with this tag (repeatable)")

    pathways = commands.add_parser("pathways", help="after a therapy failed: what came next, and how it went")
    pathways.add_argument("--failed", required=True, metavar="THERAPY", help="e.g. MMF, rituximab, ACE inhibitors")
    pathways.add_argument("--organ")
    pathways.add_argument("--json", action="store_true")

    teach = commands.add_parser("teach", help="a case as a teaching handout: staged walk-through, quiz, answer key")
    teach.add_argument("case_id", metavar="CASE_ID")
    teach.add_argument("--format", choices=("md", "html", "pdf"), default="md",
                       help="md is printed unless --output is given; html and pdf are written to a file")
    teach.add_argument("--output", type=Path, metavar="FILE",
                       help="default: casebot-handout-CASE_ID.FORMAT (casebot-handout-CASE_ID-student.FORMAT)")
    teach.add_argument("--student", action="store_true",
                       help="the student copy: the case up to its pause and the questions, without the answer key")

    calibrate = commands.add_parser("calibrate", help="fit the relevance gate on the library and show the fit")
    calibrate.add_argument("--show", action="store_true", help="also print each calibration question's score")

    quiz = commands.add_parser("quiz", help="multiple-choice questions from the case library, with an answer key")
    quiz.add_argument("--n", type=int, default=5, help="number of questions (default 5)")
    quiz.add_argument("--organ", help="only cases with this organ (synonyms such as ILD work)")
    quiz.add_argument("--seed", type=int, help="the same seed gives the same quiz; default: a random one, printed")
    quiz.add_argument("--json", action="store_true",
                      help='print [{"question", "options", "answer", "case_id", "explanation", "kind"}]')

    similar = commands.add_parser("similar", help="patients like mine: the cases most like a de-identified vignette, "
                                  "and what followed (exit 2 when refused)")
    similar.add_argument("vignette", nargs="?", help='e.g. "52F, dcSSc 3 y, anti-Scl-70+, FVC 58%% falling on MMF"')
    similar.add_argument("--file", type=Path, metavar="PATH", help="read a longer vignette from this text file")
    similar.add_argument("--json", action="store_true", help="print the profile, matches and what followed as JSON")
    similar.add_argument("--k", type=positive_int, help="similar cases shown (default 5)")

    check = commands.add_parser("check", help="audit the case library: front matter against its own text, "
                                "duplicates, missing sections (exit 1 with findings)")
    check.add_argument("--source", action="append", type=Path, help="case folder (repeatable); default: knowledge/")

    for sub in (ingest, ask, chat, serve, evaluate, feedback_export, pathways, calibrate, similar):
        sub.add_argument("--db", type=Path, help="index folder (default .casebot/chroma)")

    args = parser.parse_args(argv)
    try:
        settings = load_settings(db=getattr(args, "db", None), host=getattr(args, "host", None),
                                 port=getattr(args, "port", None), max_cases=getattr(args, "k", None))
    except ValidationError as error:  # a bad CASEBOT_* variable: named with its value, no traceback
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        print(f"casebot: setting {name} (CASEBOT_{name.upper()}): {first['msg']} (got {first.get('input')!r})",
              file=sys.stderr)
        return 2
    if args.command in ("ask", "chat", "serve", "eval"):  # a backend's missing package stops these at once
        from bot.generation import BackendError, require_backend_package

        try:
            require_backend_package(settings)
        except BackendError as error:
            print(f"casebot: {error}", file=sys.stderr)
            return 2
    from bot.index import IndexMismatch, IndexUnavailable, IndexWriteError

    try:
        return {"ingest": run_ingest, "ask": run_ask, "chat": run_chat, "serve": run_serve,
                "eval": run_eval, "feedback": run_feedback, "pathways": run_pathways, "teach": run_teach,
                "quiz": run_quiz, "calibrate": run_calibrate, "similar": run_similar,
                "check": run_check}[args.command](args, settings)
    except (IndexMismatch, IndexUnavailable, IndexWriteError) as error:  # the server down: said, exit 2
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: nothing is wrong, say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run_pathways(args: argparse.Namespace, settings: Settings) -> int:
    from bot.index import SideIndex, ensure_index
    from bot.lexicon import Lexicon
    from bot.pathways import markdown_table, pathway

    lexicon = Lexicon.load(settings.lexicon_path)
    cases = SideIndex.load(ensure_index(settings, lexicon, log=lambda m: print(m, file=sys.stderr))).cases
    result = pathway(cases.values(), lexicon, args.failed, organ=args.organ)
    if args.json:
        print(result.model_dump_json(indent=2))
    elif not result.rows:
        print(f"No case in the library records {result.failed!r} as a failed therapy.")
    else:
        print(markdown_table(result))
    return 0


def run_similar(args: argparse.Namespace, settings: Settings) -> int:
    """The vignette (argument or --file) through bot/similar.py; a refusal or an unusable vignette is exit 2."""
    from bot.similar import PatientMatcher, VignetteError, markdown

    if (args.vignette is None) == (args.file is None):
        print("casebot: give the vignette as an argument or with --file PATH, not both or neither", file=sys.stderr)
        return 2
    try:
        vignette = args.vignette if args.file is None else args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"casebot: cannot read {args.file}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
        return 2
    matcher = PatientMatcher.open(settings, log=lambda message: print(message, file=sys.stderr))
    try:
        result = matcher.find(vignette, k=args.k or settings.similar_k)
    except VignetteError as error:
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    print(result.model_dump_json(indent=2) if args.json else markdown(result))
    return 0


def run_teach(args: argparse.Namespace, settings: Settings) -> int:
    """The case's handout (walk-through, its quiz questions and answer key) from the case files; with --student
    the copy to hand out before the session, which stops at the pause and holds no answer."""
    from bot.teaching import HandoutError, Session, TeachingError, WalkRecord

    try:
        teaching = _teaching(settings)
        session = Session(walks=[WalkRecord(case_id=teaching.case(args.case_id).id)],
                          questions=teaching.case_questions(args.case_id))
        if args.format == "md" and args.output is None:
            print(teaching.handout_markdown(session, student=args.student), end="")
            return 0
        copy = "-student" if args.student else ""
        out = args.output or Path(f"casebot-handout-{args.case_id}{copy}.{args.format}")
        teaching.export(session, args.format, out, student=args.student)
    except (TeachingError, HandoutError) as error:
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"casebot: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    print(out)
    return 0


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    """The gate's fit on this library (fitted now if the library changed), and with --show every question."""
    from bot.conversation import CaseBot
    from bot.gate import example_questions, features, off_topic_questions, summary

    bot = CaseBot(settings, log=lambda message: print(message, file=sys.stderr))
    model = bot.gate.model(bot.retriever)
    print(summary(model))
    if args.show:
        retriever, calibration = bot.retriever, bot.gate.calibration
        rows = [(q, True) for q, _ in example_questions(retriever, calibration, settings.gate_calibration_questions)]
        rows += [(q, False) for q in off_topic_questions(retriever, calibration)]
        for question, answerable in rows:
            concepts = retriever.concepts(question)  # none: refused before any score ("hello")
            hits = retriever.search(question) if concepts else []
            known = retriever.library_coverage(concepts)
            score = max((model.score(features(h, known)) for h in hits), default=float("-inf"))
            wrong = (score >= model.threshold) != answerable
            print(f"{'WRONG ' if wrong else ''}{'answer' if answerable else 'refuse'} {score:6.2f}  {question}")
    return 0


def run_quiz(args: argparse.Namespace, settings: Settings) -> int:
    """Quiz questions from the case files; without --seed a random seed, printed so the quiz can be repeated."""
    import random

    from bot.teaching import TeachingError

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    if args.seed is None:
        print(f"seed {seed} (pass --seed {seed} to get this quiz again)", file=sys.stderr)
    try:
        teaching = _teaching(settings)
        questions = teaching.quiz(args.n, args.organ, seed)
    except TeachingError as error:
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    if not questions:
        print("casebot: no quiz question can be made: no case has the metadata questions need "
              "(failed and next therapies, antibodies, outcome)", file=sys.stderr)
        return 2
    if len(questions) < args.n:
        print(f"only {len(questions)} questions could be made from these cases", file=sys.stderr)
    if args.json:
        print(json.dumps([q.model_dump() for q in questions], indent=2, ensure_ascii=False))
    else:
        print(teaching.quiz_markdown(questions, []))
    return 0


def _teaching(settings: Settings) -> Teaching:
    """Teaching over the case files in settings.knowledge; files that cannot be used are named on stderr."""
    from bot.teaching import Teaching

    teaching, skipped = Teaching.from_files(settings)
    for reason in skipped:
        print(f"casebot: skipped {reason}", file=sys.stderr)
    return teaching


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from bot.index import CaseIndex, format_report
    from bot.lexicon import Lexicon

    sources = args.source or [settings.knowledge]
    missing = [str(source) for source in sources if not source.exists()]
    if missing:  # a mistyped folder must not read as "every case was deleted"
        print(f"casebot: source folder not found: {', '.join(missing)}; the index was not changed", file=sys.stderr)
        return 2
    index = CaseIndex.reset(settings) if args.reset else CaseIndex(settings)
    report = index.ingest(sources, Lexicon.load(settings.lexicon_path), strict=args.strict)
    print(format_report(report))
    return 2 if report.rejected else 0


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    """The library audit over the same sources as ingest: 0 clean, 1 findings, 2 a folder or file unusable."""
    from bot.audit import audit
    from bot.cases import load_cases
    from bot.claims import CLAIMS, ClaimReader
    from bot.lexicon import Lexicon

    sources = args.source or [settings.knowledge]
    missing = [str(source) for source in sources if not source.exists()]
    if missing:
        print(f"casebot: source folder not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    lexicon = Lexicon.load(settings.lexicon_path)
    cases, rejections = load_cases(sources, lexicon, settings.max_case_chars)
    for rejection in rejections:
        print(f"casebot: {rejection}", file=sys.stderr)
    findings = audit(cases, ClaimReader.load(CLAIMS, lexicon))
    for finding in findings:
        print(finding)
    print(f"{len(cases)} cases checked, {len(findings)} findings", file=sys.stderr)
    return 2 if rejections else 1 if findings else 0


def parse_filters(pairs: list[str]) -> dict[str, str]:
    filters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"filter {pair!r} is not KEY=VALUE")
        filters[key.strip()] = value.strip()
    return filters


def positive_int(text: str) -> int:
    """A count given on the command line (--k): a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def checked_filters(bot, filters: dict[str, str]) -> dict[str, str]:
    """The filters, each matching some case of the library: a value no case has (a misspelt therapy, an
    outcome that does not exist) is named with the values the library has, not answered as "nothing found"."""
    for key, value in filters.items():
        if not bot.retriever.allowed_cases({key: value}):  # an unknown key or organ raises FilterError here
            have = sorted(bot.retriever.side.facets[key])
            listed = ", ".join(have[:12]) + (f" and {len(have) - 12} more" if len(have) > 12 else "")
            raise ValueError(f"no case in the library has {key} {value!r}; its {key} values are {listed}")
    return filters


def run_ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.conversation import CaseBot

    try:
        filters = parse_filters(args.filter)
        bot = CaseBot(settings, log=lambda message: print(message, file=sys.stderr))
        answer = bot.ask(args.question, filters=checked_filters(bot, filters))
    except ValueError as error:
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    print(answer.model_dump_json(indent=2) if args.json else render(answer))
    return 0


def render(answer) -> str:
    """The answer for a terminal: the text, then each cited case with its source and passages."""
    lines = [answer.answer]
    if answer.understood_as:
        lines.insert(0, f"(understood as: {answer.understood_as})\n")
    for citation in answer.citations:
        lines.append(f"\n[{citation.case_id}] {citation.title}\n  source: {citation.source}")
        lines.extend(f'  > "{passage}"' for passage in citation.passages)
    lines.extend(f"warning: {warning}" for warning in answer.warnings)
    return "\n".join(lines)


def run_chat(args: argparse.Namespace, settings: Settings) -> int:
    from bot.conversation import CaseBot

    bot = CaseBot(settings, log=lambda message: print(message, file=sys.stderr))
    if args.jsonl:
        return _chat_jsonl(bot)
    print("Ask about the case library; an empty line or Ctrl-D ends the chat.")
    while True:
        try:
            question = input("> ")
        except EOFError:
            return 0
        if not question.strip():
            return 0
        try:
            print(render(bot.ask(question)) + "\n")
        except ValueError as error:
            print(f"casebot: {error}")


def _chat_jsonl(bot) -> int:
    """One answer object per input line, in order; lines with the same `conversation` share a conversation.
    A line that cannot be answered gets an error object naming the line and the problem; the others go on."""
    status = 0
    for number, raw in enumerate(sys.stdin.buffer, start=1):  # bytes: one line of bad UTF-8 is that line's error
        if not raw.strip():
            continue
        try:
            question, conversation, filters = _jsonl_request(raw)
            answer = bot.ask(question, conversation, checked_filters(bot, filters))
            print(answer.model_dump_json(), flush=True)
        except ValueError as error:  # bad JSON or fields, QuestionError and FilterError are ValueErrors
            print(json.dumps({"error": f"line {number}: {error}", "line": number}), flush=True)
            status = 2
    return status


def _jsonl_request(raw: bytes) -> tuple[object, str, dict[str, str]]:
    """The question, conversation and filters of one `chat --jsonl` line; ValueError names what is wrong."""
    try:
        request = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start})") from None
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not a JSON object ({error.msg} at column {error.colno}); each line is one request, "
                         '{"question": "..."}') from None
    if not isinstance(request, dict) or "question" not in request:
        raise ValueError('expected an object with a "question" field')
    conversation = request.get("conversation", "default")
    if not isinstance(conversation, (str, int)) or isinstance(conversation, bool):
        raise ValueError(f'"conversation" must be a string, not {json.dumps(conversation)[:60]}')
    filters = request.get("filters") or {}
    if not isinstance(filters, dict) or not all(isinstance(value, str) for value in filters.values()):
        raise ValueError(f'"filters" must be an object of "KEY": "VALUE" strings, not {json.dumps(filters)[:60]}')
    return request["question"], str(conversation), filters


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from bot.conversation import CaseBot
    from bot.evaluation import SuiteError, evaluate, plan, validate
    from bot.reports import ReportError, build_report, load_report, terminal, write_junit, write_reports

    try:
        planned = plan(args.files, args.tag)
        old = load_report(args.compare) if args.compare else None
        bot = CaseBot(settings, log=lambda message: print(message, file=sys.stderr))
        warnings = validate(bot, planned)
    except (SuiteError, ReportError) as error:
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    results = evaluate(bot, planned)
    report = build_report(results, args.files, args.tag, warnings, old, args.compare)
    print(terminal(report))
    written = write_reports(report, args.report) + ([write_junit(report, args.junit)] if args.junit else [])
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0 if report.summary.failed == 0 else 1


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.feedback import feedback_store
    from bot.web.app import serve

    try:
        settings.credentials  # a malformed CASEBOT_AUTH stops here, before the model loads
        if settings.database_url:  # so does a shared database that cannot be reached
            feedback_store(settings).check()
    except ValueError as error:
        print(f"casebot: {error}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


def run_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot.feedback import feedback_store

    try:
        store = feedback_store(settings)
        count = store.export_csv(args.file)
    except OSError as error:
        print(f"casebot: cannot write {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    except (ValueError, SQLAlchemyError) as error:  # a bad URL, a missing driver, a database that is down
        print(f"casebot: cannot read the feedback store: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {count} feedback rows from {store.where} to {args.file}")
    return 0
