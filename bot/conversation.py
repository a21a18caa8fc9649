"""Questions in a conversation -> answers: follow-ups resolved against earlier turns, then retrieve and answer.

`CaseBot` is the one entry to the bot for the CLI, the web app and the evaluation, so all answer alike.
With an LLM configured (settings.llm), the chosen cases' passages go to the model, its text is checked by
bot/verification.py before it is shown, and any failure falls back to the extractive answer with a warning.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from bot.answer import Answer, Citation, compose, prompt, refusal
from bot.gate import Gate
from bot.generation import EXTRACTIVE, BackendError, ChatBackend, Evidence, evidence
from bot.index import CaseIndex, ensure_index
from bot.lexicon import Lexicon
from bot.resolution import Resolver
from bot.retrieval import CaseHit, Retriever
from bot.settings import Settings
from bot.text import spaced
from bot.verification import UNVERIFIED_MARK, citation_verifier

MAX_QUESTION_CHARS = 2000
# Earlier turns shown to the model when it condenses a follow-up.
CONDENSE_TURNS = 3
# Conversations kept in memory, the least recently used forgotten first, and the longest conversation id.
MAX_CONVERSATIONS = 10_000
MAX_CONVERSATION_ID_CHARS = 200


def ranked_ids(hits: list[CaseHit], citations: list[Citation]) -> list[str]:
    """The ranked retrieval, then any case cited from the metadata alone (a pathway table row)."""
    ranked = [hit.case.id for hit in hits]
    return ranked + [c.case_id for c in citations if c.case_id not in ranked]


class QuestionError(ValueError):
    """A question that cannot be answered as given (empty, too long, not text)."""


@dataclass
class Turn:
    question: str
    standalone_question: str
    cited: list[str]  # the cases the answer was composed from, lead first (not a pathway table's extra rows)


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def foci(self) -> list[list[str]]:
        """The cases of each answered turn, best first, the latest turn's first."""
        return [turn.cited for turn in reversed(self.turns) if turn.cited]


