"""The library as a whole: after a therapy failed, what came next and how it went, counted across cases.

Computed from the cases' front matter only (failed_therapies, next_therapies, outcome), so a pathway table
cannot contain anything the library does not record."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from pydantic import BaseModel

from bot.cases import Case
from bot.lexicon import Lexicon, QuestionLanguage

OUTCOME_ORDER = ("improved", "stabilised", "partial", "worsened", "died", "unknown")


class PathwayRow(BaseModel):
    next_therapy: str
    outcomes: dict[str, list[str]]  # outcome -> ids of the cases with that outcome

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.outcomes.values())


class Pathway(BaseModel):
    failed: str
    filters: dict[str, str] = {}
    rows: list[PathwayRow] = []

    def case_ids(self) -> list[str]:
        return list(dict.fromkeys(cid for row in self.rows for ids in row.outcomes.values() for cid in ids))


def pathway(cases: Iterable[Case], lexicon: Lexicon, failed: str, organ: str | None = None,
            antibody: str | None = None, subtype: str | None = None) -> Pathway:
    """Every next therapy tried after `failed`, with the cases per outcome; names normalised by the lexicon."""
    failed_name = lexicon.canonical("therapies", failed) or failed
    organ = lexicon.canonical("organs", organ) or organ if organ else None
    antibody = lexicon.canonical("antibodies", antibody) or antibody if antibody else None
    subtype = lexicon.canonical("subtypes", subtype) or subtype if subtype else None
    table: dict[str, dict[str, list[str]]] = {}
    for case in sorted(cases, key=lambda c: c.id):
        failed_here = {lexicon.canonical("therapies", t) or t for t in case.failed_therapies}
        if failed_name not in failed_here:
            continue
        if (organ and organ not in case.organs) or (antibody and antibody not in case.antibodies) or (
                subtype and case.subtype != subtype):
            continue
        for therapy in case.next_therapies:
            name = lexicon.canonical("therapies", therapy) or therapy
            table.setdefault(name, {}).setdefault(case.outcome, []).append(case.id)
    rows = [PathwayRow(next_therapy=name, outcomes={o: by[o] for o in OUTCOME_ORDER if o in by})
            for name, by in table.items()]
    rows.sort(key=lambda row: (-row.total, row.next_therapy))
    filters = {k: v for k, v in {"organ": organ, "antibody": antibody, "subtype": subtype}.items() if v}
    return Pathway(failed=failed_name, filters=filters, rows=rows)


def shown_ids(result: Pathway, per_cell: int | None = None) -> list[str]:
    """The case ids a table shows as markers: all, or the first `per_cell` of each cell."""
    return list(dict.fromkeys(cid for row in result.rows for ids in row.outcomes.values() for cid in ids[:per_cell]))


def markdown_table(result: Pathway, per_cell: int | None = None) -> str:
    """The pathway as a small Markdown table; each cell carries the [case-id] markers of the cases it counts,
    at most `per_cell` of them (then "+N more"), so a large library's table stays readable. The counts are
    always complete."""
    header = f"After **{result.failed}** failed, the library records:"
    lines = [header, "", "| next therapy | cases | " + " | ".join(OUTCOME_ORDER) + " |",
             "|---|---|" + "---|" * len(OUTCOME_ORDER)]
    for row in result.rows:
        cells = []
        for outcome in OUTCOME_ORDER:
            ids = row.outcomes.get(outcome, [])
            shown = ids[:per_cell]
            cells.append(" ".join(f"[{cid}]" for cid in shown) + (f" +{len(ids) - len(shown)} more" if
                                                                    len(ids) > len(shown) else ""))
        lines.append(f"| {row.next_therapy} | {row.total} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failed_therapy_asked(question: str, lexicon: Lexicon, language: QuestionLanguage,
                         recorded: Collection[str]) -> str | None:
    """The therapy a question says has failed ("progressing on MMF", "RTX after CYC failure": CYC), if it is one
    of the `recorded` failed therapies (lexicon names); None when the question does not ask for a pathway."""
    return next((name for name in language.failed_therapies(question, lexicon) if name in recorded), None)
