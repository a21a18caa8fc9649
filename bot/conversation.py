"""Questions in a conversation -> answers: follow-ups resolved against earlier turns, then retrieve and answer.

`CaseBot` is the one entry to the bot for the CLI, the web app and the evaluation, so all answer alike.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from bot.answer import Answer, compose, refusal, select_cases
from bot.index import CaseIndex, ensure_index
from bot.lexicon import Lexicon
from bot.retrieval import Retriever
from bot.settings import Settings

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
        self._conversations: dict[str, Conversation] = {}
        self._guard = threading.Lock()

    def conversation(self, name: str) -> Conversation:
        with self._guard:
            return self._conversations.setdefault(name, Conversation())

    def forget(self, name: str) -> None:
        with self._guard:
            self._conversations.pop(name, None)

    def ask(self, question: object, conversation: str = "default", filters: dict[str, str] | None = None) -> Answer:
        text = clean_question(question)
        convo = self.conversation(conversation)
        with convo.lock:
            answer = self._answer(text, convo, filters)
            convo.turns.append(Turn(text, answer.standalone_question, [c.case_id for c in answer.citations]))
        return answer

    def resolve(self, question: str, convo: Conversation) -> tuple[str, list[str] | None]:
        """The standalone question, and the cases a follow-up is restricted to (None for a new topic)."""
        focus = convo.focus()
        points_back = ANAPHORA.search(question) or len(question.split()) <= SHORT_FOLLOW_UP_WORDS
        if not focus or not points_back or self._names_new_case(question, focus):
            return question, None
        if SINGULAR.search(question):  # "she", "that case": the case the last answer put first
            focus = focus[:1]
        titles = "; ".join(self.retriever.cases[cid].title for cid in focus if cid in self.retriever.cases)
        return f"{question} (about: {titles})", focus

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

    def _answer(self, question: str, convo: Conversation, filters: dict[str, str] | None) -> Answer:
        started = time.perf_counter()
        self.retriever.refresh()
        standalone, focus = self.resolve(question, convo)
        hits = self.retriever.search(standalone if focus else question, filters,
                                     only_cases=set(focus) if focus else None)
        retrieved_at = time.perf_counter()
        concepts = self.retriever.concepts(question)
        if focus:
            for hit in hits:  # a follow-up is about its case by construction; only similarity is checked
                hit.coverage = 1.0
        chosen = select_cases(hits, self.settings)
        warnings = []
        if self.settings.llm != "extractive":
            warnings.append(f"backend {self.settings.llm!r} is not available in this version; "
                            "the extractive answer is shown")
        if chosen:
            text, citations = compose(question, chosen, concepts, self.retriever, self.settings)
        else:
            text, citations = refusal(self.retriever, self.settings), []
        done = time.perf_counter()
        return Answer(
            question=question, standalone_question=standalone, answer=text, citations=citations,
            refused=not chosen, warnings=warnings, retrieved=[h.case.id for h in hits],
            timings_ms={"retrieve": round((retrieved_at - started) * 1000, 1),
                        "generate": round((done - retrieved_at) * 1000, 1),
                        "total": round((done - started) * 1000, 1)})
