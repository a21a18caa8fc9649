"""Evaluation results -> what people and CI read: a terminal table, report.json (SPEC section 6 shape),
report.md, report.html with plots, JUnit XML, and the comparison with an earlier run's report.json."""

from __future__ import annotations

import html
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from pydantic import BaseModel, ValidationError

from bot.evaluation import Summary, TagSummary, TestResult, by_tag, summarise

# Summary metrics as people read them: key, label, and whether it is a share (shown as a percentage).
METRICS = [
    ("pass_rate", "pass rate", True),
    ("retrieval_recall_at_k", "retrieval recall@k", True),
    ("mrr", "retrieval MRR", False),
    ("citation_precision", "citation precision", True),
    ("citation_recall", "citation recall", True),
    ("citation_validity", "citation validity", True),
    ("uncited_sentence_share", "uncited factual sentences", True),
    ("faithfulness", "faithfulness proxy", True),
    ("refusal_precision", "refusal precision", True),
    ("refusal_recall", "refusal recall", True),
    ("latency_p50_ms", "latency p50 (ms)", False),
    ("latency_p95_ms", "latency p95 (ms)", False),
]


class ReportError(ValueError):
    """An earlier report that cannot be compared with, naming the file and what is wrong."""


class MetricDelta(BaseModel):
    before: float
    now: float
    delta: float


class Comparison(BaseModel):
    """How this run differs from an earlier one, test by test and metric by metric."""

    old_report: str
    regressions: list[str]  # passed before, fail now
    fixes: list[str]  # failed before, pass now
    added: list[str]  # not in the earlier run
    removed: list[str]  # in the earlier run, not in this one
    deltas: dict[str, MetricDelta]


class Report(BaseModel):
    """report.json: `summary` and `tests` as SPEC section 6, plus the pass rate by tag and the comparison."""

    files: list[str]
    tags: list[str] = []
    summary: Summary
    by_tag: dict[str, TagSummary]
    tests: list[TestResult]
    warnings: list[str] = []
    comparison: Comparison | None = None


class EarlierTest(BaseModel):
    id: str
    passed: bool


class EarlierReport(BaseModel):
    """An earlier run's report.json, as far as a comparison reads it."""

    summary: dict[str, object]
    tests: list[EarlierTest]


def build_report(results: list[TestResult], files: list[Path], tags: list[str], warnings: list[str],
                 old: EarlierReport | None = None, old_path: Path | None = None) -> Report:
    report = Report(files=[str(f) for f in files], tags=tags, summary=summarise(results), by_tag=by_tag(results),
                    tests=results, warnings=warnings)
    if old is not None:
        report.comparison = compare(old, report, str(old_path))
    return report


def load_report(path: Path) -> EarlierReport:
    """An earlier run's report.json: only `summary` and each test's `id` and `passed` are needed."""
    try:
        return EarlierReport.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror or error})") from error
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(file)"
        raise ReportError(f"{path}: not a casebot report.json: field '{field}': {first['msg']}") from error


def compare(old: EarlierReport, new: Report, old_path: str) -> Comparison:
    before = {test.id: test.passed for test in old.tests}
    now = {test.id: test.passed for test in new.tests}
    deltas = {}
    for key, value in new.summary.model_dump().items():
        earlier = old.summary.get(key)
        if isinstance(value, (int, float)) and isinstance(earlier, (int, float)) and not isinstance(earlier, bool):
            deltas[key] = MetricDelta(before=earlier, now=value, delta=round(value - earlier, 4))
    return Comparison(
        old_report=old_path,
        regressions=[tid for tid, passed in now.items() if tid in before and before[tid] and not passed],
        fixes=[tid for tid, passed in now.items() if tid in before and not before[tid] and passed],
        added=[tid for tid in now if tid not in before], removed=[tid for tid in before if tid not in now],
        deltas=deltas)


def write_reports(report: Report, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"report.json": report.model_dump_json(indent=2), "report.md": markdown(report),
             "report.html": html_report(report)}
    for name, text in paths.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / name for name in paths]


COUNTS = ("total", "passed", "failed", "turns")