def clean_question(question: object) -> str:
    if isinstance(question, bytes):
        try:
            question = question.decode("utf-8")
        except UnicodeDecodeError as error:
            raise QuestionError("the question is not UTF-8 text") from error
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, not {type(question).__name__}")
    text = "".join(ch for ch in spaced(question) if ch.isprintable() or ch in "\n\t").strip()
    if not text:
        raise QuestionError("the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise QuestionError(f"the question is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return re.sub(r"\s+", " ", text)


class CaseBot:
    """The bot over one index: answers questions, keeping named conversations apart."""

    def __init__(self, settings: Settings, log=print):
        self.settings = settings
        self.lexicon = Lexicon.load(settings.lexicon_path)
        self.index: CaseIndex = ensure_index(settings, self.lexicon, log)
        self.retriever = Retriever(self.index, self.lexicon, settings)
        self.backend = ChatBackend(settings) if settings.llm != EXTRACTIVE else None
        self.verifier = citation_verifier(settings, self.lexicon, self.retriever.embedder)
        self.resolver = Resolver(self.retriever.language, self.lexicon)
        self.gate = Gate(settings, self.index.cache_dir.with_name(self.index.cache_dir.name + "-gate.json"))
        self.gate.model(self.retriever)  # fitted (or read) now, so the first question is not kept waiting
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self._guard = threading.Lock()

    def conversation(self, name: str) -> Conversation:
        """The named conversation; at most MAX_CONVERSATIONS are kept (the least recently used go first) and a
        very long name is kept as its digest, so memory stays bounded whatever clients send."""
        if len(name) > MAX_CONVERSATION_ID_CHARS:
            name = "sha256:" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()
        with self._guard:
            convo = self._conversations.pop(name, None) or Conversation()
            self._conversations[name] = convo
            while len(self._conversations) > MAX_CONVERSATIONS:
                self._conversations.popitem(last=False)
            return convo

    def forget(self, name: str) -> None:
        with self._guard:
            self._conversations.pop(name, None)

    def ask(self, question: object, conversation: str = "default", filters: dict[str, str] | None = None) -> Answer:
        for item in self.ask_stream(question, conversation, filters):
            if isinstance(item, Answer):
                return item
        raise AssertionError("ask_stream ended without an answer")

    def ask_stream(self, question: object, conversation: str = "default",
                   filters: dict[str, str] | None = None) -> Iterator[str | Answer]:
        """For a chat that shows the model writing: yields the model's text in pieces (str) as they arrive,
        then the final Answer. The pieces are an unverified draft; the Answer's `answer` replaces it (markers
        checked, unsupported sentences marked, or the extractive fallback). The extractive backend yields the
        Answer alone. Bad questions raise QuestionError at the first step."""
        text = clean_question(question)
        convo = self.conversation(conversation)
        with convo.lock:
            answer, answered_from = yield from self._answer(text, convo, filters)
            convo.turns.append(Turn(text, answer.standalone_question, answered_from))
        yield answer

    def about(self, question: str, focus: list[str]) -> str:
        """A follow-up with the titles of the cases it points back to, so retrieval within them finds it similar."""
        titles = "; ".join(self.retriever.cases[cid].title for cid in focus if cid in self.retriever.cases)
        return f"{question} (about: {titles})"

    def condensed(self, question: str, convo: Conversation, warnings: list[str]) -> str:
        """A follow-up rewritten by the model (prompts/condense.md); as asked if that fails."""
        history = "\n".join(
            f"Clinician: {turn.question}\nCases in the answer: "
            + ("; ".join(self.retriever.cases[cid].title for cid in turn.cited if cid in self.retriever.cases)
               or "none")
            for turn in convo.turns[-CONDENSE_TURNS:])
        try:
            text = self.backend.condense(question, history)
            return clean_question(text)
        except (BackendError, QuestionError) as error:
            warnings.append(f"the follow-up could not be rewritten by the model ({error}); it was resolved "
                            "against the conversation's last cases alone")
            return question

    def _answer(self, question: str, convo: Conversation,
                filters: dict[str, str] | None) -> Generator[str, None, tuple[Answer, list[str]]]:
        """The answer, and the cases it was answered from (lead first): what a follow-up refers back to."""
        started = time.perf_counter()
        retriever = self.retriever.snapshot()
        warnings: list[str] = []
        question_read, corrections = self.resolver.corrected(question, retriever)
        resolution = self.resolver.resolve(question_read, convo.foci(), retriever, corrections)
        follow_up = resolution.kind == "follow-up"
        standalone = self.about(question_read, resolution.cases) if follow_up else question_read
        condense_s = 0.0
        if follow_up and self.backend:  # the model's rewrite, still tied to the cases so a poor one cannot stray
            asked_at = time.perf_counter()
            standalone = self.about(self.condensed(question_read, convo, warnings), resolution.cases)
            condense_s = time.perf_counter() - asked_at
        hits = retriever.search(standalone, filters, only_cases=set(resolution.cases) if follow_up else None)
        retrieved_at = time.perf_counter()
        # What the question asks in its own words: a follow-up's references ("she", "the outcome") name no concept.
        own_words = retriever.language.referring_words(question_read) if follow_up else question_read
        concepts = retriever.concepts(own_words)
        if follow_up:
            for hit in hits:
                hit.coverage = retriever.coverage(concepts, hit.case.id)
            # The last answer's order stands (its lead first) unless the question's words favour another of its
            # cases, which the gate's precedence sees in coverage: "what did they do with the ACEi?" stays on the
            # case the conversation was about, though another case of that answer is nearer in wording.
            order = {cid: position for position, cid in enumerate(resolution.cases)}
            hits.sort(key=lambda hit: order.get(hit.case.id, len(order)))
        chosen, gate = self.gate.decide(hits, concepts, retriever, anchored=follow_up or bool(filters))
        generated, unsupported, verify_ms = None, [], None
        if chosen and self.backend:
            shown = evidence(chosen, retriever, self.settings.llm_passages)
            draft = yield from self._draft(standalone, shown, warnings)
            if draft is not None:
                checked_at = time.perf_counter()
                generated, unsupported = self._checked(draft, chosen, shown, warnings)
                verify_ms = round((time.perf_counter() - checked_at) * 1000, 1)
        if generated:
            text, citations = generated
        elif chosen:
            # A follow-up's quoted sentences are chosen by what it asks, not by the words that point back at its
            # case: "back to the SIBO man: which antibiotic did he start with?" wants the antibiotic sentences.
            asked = concepts if follow_up else retriever.concepts(question_read)
            text, citations = compose(question_read, chosen, asked, retriever, self.settings, filters,
                                      aspect=resolution.aspect)
        else:
            text, citations = refusal(retriever, self.settings, gate), []
        done = time.perf_counter()
        timings = {"retrieve": round((retrieved_at - started - condense_s) * 1000, 1),
                   "generate": round((done - retrieved_at) * 1000, 1),
                   "total": round((done - started) * 1000, 1)}
        if condense_s:
            timings["condense"] = round(condense_s * 1000, 1)
        if verify_ms is not None:
            timings["verify"] = verify_ms
        titles = {cid: case.title for cid, case in retriever.cases.items() if cid in resolution.cases}
        cited = {c.case_id for c in citations}
        return Answer(
            question=question, standalone_question=standalone, answer=text, citations=citations,
            refused=not chosen, backend=self.settings.llm if generated else EXTRACTIVE, unsupported=unsupported,
            warnings=warnings, retrieved=ranked_ids(hits, citations), timings_ms=timings,
            understood_as=resolution.note(titles), resolution=resolution, gate=gate
        ), [hit.case.id for hit in chosen if hit.case.id in cited]

    def _draft(self, question: str, shown: Evidence, warnings: list[str]) -> Generator[str, None, str | None]:
        """The model's text, passed on piece by piece as it comes; None (and a warning) when the backend fails."""
        pieces: list[str] = []
        try:
            for piece in self.backend.answer_stream(question, shown):
                pieces.append(piece)
                yield piece
        except BackendError as error:
            warnings.append(f"{error}; the extractive answer is shown")
            return None
        return "".join(pieces)

    def _checked(self, draft: str, chosen: list[CaseHit], shown: Evidence,
                 warnings: list[str]) -> tuple[tuple[str, list[Citation]] | None, list[str]]:
        """The draft as it may be shown with its citations (None when no sentence of it could be verified: the
        caller then shows the extractive answer), and its unsupported sentences."""
        checked = self.verifier.verify(draft, {cid: [text for _, text in pieces] for cid, pieces in shown.items()})
        if checked.removed:
            warnings.append(f"removed citations of cases the model was not given: {', '.join(checked.removed)}")
        unsupported = [check.words for check in checked.unsupported]
        if not checked.verified:
            warnings.append(f"no sentence of the {self.settings.llm} answer could be verified against the cases "
                            f"it cites; the extractive answer is shown ({len(unsupported)} unverified sentences "
                            "listed under unsupported)")
            return None, unsupported
        if unsupported:
            warnings.append(f"{len(unsupported)} of {len(checked.verified) + len(unsupported)} sentences could not "
                            f"be verified against the cases they cite; they are marked {UNVERIFIED_MARK} and "
                            "listed under unsupported")
        hits = {hit.case.id: hit for hit in chosen}
        citations = [Citation(case_id=cid, title=hits[cid].case.title,
                              source=hits[cid].case.source or hits[cid].case.path,
                              passages=checked.evidence(cid), score=round(hits[cid].similarity, 4))
                     for cid in checked.cited()]
        note = prompt(self.settings.prompts_dir, "educational_note.md")
        return (checked.text + "\n\n" + note, citations), unsupported
