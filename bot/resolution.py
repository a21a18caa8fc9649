"""Follow-up or new topic: the one place a question is read against the conversation before retrieval.

A question continues the last answer only when it points back at it (a pronoun, "that case", "the outcome",
"before that": the words are data in knowledge/question_language.yaml) and names nothing those cases do not
hold, and the whole library does not answer it better. Anything else is a new question, gated exactly as it
would be alone, so an off-topic question mid-conversation is refused like any other. The decision and its
reason travel in the answer object (`resolution`) and, in one line, in the UI's "Understood as" note.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from pydantic import BaseModel

from bot.lexicon import Correction, Lexicon, QuestionLanguage, Term
from bot.retrieval import Retriever

NOTE_TITLE_CHARS = 60


class Resolution(BaseModel):
    """How a question was read: a new topic, or a follow-up held to `cases` (asking about `aspect`)."""

    kind: Literal["new-topic", "follow-up"]
    reason: str
    cases: list[str] = []
    aspect: str | None = None  # the case section a follow-up asks about ("Outcome", "Prior treatment", ...)
    corrections: list[str] = []  # misspellings put right, "mycophenolte -> mycophenolate"

    def note(self, titles: dict[str, str]) -> str:
        """The one-line "Understood as" note; empty when the question was read exactly as typed."""
        parts = []
        if self.kind == "follow-up":
            lead = titles.get(self.cases[0], self.cases[0]) if self.cases else ""
            lead = lead if len(lead) <= NOTE_TITLE_CHARS else lead[: NOTE_TITLE_CHARS - 1].rstrip() + "…"
            whom = f"“{lead}”" if len(self.cases) == 1 else f"the last answer's {len(self.cases)} cases"
            parts.append(f"follow-up on {whom}" + (f" ({self.aspect.lower()})" if self.aspect else ""))
            if "says" in self.reason:  # a pronoun that did not agree with the case
                parts.append(self.reason)
        elif self.reason != FIRST_QUESTION:
            parts.append(f"new question ({self.reason})")
        if self.corrections:
            parts.append("spelling: " + ", ".join(self.corrections))
        return "; ".join(parts)


FIRST_QUESTION = "no earlier answer to follow"


class Resolver:
    """Reads each question against the conversation's last answer (its cited cases, lead first)."""

    def __init__(self, language: QuestionLanguage, lexicon: Lexicon):
        self.language, self.lexicon = language, lexicon
        self._sex: dict[tuple[str, str], str | None] = {}
        self._terms: dict[tuple[str, str], frozenset[Term]] = {}

    def corrected(self, question: str, retriever: Retriever) -> tuple[str, list[Correction]]:
        """The question with misspelt lexicon words put right (words the library itself uses are left)."""
        doc_freq, stem = retriever.side.doc_freq, retriever.stem
        return self.lexicon.corrected(question, lambda word: stem(word) in doc_freq)

    def resolve(self, question: str, foci: list[list[str]], retriever: Retriever,
                corrections: list[Correction] = ()) -> Resolution:
        """`foci`: the cases of each earlier answer, the last answer's first."""
        fixed = [f"{c.written} → {c.meant}" for c in corrections]
        foci = [kept for kept in ([cid for cid in f if cid in retriever.cases] for f in foci) if kept]
        focus = foci[0] if foci else []
        if not focus:
            return Resolution(kind="new-topic", reason=FIRST_QUESTION, corrections=fixed)
        lang = self.language
        singular, plural = lang.singular.search(question), lang.plural.search(question)
        aspect, returning = lang.aspect(question), lang.returning.search(question)
        singular = singular or lang.returning_to_one.search(question)  # "back to the nintedanib patient"
        if not (singular or plural or aspect or returning or lang.general.search(question)):
            return Resolution(kind="new-topic", reason="it does not refer back to the last answer", corrections=fixed)
        therapies = [surface for surface, terms in self.lexicon.mentions(question)
                     if any(term.group == "therapies" for term in terms)]
        if therapies and not (singular or plural or returning):  # "TCZ for skin - did it work?": "it" is the TCZ
            return Resolution(kind="new-topic", reason=f"about {', '.join(therapies)}, not the last answer's cases",
                              corrections=fixed)
        if returning:  # "back to the lung case": an earlier answer's cases, the latest that hold what it names
            focus = next((f for f in foci[1:] if not self._named_elsewhere(question, f, retriever)), focus)
        new = self._named_elsewhere(question, focus, retriever)
        if new:
            earlier = next((f for f in foci[1:] if not self._named_elsewhere(question, f, retriever)), None)
            if earlier is None:
                return Resolution(kind="new-topic", reason=f"names {new}, which the last answer's cases do not hold",
                                  corrections=fixed)
            focus = earlier  # "back to the renal crisis woman": an earlier answer's cases hold what it names
        own_words = lang.referring_words(question)
        better = self._answered_better_elsewhere(own_words, focus, retriever)
        if better:
            return Resolution(kind="new-topic", reason=f"other cases of the library hold “{better}”",
                              corrections=fixed)
        if plural and not singular:
            return Resolution(kind="follow-up", reason="refers to the last answer's cases", cases=focus,
                              aspect=aspect, corrections=fixed)
        if singular or aspect:
            # "the one who went on fluoxetine": among the last answer's cases, those holding what it names
            holding = [cid for cid in focus if not self._named_elsewhere(question, [cid], retriever)]
            case, reason = self._the_case_meant(question, holding or focus, retriever)
            if case != focus[0] and reason.endswith("lead case"):
                reason = "refers to the case of the last answer that holds what it names"
            return Resolution(kind="follow-up", reason=reason, cases=[case], aspect=aspect, corrections=fixed)
        return Resolution(kind="follow-up", reason="refers to the last answer", cases=focus, corrections=fixed)

    def _named_elsewhere(self, question: str, focus: list[str], retriever: Retriever) -> str | None:
        """A therapy, organ, antibody or subtype the question names that none of the focus cases mention.

        Read at its most specific: "GAVE" is a stomach condition before it is the gastrointestinal organ, so a
        case whose patient only had reflux does not hold it."""
        held = set().union(*(self._terms_in(cid, retriever) for cid in focus))
        for surface, terms in self.lexicon.mentions(question):
            if all(term.group == "terms" for term in terms):
                continue  # a general term ("death", "SSc"), not what the question is about
            if self.lexicon.narrowest(terms) not in held:
                return surface
        return None

    def _terms_in(self, case_id: str, retriever: Retriever) -> frozenset[Term]:
        """Every lexicon term the case's text mentions."""
        key = (case_id, retriever.side.version)
        if key not in self._terms:
            text = " ".join(meta["text"] for meta in retriever.side.case_passages(case_id))
            self._terms[key] = frozenset(self.lexicon.find(text))
        return self._terms[key]

    def _answered_better_elsewhere(self, own_words: str, focus: list[str], retriever: Retriever) -> str | None:
        """The question's own words (references removed) when the focus cases hold none of them and another case
        holds them all: "is there one that had calcinosis too?" is about another case."""
        concepts = [c for c in retriever.concepts(own_words) if c.weight > 0]
        if not concepts:
            return None
        in_focus = max(retriever.coverage(concepts, cid) for cid in focus)
        if in_focus > 0:
            return None
        best = retriever.search(own_words, limit=3)
        if best and best[0].case.id not in focus and best[0].coverage >= 1.0:
            missing = [c.label for c in concepts if not any(
                alt <= retriever.side.case_tokens.get(focus[0], set()) for alt in c.alternatives)]
            return ", ".join(missing[:3]) or best[0].case.title
        return None

    def _the_case_meant(self, question: str, focus: list[str], retriever: Retriever) -> tuple[str, str]:
        """The lead case, or the first of the last answer's cases whose patient the pronoun agrees with."""
        wanted = self.language.pronoun_sex_in(question)
        if not wanted:
            return focus[0], "refers to the last answer's lead case"
        for cid in focus:  # a case that does not say its patient's sex cannot contradict the pronoun
            if self.case_sex(cid, retriever) in (wanted, None):
                lead = "lead case" if cid == focus[0] else "case whose patient the pronoun names"
                return cid, f"refers to the last answer's {lead}"
        return focus[0], (f"the question says a {'woman' if wanted == 'female' else 'man'}; no case of the last "
                          "answer does: answered about its lead case")

    def case_sex(self, case_id: str, retriever: Retriever) -> str | None:
        """The patient's sex as the case's own words give it (most frequent of she/he, woman/man...)."""
        key = (case_id, retriever.side.version)
        if key not in self._sex:
            text = " ".join(meta["text"] for meta in retriever.side.case_passages(case_id)).lower()
            counts = Counter(self.language.case_sex_words[w] for w in re.findall(r"[a-z]+", text)
                             if w in self.language.case_sex_words)
            top = counts.most_common(2)
            self._sex[key] = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else None
        return self._sex[key]
