"""Ranked cases -> the answer object: the relevance gate, the extractive composer and the refusal."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from bot.chunking import SUMMARY_SECTION
from bot.pathways import Pathway, failed_therapy_asked, markdown_table, pathway, shown_ids
from bot.retrieval import CaseHit, Concept, Retriever
from bot.settings import Settings
from bot.text import sentences, tokenize

MARKER = re.compile(r"\[([a-z0-9-]+)\]")
# Sections whose sentences say what was tried and how it went: preferred when sentences tie.
SECTION_PRIOR = {"Resistance": 0.3, "Next therapy": 0.4, "Outcome": 0.35, "Prior treatment": 0.2,
                 "Presentation": 0.1, "Teaching points": 0.05}


class Citation(BaseModel):
    case_id: str
    title: str
    source: str
    passages: list[str]
    score: float


class Answer(BaseModel):
    """The answer object of SPEC section 4 (plus `retrieved`, the ranked case ids, for evaluation)."""

    question: str
    standalone_question: str
    answer: str
    citations: list[Citation] = []
    refused: bool = False
    backend: str = "extractive"
    unsupported: list[str] = []
    warnings: list[str] = []
    timings_ms: dict[str, float] = Field(default_factory=dict)
    retrieved: list[str] = []


@lru_cache(maxsize=None)
def prompt(prompts_dir: Path, name: str) -> str:
    return (prompts_dir / name).read_text(encoding="utf-8").strip()


def passes_gate(hit: CaseHit, settings: Settings) -> bool:
    """Does this case bear on the question? Similar in meaning, and holding most of what it asks about."""
    return hit.similarity >= settings.gate_min_similarity and hit.coverage >= settings.gate_min_coverage


def select_cases(hits: list[CaseHit], settings: Settings) -> list[CaseHit]:
    """The few cases that bear on the question: the best one, and any close to it on both signals."""
    passing = [h for h in hits if passes_gate(h, settings)]
    if not passing:
        return []
    best = max(passing, key=lambda h: (h.coverage, h.similarity))
    close = [h for h in passing if h is best or (
        h.coverage >= best.coverage * settings.gate_case_ratio and h.similarity >= best.similarity - 0.15)]
    others = sorted((h for h in close if h is not best), key=lambda h: -(h.coverage + h.similarity))
    return [best, *others][: settings.max_cases]


def compose(question: str, hits: list[CaseHit], concepts: list[Concept], retriever: Retriever,
            settings: Settings, filters: dict[str, str] | None = None) -> tuple[str, list[Citation]]:
    """An answer in which every line comes from a case's metadata or is quoted from its text, with its marker."""
    blocks: list[str] = []
    citations: list[Citation] = []
    for hit in hits:
        case = hit.case
        marker = f"[{case.id}]"
        summary = case.summary()
        headline = f"**{case.title}**" + (f": {summary}." if summary else ".")
        quoted = best_sentences(hit, concepts, retriever, max(2, settings.sentence_budget // len(hits)))
        blocks.append("\n".join([f"- {headline} {marker}", *(f"  - {s} {marker}" for s in quoted)]))
        citations.append(Citation(case_id=case.id, title=case.title, source=case.source or case.path,
                                  passages=quoted, score=round(hit.similarity, 4)))
    table = pathway_for(question, retriever, filters)
    if table:
        cited = {c.case_id for c in citations}
        for case_id in shown_ids(table, settings.table_cases_per_cell):
            if case_id not in cited:
                case = retriever.cases[case_id]
                citations.append(Citation(case_id=case_id, title=case.title, source=case.source or case.path,
                                          passages=table_evidence(case_id, retriever), score=0.0))
        blocks.append("\n" + markdown_table(table, settings.table_cases_per_cell))
    note = prompt(settings.prompts_dir, "educational_note.md")
    return "\n".join(blocks) + "\n\n" + note, citations


def pathway_for(question: str, retriever: Retriever, filters: dict[str, str] | None) -> Pathway | None:
    """For "what was tried after X failed?", the pathway across every case where X failed (two at least),
    within the active filters and the organ the question names."""
    lexicon = retriever.lexicon
    by_failed = retriever.side.cases_by_failed(lexicon)
    failed = failed_therapy_asked(question, lexicon, by_failed)
    if not failed:
        return None
    allowed = retriever.allowed_cases(filters)
    cases = [case for case in by_failed[failed] if allowed is None or case.id in allowed]
    organ = next((t.canonical for t in lexicon.find(question) if t.group == "organs"), None)
    table = pathway(cases, lexicon, failed, organ=organ)
    return table if len(table.case_ids()) >= 2 else None


def table_evidence(case_id: str, retriever: Retriever) -> list[str]:
    """The passage of a case cited by a pathway table alone: the first sentence of its Next therapy section,
    which says what its row counts. Picked without scoring: a large library's table cites dozens of cases."""
    passages = [meta for meta in retriever.side.case_passages(case_id) if meta["section"] != SUMMARY_SECTION]
    for meta in sorted(passages, key=lambda meta: meta["section"].lower() != "next therapy"):  # stable sort
        found = sentences(meta["text"])
        if found:
            return [defused(found[0])]
    return []


def best_sentences(hit: CaseHit, concepts: list[Concept], retriever: Retriever, n: int) -> list[str]:
    """The case's sentences that share most with the question, in the order they appear in the case."""
    candidates = [(meta["section"], sentence) for meta in retriever.side.case_passages(hit.case.id)
                  if meta["section"] != SUMMARY_SECTION for sentence in sentences(meta["text"])]
    if not candidates:
        return []
    scored = []
    for order, ((section, sentence), tokens) in enumerate(zip(candidates, tokenize([s for _, s in candidates]))):
        present = set(tokens)
        overlap = sum(c.weight for c in concepts if any(alt <= present for alt in c.alternatives))
        scored.append((overlap + SECTION_PRIOR.get(section, 0.0), order, defused(sentence)))
    chosen = sorted(scored, key=lambda item: -item[0])[:n]
    return [sentence for _, _, sentence in sorted(chosen, key=lambda item: item[1])]


def defused(sentence: str) -> str:
    """Quoted case text cannot carry citation markers of its own: [x] becomes (x)."""
    return sentence.replace("[", "(").replace("]", ")")


def refusal(retriever: Retriever, settings: Settings) -> str:
    """Says plainly that nothing in the library answers, and what the library does cover."""
    cases = retriever.cases.values()
    organs = Counter(organ for case in cases for organ in case.organs)
    if organs:
        listed = ", ".join(f"{organ} ({n})" for organ, n in organs.most_common())
        organ_summary = f" on {listed}"
    else:
        titles = [case.title for case in list(cases)[:3]]
        organ_summary = (", for example: " + "; ".join(titles)) if titles else ""
    return prompt(settings.prompts_dir, "refusal.md").format(n_cases=len(retriever.cases), organ_summary=organ_summary)


def cited_ids(text: str) -> list[str]:
    return list(dict.fromkeys(MARKER.findall(text)))
