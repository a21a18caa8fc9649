"""Questions in a conversation -> answers: follow-ups resolved against earlier turns, then retrieve and answer.

`CaseBot` is the one entry to the bot for the CLI, the web app and the evaluation, so all answer alike.
With an LLM configured (settings.llm), the chosen cases' passages go to the model, its text is checked by
bot/verification.py before it is shown, and any failure falls back to the extractive answer with a warning.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from bot.answer import Answer, Citation, compose, prompt, refusal, select_cases
from bot.generation import EXTRACTIVE, BackendError, ChatBackend, Evidence, evidence
from bot.index import CaseIndex, ensure_index
from bot.lexicon import Lexicon
from bot.retrieval import CaseHit, Retriever
from bot.settings import Settings
from bot.verification import UNVERIFIED_MARK, CitationVerifier

MAX_QUESTION_CHARS = 2000
# Words that point back at the conversation rather than naming a case.
ANAPHORA = re.compile(
    r"\b(she|he|her|him|his|hers|they|them|their|it|that case|this case|the case|that patient|this patient|"
    r"the patient|that one|this one|same case|same patient|that|this|those|these|then|next|instead)\b",
    re.IGNORECASE)
SINGULAR = re.compile(r"\b(she|he|her|him|his|hers|that case|this case|the case|that patient|this patient|"
                      r"the patient|that one|this one|same case|same patient)\b", re.IGNORECASE)


# A question this short after an answer ("Did the kidneys recover?") continues it unless it names a new topic.
SHORT_FOLLOW_UP_WORDS = 6
# Earlier turns shown to the model when it condenses a follow-up.
CONDENSE_TURNS = 3


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
    cited: list[str]


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def focus(self) -> list[str]:
        """The cases the last answered turn was about, best first."""
        for turn in reversed(self.turns):
            if turn.cited:
                return turn.cited
        return []


def clean_question(question: object) -> str:
    if isinstance(question, bytes):
        try:
            question = question.decode("utf-8")
        except UnicodeDecodeError as error:
            raise QuestionError("the question is not UTF-8 text") from error
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, not {type(question).__name__}")
    text = "".join(ch for ch in question if ch.isprintable() or ch in "\n\t").strip()
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
        self.verifier = CitationVerifier(self.lexicon, self.retriever.embedder, settings.verify_min_similarity)
        self._conversations: dict[str, Conversation] = {}
        self._guard = threading.Lock()

    def conversation(self, name: str) -> Conversation:
        with self._guard:
            return self._conversations.setdefault(name, Conversation())

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
            answer = yield from self._answer(text, convo, filters)
            convo.turns.append(Turn(text, answer.standalone_question, [c.case_id for c in answer.citations]))
        yield answer

    def resolve(self, question: str, convo: Conversation) -> tuple[str, list[str] | None]:
        """The standalone question, and the cases a follow-up is restricted to (None for a new topic)."""
        focus = convo.focus()
        points_back = ANAPHORA.search(question) or len(question.split()) <= SHORT_FOLLOW_UP_WORDS
        if not focus or not points_back or self._names_new_case(question, focus):
            return question, None
        if SINGULAR.search(question):  # "she", "that case": the case the last answer put first
            focus = focus[:1]
        return self.about(question, focus), focus

    def about(self, question: str, focus: list[str]) -> str:
        """A follow-up with the titles of the cases it points back to, so retrieval within them finds it similar."""
        titles = "; ".join(self.retriever.cases[cid].title for cid in focus if cid in self.retriever.cases)
        return f"{question} (about: {titles})"

    def _names_new_case(self, question: str, focus: list[str]) -> bool:
        """Without a pronoun pointing back, a question naming a therapy, organ or antibody that none of
        the focus cases mention starts a new topic ("what about renal crisis, then?")."""
        if SINGULAR.search(question):
            return False
        named = [surface for surface, terms in self.lexicon.mentions(question)
                 if any(term.group != "terms" for term in terms)]
        if not named:
            return False
        focus_tokens = set().union(*(self.retriever.side.case_tokens.get(cid, set()) for cid in focus))
        concepts = [c for c in self.retriever.concepts(question) if c.label in named]
        return any(not any(alt <= focus_tokens for alt in c.alternatives) for c in concepts)

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
                filters: dict[str, str] | None) -> Generator[str, None, Answer]:
        started = time.perf_counter()
        retriever = self.retriever.snapshot()
        warnings: list[str] = []
        standalone, focus = self.resolve(question, convo)
        condense_s = 0.0
        if focus and self.backend:  # the model's rewrite, still tied to the cases so a poor one cannot stray
            asked_at = time.perf_counter()
            standalone = self.about(self.condensed(question, convo, warnings), focus)
            condense_s = time.perf_counter() - asked_at
        hits = retriever.search(standalone if focus else question, filters,
                                only_cases=set(focus) if focus else None)
        retrieved_at = time.perf_counter()
        concepts = retriever.concepts(question)
        if focus:
            for hit in hits:  # a follow-up is about its case by construction; only similarity is checked
                hit.coverage = 1.0
        chosen = select_cases(hits, self.settings)
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
            text, citations = compose(question, chosen, concepts, retriever, self.settings, filters)
        else:
            text, citations = refusal(retriever, self.settings), []
        done = time.perf_counter()
        timings = {"retrieve": round((retrieved_at - started - condense_s) * 1000, 1),
                   "generate": round((done - retrieved_at) * 1000, 1),
                   "total": round((done - started) * 1000, 1)}
        if condense_s:
            timings["condense"] = round(condense_s * 1000, 1)
        if verify_ms is not None:
            timings["verify"] = verify_ms
        return Answer(
            question=question, standalone_question=standalone, answer=text, citations=citations,
            refused=not chosen, backend=self.settings.llm if generated else EXTRACTIVE, unsupported=unsupported,
            warnings=warnings, retrieved=ranked_ids(hits, citations), timings_ms=timings)

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
