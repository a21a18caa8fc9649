"""Index -> ranked cases: dense (Chroma) and BM25 over the same chunks, fused by reciprocal rank fusion,
grouped by case, with metadata filters applied before ranking and lexicon-based query expansion."""

from __future__ import annotations

import copy
import difflib
import math
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from chromadb.errors import ChromaError

from bot.cases import ORGANS, Case
from bot.embedding import MiniLMEmbeddings, whole_words
from bot.index import INGESTING, CaseIndex, SideIndex
from bot.lexicon import Lexicon, QuestionLanguage
from bot.settings import Settings
from bot.text import stem, tokenize

FILTER_KEYS = ("organ", "subtype", "therapy", "outcome")


class FilterError(ValueError):
    """A filter key or value the library does not know."""


@dataclass
class Passage:
    chunk_id: str
    section: str
    text: str
    fused: float


@dataclass
class CaseHit:
    case: Case
    fused: float  # best reciprocal-rank-fusion score among the case's chunks
    similarity: float  # best cosine similarity between the question and the case's chunks
    coverage: float = 0.0  # share (IDF-weighted) of the question's concepts found in the case
    records_failure: int = 0  # how many of the failures the question names its front matter records
    records_next: bool = False  # its front matter gives next a therapy the question names (and not as failed)
    starts_failed: bool = False  # ... gives next a therapy the question says failed, without recording that failure
    passages: list[Passage] = field(default_factory=list)


@dataclass
class Concept:
    """Something the question asks about: a lexicon term (any of its aliases counts) or a plain word."""

    label: str
    alternatives: list[set[str]]  # stemmed token sets; the concept is present if any is contained
    weight: float
    lexical: bool = False  # names a therapy, organ, antibody or subtype of the lexicon (not a general term)