def format_value(key: str, value: float | None, share: bool) -> str:
    if value is None:
        return "n/a"
    if share:
        return f"{value * 100:.1f}%"
    if key in COUNTS:
        return f"{value:g}"
    return f"{value:.3f}" if key == "mrr" else f"{value:.1f}"


def _metric_rows(summary: Summary) -> list[tuple[str, str]]:
    values = summary.model_dump()
    rows = [(label.replace("@k", f"@{summary.recall_k}"), format_value(key, values[key], share))
            for key, label, share in METRICS]
    return [("tests passed", f"{summary.passed} / {summary.total} ({summary.turns} turns)"), *rows]


def _delta_rows(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, label, share in [(key, key, False) for key in COUNTS] + METRICS:
        delta = comparison.deltas.get(key)
        if delta is None:
            continue
        sign = "+" if delta.delta > 0 else ""
        change = f"{sign}{delta.delta * 100:.1f} pts" if share else sign + format_value(key, delta.delta, False)
        rows.append((label, format_value(key, delta.before, share), format_value(key, delta.now, share), change))
    return rows


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, *rows]]


def terminal(report: Report) -> str:
    """One line per test (failures listed under it), the metrics, and the comparison when there is one."""
    rows = [("PASS" if t.passed else "FAIL", t.id, str(len(t.turns)), f"{t.latency_ms:.0f}") for t in report.tests]
    lines = _table(("result", "test", "turns", "ms"), rows)
    out = [lines[0]]
    for line, test in zip(lines[1:], report.tests):
        out.append(line)
        out.extend(f"      - {failure}" for failure in test.failures)
    summary = report.summary
    out += ["", f"{summary.passed} of {summary.total} tests passed, {summary.failed} failed", ""]
    out += _table(("metric", "value"), _metric_rows(summary))
    if report.comparison:
        out += ["", *_comparison_lines(report.comparison)]
    out += [f"warning: {warning}" for warning in report.warnings]
    return "\n".join(out)


def _comparison_lines(comparison: Comparison) -> list[str]:
    lines = [f"compared with {comparison.old_report}:",
             f"regressions (passed before, fail now): {', '.join(comparison.regressions) or 'none'}",
             f"fixes (failed before, pass now): {', '.join(comparison.fixes) or 'none'}"]
    if comparison.added:
        lines.append(f"new tests: {', '.join(comparison.added)}")
    if comparison.removed:
        lines.append(f"tests no longer run: {', '.join(comparison.removed)}")
    return [*lines, "", *_table(("metric", "before", "now", "change"), _delta_rows(comparison))]


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    def cell(value: str) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
            *(f"| {' | '.join(cell(v) for v in row)} |" for row in rows)]


def markdown(report: Report) -> str:
    s = report.summary
    out = ["# casebot evaluation", "", f"Files: {', '.join(f'`{f}`' for f in report.files)}"
           + (f"; tags: {', '.join(report.tags)}" if report.tags else ""), "",
           f"**{s.passed} of {s.total} tests passed**, {s.failed} failed.", "", "## Metrics", "",
           *_md_table(("metric", "value"), _metric_rows(s)), "", "## Pass rate by tag", "",
           *_md_table(("tag", "passed", "pass rate"),
                      [(tag, f"{t.passed} / {t.total}", f"{t.pass_rate * 100:.1f}%") for tag, t in report.by_tag.items()])]
    if report.comparison:
        c = report.comparison
        out += ["", "## Comparison", "", f"With `{c.old_report}`.", "",
                f"- Regressions (passed before, fail now): {', '.join(c.regressions) or 'none'}",
                f"- Fixes (failed before, pass now): {', '.join(c.fixes) or 'none'}"]
        out += [f"- New tests: {', '.join(c.added)}"] if c.added else []
        out += [f"- Tests no longer run: {', '.join(c.removed)}"] if c.removed else []
        out += ["", *_md_table(("metric", "before", "now", "change"), _delta_rows(c))]
    failed = [t for t in report.tests if not t.passed]
    if failed:
        out += ["", "## Failed tests", ""]
        for test in failed:
            out += [f"### {test.id}", "", f"`{test.file}`", "", *(f"- {f}" for f in test.failures), ""]
    out += ["", "## All tests", "", *_md_table(
        ("test", "result", "turns", "cited", "citation recall", "ms"),
        [(t.id, "pass" if t.passed else "FAIL", str(len(t.turns)), ", ".join(dict.fromkeys(
            c for turn in t.turns for c in turn.cited)) or "(refused)",
          format_value("", _test_recall(t, "citation_recall"), True), f"{t.latency_ms:.0f}") for t in report.tests])]
    problems = _answer_problems(report)
    if problems:
        out += ["", "## Answer problems (metrics, not expectations)", "", *(f"- {p}" for p in problems)]
    if report.warnings:
        out += ["", "## Warnings", "", *(f"- {w}" for w in report.warnings)]
    return "\n".join(out) + "\n"


