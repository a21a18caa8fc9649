"""Ranked cases -> the answer object: the relevance gate, the extractive composer and the refusal."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from bot.chunking import SUMMARY_SECTION
from bot.gate import GateDecision
from bot.pathways import Pathway, failed_therapy_asked, markdown_table, pathway, shown_ids
from bot.resolution import Resolution
from bot.retrieval import CaseHit, Concept, Retriever
from bot.settings import Settings
from bot.text import sentences, tokenize

MARKER = re.compile(r"\[([a-z0-9-]+)\]")
# Sections whose sentences say what was tried and how it went: preferred when sentences tie.
# The section a follow-up asks about ("before that": Prior treatment) when its sentences hold none of what it asks:
# preferred like one shared concept of weight 1, not the only place looked.
ASPECT_PRIOR = 1.0
SECTION_PRIOR = {"Resistance": 0.3, "Next therapy": 0.4, "Outcome": 0.35, "Prior treatment": 0.2,
                 "Presentation": 0.1, "Teaching points": 0.05}


class Citation(BaseModel):
    case_id: str
    title: str
    source: str
    passages: list[str]
    score: float


class Answer(BaseModel):
    """The answer object of SPEC section 4, extended: `retrieved` (the ranked case ids, for evaluation) and
    the reasons of the product's decisions (`understood_as`, `resolution`, `gate`)."""

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
    understood_as: str = ""  # one line: how the question was read (follow-up of which case, spelling put right)
    resolution: Resolution | None = None  # follow-up or new topic, and why (bot/resolution.py)
    gate: GateDecision | None = None  # answered or refused, and why (bot/gate.py)


@lru_cache(maxsize=None)
def prompt(prompts_dir: Path, name: str) -> str:
    return (prompts_dir / name).read_text(encoding="utf-8").strip()


def compose(question: str, hits: list[CaseHit], concepts: list[Concept], retriever: Retriever,
            settings: Settings, filters: dict[str, str] | None = None,
            aspect: str | None = None) -> tuple[str, list[Citation]]:
    """An answer in which every line comes from a case's metadata or is quoted from its text, with its marker.
    A follow-up asking about one `aspect` ("and the outcome?") is answered from that section of its case."""
    blocks: list[str] = []
    citations: list[Citation] = []
    for hit in hits:
        case = hit.case
        marker = f"[{case.id}]"
        summary = case.summary()
        headline = f"**{case.title}**" + (f": {summary}." if summary else ".")
        quoted = best_sentences(hit, concepts, retriever, max(2, settings.sentence_budget // len(hits)), aspect)
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
    failed = failed_therapy_asked(question, lexicon, retriever.language, by_failed)
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


def best_sentences(hit: CaseHit, concepts: list[Concept], retriever: Retriever, n: int,
                   section: str | None = None) -> list[str]:
    """The case's sentences that share most with the question, in the order they appear in the case; only
    those of `section` when the case has it and they hold something the question asks (or it asks nothing
    else). "What were his risk numbers before that?" asks the prior treatment, but its risk numbers are in
    another section, so there the section's sentences are preferred rather than the only ones."""
    candidates = [(meta["section"], sentence) for meta in retriever.side.case_passages(hit.case.id)
                  if meta["section"] != SUMMARY_SECTION for sentence in sentences(meta["text"])]
    if not candidates:
        return []
    scored = []
    for order, ((part, sentence), tokens) in enumerate(zip(candidates, tokenize([s for _, s in candidates]))):
        present = set(tokens)
        overlap = sum(c.weight for c in concepts if any(alt <= present for alt in c.alternatives))
        scored.append((overlap, SECTION_PRIOR.get(part, 0.0), part, order, defused(sentence)))
    if section and any(part.lower() == section.lower() for _, _, part, _, _ in scored):
        within = [item for item in scored if item[2].lower() == section.lower()]
        if not concepts or any(item[0] > 0 for item in within) or not any(item[0] > 0 for item in scored):
            scored = within
        else:
            scored = [(overlap + (ASPECT_PRIOR if part.lower() == section.lower() else 0.0), prior, part, order, text)
                      for overlap, prior, part, order, text in scored]
    chosen = sorted(scored, key=lambda item: -(item[0] + item[1]))[:n]
    return [text for *_, text in sorted(chosen, key=lambda item: item[3])]


def defused(sentence: str) -> str:
    """Quoted case text cannot carry citation markers of its own: [x] becomes (x)."""
    return sentence.replace("[", "(").replace("]", ")")


def refusal(retriever: Retriever, settings: Settings, gate: GateDecision) -> str:
    """Says plainly that nothing in the library answers (naming what no case mentions, or that the question named
    nothing, when that is why), and what the library does cover."""
    cases = retriever.cases.values()
    organs = Counter(organ for case in cases for organ in case.organs)
    if organs:
        listed = ", ".join(f"{organ} ({n})" for organ, n in organs.most_common())
        organ_summary = f" on {listed}"
    else:
        titles = [case.title for case in list(cases)[:3]]
        organ_summary = (", for example: " + "; ".join(titles)) if titles else ""
    missing = f" No case in it mentions {', '.join(gate.unheld)}." if gate.unheld else ""
    if gate.nothing_asked:
        missing = (" The question names nothing to look for, and there is no earlier answer here (or filter) for it "
                   "to refer to: name the therapy, organ or finding you mean.")
    return prompt(settings.prompts_dir, "refusal.md").format(n_cases=len(retriever.cases), organ_summary=organ_summary,
                                                             missing=missing)


def cited_ids(text: str) -> list[str]:
    return list(dict.fromkeys(MARKER.findall(text)))