class Retriever:
    def __init__(self, index: CaseIndex, lexicon: Lexicon, settings: Settings):
        self.index, self.lexicon, self.settings = index, lexicon, settings
        self.language = QuestionLanguage.load(settings.question_language_path)
        self.embedder = MiniLMEmbeddings()
        self.side = SideIndex.load(index)
        self._refreshing = threading.Lock()
        self._filler = set(tokenize([" ".join(lexicon.filler)])[0]) if lexicon.filler else set()

    def refresh(self) -> SideIndex:
        """Reload the side index when another process, replica or thread changed the collection (once, however
        many threads notice at the same time). The old one is replaced, never changed, so readers holding it
        are unaffected."""
        with self._refreshing:
            version = self.index.version()
            if version != self.side.version and not version.startswith(INGESTING):  # never a half-written library
                self.side = SideIndex.load(self.index)
            return self.side

    def snapshot(self) -> Retriever:
        """This retriever fixed to the newest side index: one question sees one version of the library even
        when a case is added while it is answered (web users are answered on several threads)."""
        view = copy.copy(self)
        view.side = self.refresh()
        return view

    @property
    def cases(self) -> dict[str, Case]:
        return self.side.cases

    def allowed_cases(self, filters: dict[str, str] | None) -> set[str] | None:
        """Case ids matching every filter (None when there are no filters)."""
        if not filters:
            return None
        allowed = set(self.cases)
        facets = self.side.facets
        for key, raw in filters.items():
            value = str(raw).strip()
            if key not in FILTER_KEYS:
                raise FilterError(f"unknown filter {key!r}; use one of {', '.join(FILTER_KEYS)}")
            if key == "organ":
                value = self.lexicon.canonical("organs", value) or value.lower()
                if value not in ORGANS:
                    raise FilterError(f"unknown organ {value!r}; use one of {', '.join(ORGANS)}")
            elif key == "subtype":
                value = self.lexicon.canonical("subtypes", value) or value.lower()
            elif key == "therapy":
                value = (self.lexicon.canonical("therapies", value) or value).lower()
            else:
                value = value.lower()
            allowed &= facets[key].get(value, set())
        return allowed

    def search(self, question: str, filters: dict[str, str] | None = None,
               only_cases: set[str] | None = None, limit: int = 10) -> list[CaseHit]:
        """Cases ranked by fused score, each with its best passages, similarity and concept coverage."""
        allowed = self.allowed_cases(filters)
        if only_cases is not None:
            allowed = only_cases if allowed is None else allowed & only_cases
        if allowed is not None and not allowed or not self.side.chunk_ids:
            return []
        terms = self.lexicon.find(question)
        expanded = question + "".join(f" ({t.canonical})" for t in terms if t.canonical.lower() not in question.lower())
        query_vector = self.embedder.embed_query(expanded)
        mode = self.settings.retrieval
        dense = self._dense(query_vector, allowed) if mode != "bm25" else {}
        lexical = self._bm25(question + " " + " ".join(self.lexicon.expansion(question)), allowed) if mode != "dense" else []
        fused: dict[int, float] = defaultdict(float)
        for ranking in (list(dense), lexical):
            for rank, row in enumerate(ranking):
                fused[row] += 1.0 / (self.settings.rrf_k + rank + 1)
        hits: dict[str, CaseHit] = {}
        for row, score in sorted(fused.items(), key=lambda item: -item[1]):
            meta = self.side.chunk_meta[row]
            cid = meta["case_id"]
            hit = hits.get(cid)
            if hit is None:
                hit = hits[cid] = CaseHit(self.cases[cid], score, 0.0)
            hit.similarity = max(hit.similarity, dense.get(row, 0.0))
            hit.passages.append(Passage(self.side.chunk_ids[row], meta["section"], meta["text"], score))
        ranked = self._front_matter_first(question, sorted(hits.values(), key=lambda h: -h.fused))[:limit]
        self._fill_similarity([h for h in ranked if h.similarity == 0.0], query_vector)
        concepts = self.concepts(question)
        for hit in ranked:
            hit.coverage = self.coverage(concepts, hit.case.id)
        return ranked

    def _front_matter_first(self, question: str, ranked: list[CaseHit]) -> list[CaseHit]:
        """Marks what each case's front matter records of the question: the failures it names ("ILD progressing on
        MMF") and a therapy it asks about given next ("Ofev", "eculizumab"; not one it places before: "after
        HSCT"). When a failure is named, the cases recording most of the named failures lead ("worse through
        CYC, MMF, RTX and Ofev": the case that failed all four), in their fused order, first those that then gave
        a therapy the question also names ("Ofev when CellCept stopped working"); the rest follow. Without one
        the fused order stands."""
        failed = set(self.language.failed_therapies(question, self.lexicon))
        wanted = ({t.canonical for t in self.lexicon.find(question) if t.group == "therapies"} - failed
                  - self.language.prior_therapies(question, self.lexicon))
        canonical = self.lexicon.canonical
        for hit in ranked:
            hit.records_failure = len(failed & {canonical("therapies", t) or t for t in hit.case.failed_therapies})
            given = {canonical("therapies", t) or t for t in hit.case.next_therapies}
            hit.records_next = bool(wanted & given)
            hit.starts_failed = not hit.records_failure and bool(failed & given)
        if not failed:
            return ranked
        return sorted(ranked, key=lambda hit: (-hit.records_failure, not hit.records_next))

    def _dense(self, query_vector: list[float], allowed: set[str] | None) -> dict[int, float]:
        """Row number -> cosine similarity for the nearest chunks, in rank order: Chroma's nearest-neighbour
        index over the whole library, or an exact dot product over the side index's vectors of the allowed
        cases when filtered (and of every case when Chroma's query fails mid-ingest)."""
        n = min(self.settings.candidates, len(self.side.chunk_ids))
        if allowed is None:
            try:
                result = self.index.collection.query(query_embeddings=[query_vector], n_results=n,
                                                     include=["distances"])
            except ChromaError:  # chunks deleted under it by an ingest in another process: "Error finding id"
                allowed = set(self.cases)  # answered exactly from this side index's version instead
        if allowed is not None:
            rows = self.side.rows_of(allowed)
            similarities = self.side.vectors[rows] @ np.asarray(query_vector, dtype=np.float32)
            top = np.argsort(-similarities, kind="stable")[:n]
            return {int(rows[i]): float(similarities[i]) for i in top}
        rows_of_id = self.side.row_of
        return {rows_of_id[cid]: 1.0 - dist for cid, dist in zip(result["ids"][0], result["distances"][0])
                if cid in rows_of_id}

    def _fill_similarity(self, hits: list[CaseHit], query_vector: list[float]) -> None:
        """Cases found by BM25 alone get their similarity from their chunks' vectors in the side index."""
        query = np.asarray(query_vector, dtype=np.float32)
        for hit in hits:
            rows = self.side.rows_of({hit.case.id})
            if len(rows):
                hit.similarity = max(hit.similarity, float(np.max(self.side.vectors[rows] @ query)))

    def corrected(self, tokens: list[str]) -> list[str]:
        """Words the library does not know replaced by a close spelling it does ("toclizumab")."""
        vocabulary = self.side.vocabulary_by_prefix
        out = []
        for token in tokens:
            if token not in self.side.doc_freq and len(token) >= 5:
                close = difflib.get_close_matches(token, vocabulary.get(token[:2], []), n=1, 
                                                cutoff=self.settings.spelling_cutoff)
                token = close[0] if close else token
            out.append(token)
        return out

    def _bm25(self, text: str, allowed: set[str] | None) -> list[int]:
        """Chunk rows by BM25 score, best first. Repetition earns nothing: BM25 saturates a word's count within
        a chunk, a keyword-stuffed case (SideIndex.stuffed_cases) is left out, and one case holds at most a fifth
        of the candidates, so a case of hundreds of look-alike chunks cannot crowd out the rest."""
        tokens = list(dict.fromkeys(self.corrected(tokenize([text])[0])))
        if not tokens:
            return []
        scores = self.side.bm25.get_scores(tokens)
        if allowed is not None or self.side.stuffed_cases:
            kept = np.full(len(scores), allowed is None)
            if allowed is not None:
                kept[self.side.rows_of(allowed)] = True
            kept[self.side.rows_of(self.side.stuffed_cases)] = False
            scores = np.where(kept, scores, 0.0)
        n = min(self.settings.candidates, len(scores))
        per_case = max(1, self.settings.candidates // 5)
        held: dict[str, int] = defaultdict(int)
        ranked = []
        positive = np.flatnonzero(scores > 0)
        for row in positive[np.argsort(-scores[positive], kind="stable")]:
            if len(ranked) == n:
                break
            case_id = self.side.chunk_case[row]
            if held[case_id] < per_case:
                held[case_id] += 1
                ranked.append(int(row))
        return ranked

    def concepts(self, question: str) -> list[Concept]:
        """The question's lexicon mentions and remaining content words, weighted by rarity in the library.

        A mention counts as present in a case when any alias of the term it most narrowly names is there, so
        "MMF" in the question matches "mycophenolate mofetil" in the case, while "renal crisis" is not held by
        a case that only mentions the kidneys."""
        question = self.language.without_failure_cues(question, self.lexicon)
        rest = question
        concepts: list[Concept] = []
        for surface, terms in self.lexicon.mentions(question):
            aliases = list(self.lexicon.narrowest(terms).aliases)
            alternatives = [set(tokens) for tokens in tokenize(aliases) if tokens]
            own = set(tokenize([surface])[0])
            for term in terms:
                rest = self.lexicon.strip(rest, term)
            concepts.append(Concept(surface, alternatives, self.mention_weight(own, alternatives),
                                    lexical=any(term.group != "terms" for term in terms)))
        surfaces = {token: word.lower() for word in re.findall(r"[^\W\d_]+", rest) for token in tokenize([word])[0]}
        for written in dict.fromkeys(tokenize([rest])[0]):
            token = self.corrected([written])[0]
            if token not in self._filler and not token.isdigit():
                concepts.append(Concept(token, [{token}], self.weight(token, surfaces.get(written))))
        return concepts

    def mention_weight(self, own: set[str], alternatives: list[set[str]]) -> float:
        """A lexicon mention's rarity in the library under the name the library writes: the question's own
        spelling when cases use it, else the commonest alias they do use. "pred" or "CellCept", which no case
        writes, weigh as "prednisone" or "mycophenolate", not as the rarest word of all, which made them
        outweigh everything else the question asks ("renal crisis with a normal BP after pred" led with a
        heart case that gave steroids)."""
        if own and all(t in self.side.doc_freq for t in own):
            return max(self.idf(t) for t in own)
        held = [max(self.idf(t) for t in alt) for alt in alternatives
                if alt and all(t in self.side.doc_freq for t in alt)]
        return min(held) if held else max((self.idf(t) for t in own), default=0.0)

    def weight(self, token: str, written: str | None) -> float:
        """A word's rarity in the library (IDF). A word no case uses weighs as the rarest of all when it is
        technical ("sunscreen", "warfarin": a topic the library lacks), but only as an everyday word of the
        library when it is everyday English, which the embedding model holds whole ("big", "echo", "mad"): the
        question is still about what its other words name."""
        if token in self.side.doc_freq or written is None or written not in whole_words():
            return self.idf(token)
        return math.log(1 + 1 / self.settings.everyday_word_share)

    @staticmethod
    def stem(word: str) -> str:
        return stem(word)

    def library_coverage(self, concepts: list[Concept]) -> float:
        """IDF-weighted share of the concepts the library holds anywhere: low for a question about something
        else entirely ("the capital of France"), whichever case it is compared with."""
        total = sum(c.weight for c in concepts)
        if total == 0:
            return 1.0
        return sum(c.weight for c in concepts if self.library_holds(c)) / total

    def library_holds(self, concept: Concept) -> bool:
        """Whether any case of the library holds the concept (all the tokens of one of its alternatives)."""
        known = self.side.doc_freq
        return any(all(t in known for t in alt) for alt in concept.alternatives)

    def idf(self, token: str) -> float:
        n = len(self.side.chunk_ids)
        return math.log(1 + n / (1 + self.side.doc_freq.get(token, 0)))

    def coverage(self, concepts: list[Concept], case_id: str) -> float:
        """IDF-weighted share of the concepts present in the case; 1.0 when the question names none."""
        total = sum(c.weight for c in concepts)
        if total == 0:
            return 1.0
        tokens = self.side.case_tokens.get(case_id, set())
        found = sum(c.weight for c in concepts if any(alt <= tokens for alt in c.alternatives))
        return found / total