def _answer_problems(report: Report) -> list[str]:
    """Invalid citations, uncited sentences and unfaithful sentences, each with its test and turn."""
    out = []
    for test in report.tests:
        for number, turn in enumerate(test.turns, start=1):
            where = f"{test.id} turn {number}" if len(test.turns) > 1 else test.id
            out += [f"{where}: invalid citation: {p}" for p in turn.citation_problems]
            out += [f"{where}: uncited sentence: {s}" for s in turn.uncited_sentences]
            out += [f"{where}: unfaithful: {s}" for s in turn.unfaithful_sentences]
    return out


def _test_recall(test: TestResult, field: str) -> float | None:
    values = [getattr(turn, field) for turn in test.turns if getattr(turn, field) is not None]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------------------
# HTML with plots: matplotlib figures rendered as inline SVG, so the page needs no network and no script.

STYLE = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
.fail{color:#b00020;font-weight:600}.pass{color:#1b5e20}figure{margin:1.5rem 0}svg{max-width:100%;height:auto}"""


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def plot_pass_rate_by_tag(report: Report) -> str:
    tags = list(report.by_tag.items())
    figure = Figure(figsize=(7, 0.6 + 0.3 * max(len(tags), 1)))
    axes = figure.subplots()
    axes.barh([tag for tag, _ in tags], [t.pass_rate * 100 for _, t in tags], color="#3f7fbf")
    for row, (_, t) in enumerate(tags):
        axes.text(min(t.pass_rate * 100, 100) + 1, row, f"{t.passed}/{t.total}", va="center", fontsize=8)
    axes.set_xlim(0, 112)
    axes.invert_yaxis()
    axes.set_xlabel("tests passed (%)")
    axes.set_title("Pass rate by tag")
    return _svg(figure)


def plot_latency(report: Report) -> str:
    latencies = [turn.latency_ms for test in report.tests for turn in test.turns]
    figure = Figure(figsize=(7, 3))
    axes = figure.subplots()
    axes.hist(latencies, bins=min(30, max(5, len(latencies) // 3)), color="#7f7f7f")
    for label, value, colour in (("p50", report.summary.latency_p50_ms, "#1b5e20"),
                                 ("p95", report.summary.latency_p95_ms, "#b00020")):
        if value is not None:
            axes.axvline(value, color=colour, linestyle="--", label=f"{label} {value:.0f} ms")
    axes.set_xlabel("answer latency per turn (ms)")
    axes.set_ylabel("turns")
    axes.set_title("Latency distribution")
    axes.legend()
    return _svg(figure)


def plot_recall_per_test(report: Report) -> str:
    """Citation recall and retrieval recall@k per test that expects cases (mean over its turns)."""
    rows = [(t.id, _test_recall(t, "citation_recall"), _test_recall(t, "retrieval_recall")) for t in report.tests]
    rows = [row for row in rows if row[1] is not None]
    figure = Figure(figsize=(7, 1.2 + 0.22 * max(len(rows), 1)), layout="constrained")
    axes = figure.subplots()
    positions = range(len(rows))
    axes.barh([p - 0.2 for p in positions], [r[1] * 100 for r in rows], height=0.4, color="#3f7fbf",
              label="citation recall")
    axes.barh([p + 0.2 for p in positions], [(r[2] or 0) * 100 for r in rows], height=0.4, color="#bfbf3f",
              label=f"retrieval recall@{report.summary.recall_k}")
    axes.set_yticks(list(positions), [r[0] for r in rows], fontsize=7)
    axes.set_xlim(0, 105)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xlabel("expected cases found (%)")
    axes.set_title("Recall per test")
    figure.legend(loc="outside lower center", ncols=2, fontsize=8)
    return _svg(figure)


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr{f' class={chr(34)}{classes[i]}{chr(34)}' if classes else ''}>"
                   + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(report: Report) -> str:
    s = report.summary
    parts = [f"<h1>casebot evaluation</h1><p>Files: {html.escape(', '.join(report.files))}"
             + (f"; tags: {html.escape(', '.join(report.tags))}" if report.tags else "") + "</p>",
             f'<p id="headline"><strong>{s.passed} of {s.total} tests passed</strong>, {s.failed} failed.</p>',
             "<h2>Metrics</h2>", _html_table(("metric", "value"), _metric_rows(s))]
    if report.comparison:
        c = report.comparison
        parts += ["<h2>Comparison</h2>", f"<p>With {html.escape(c.old_report)}.</p><ul>",
                  f"<li>Regressions (passed before, fail now): {html.escape(', '.join(c.regressions) or 'none')}</li>",
                  f"<li>Fixes (failed before, pass now): {html.escape(', '.join(c.fixes) or 'none')}</li>",
                  *([f"<li>New tests: {html.escape(', '.join(c.added))}</li>"] if c.added else []),
                  *([f"<li>Tests no longer run: {html.escape(', '.join(c.removed))}</li>"] if c.removed else []),
                  "</ul>", _html_table(("metric", "before", "now", "change"), _delta_rows(c))]
    parts += ["<h2>Plots</h2>",
              f'<figure id="plot-pass-rate-by-tag">{plot_pass_rate_by_tag(report)}</figure>',
              f'<figure id="plot-latency">{plot_latency(report)}</figure>',
              f'<figure id="plot-recall-per-test">{plot_recall_per_test(report)}</figure>',
              "<h2>Tests</h2>",
              _html_table(("result", "test", "turns", "cited", "failures", "ms"),
                          [("PASS" if t.passed else "FAIL", t.id, str(len(t.turns)),
                            ", ".join(dict.fromkeys(c for turn in t.turns for c in turn.cited)) or "(refused)",
                            "; ".join(t.failures), f"{t.latency_ms:.0f}") for t in report.tests],
                          ["pass" if t.passed else "fail" for t in report.tests])]
    problems = _answer_problems(report)
    if problems:
        parts += ["<h2>Answer problems (metrics, not expectations)</h2><ul>",
                  *(f"<li>{html.escape(p)}</li>" for p in problems), "</ul>"]
    if report.warnings:
        parts += ["<h2>Warnings</h2><ul>", *(f"<li>{html.escape(w)}</li>" for w in report.warnings), "</ul>"]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>casebot evaluation</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def junit(report: Report) -> str:
    """JUnit XML: a testsuite per eval file, a testcase per test, a <failure> listing every failed expectation."""
    root = ET.Element("testsuites", name="casebot eval", tests=str(report.summary.total),
                      failures=str(report.summary.failed),
                      time=f"{sum(t.latency_ms for t in report.tests) / 1000:.3f}")
    for file in dict.fromkeys(t.file for t in report.tests):
        tests = [t for t in report.tests if t.file == file]
        suite = ET.SubElement(root, "testsuite", name=tests[0].suite, file=file, tests=str(len(tests)),
                              failures=str(sum(1 for t in tests if not t.passed)), errors="0", skipped="0",
                              time=f"{sum(t.latency_ms for t in tests) / 1000:.3f}")
        for test in tests:
            case = ET.SubElement(suite, "testcase", classname=test.suite, name=test.id, file=file,
                                 time=f"{test.latency_ms / 1000:.3f}")
            if not test.passed:
                failure = ET.SubElement(case, "failure", message=test.failures[0], type="expectation")
                failure.text = "\n".join(test.failures)
            cited = "; ".join(f"turn {n}: {', '.join(turn.cited) or '(refused)'}"
                              for n, turn in enumerate(test.turns, start=1))
            ET.SubElement(case, "system-out").text = f"cited: {cited}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit(report), encoding="utf-8")
    return path
