"""The bot made while the page is already up. `casebot serve` used to make the bot (and on a first start build
the index: 50-80 s) before serving anything; now the page is served at once with a progress bar, and the bot
is made behind it: the index built when it is empty (case by case, so the bar can say how far it is), then the
embedding model, the index and the gate loaded (a few seconds).

Whoever needs the bot asks `Startup.bot`: while the index is being built it refuses politely with how far it
is (a minute is too long to keep a question waiting); while the model loads it waits, so that a question asked
in the first seconds is answered, not refused."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

import gradio as gr

from bot.conversation import CaseBot
from bot.index import CaseIndex, ensure_index
from bot.lexicon import Lexicon
from bot.settings import Settings

INDEXING, LOADING, READY, FAILED = "indexing", "loading", "ready", "failed"
WAIT_STEP_S = 0.5  # how often a waiting question looks whether the start turned out to be an index build


class NotReady(gr.Error):
    """The bot is not made yet (or could not be made): the message says why, as the user sees it. A Gradio
    error, so that an event of any tab shows it as a notice."""

    def __str__(self) -> str:
        return self.message  # gr.Error's own is the message's repr, quotes and all


def warm_up(bot: CaseBot, question: str) -> None:
    """One search: it loads the embedding model and reads the index, which made the first question after a
    restart wait ~9-11 s while the later ones took under a second. Gradio imports pandas when it finishes
    its first event (for its event statistics): another 0.5 s of the first answer, imported here instead."""
    bot.retriever.search(question)
    importlib.import_module("pandas")


class Startup:
    """The bot of one server and how far its making is. The settings and the lexicon are there at once (the
    page is built from them); the bot once `ready` is set and `phase` is READY."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.lexicon = Lexicon.load(settings.lexicon_path)
        self._bot: CaseBot | None = None
        self.phase = LOADING
        self.indexed = self.total = 0  # cases embedded of those to embed, while INDEXING
        self.error = ""
        self.ready = threading.Event()

    @classmethod
    def of(cls, bot: CaseBot) -> Startup:
        """A start that is over: the app over a bot made already (tests, scripts)."""
        startup = cls(bot.settings)
        startup.made(bot)
        return startup

    def run(self, warm_question: str, log: Callable[[str], None] = print) -> CaseBot:
        """Makes the bot on the calling thread: the index first if it is empty, then the bot, warmed up with
        `warm_question`. An error is kept for the page to show, and raised."""
        try:
            if CaseIndex(self.settings).count() == 0:
                self.phase = INDEXING
                ensure_index(self.settings, self.lexicon, log, on_case=self._indexing)
            self.phase = LOADING
            bot = CaseBot(self.settings, log=log)
            warm_up(bot, warm_question)
        except Exception as error:
            self.phase, self.error = FAILED, str(error) or type(error).__name__
            self.ready.set()  # nothing is left waiting
            raise
        self.made(bot)
        return bot

    def made(self, bot: CaseBot) -> None:
        """The start is over: `bot` answers from now on (also how a test ends a start it holds open)."""
        self._bot, self.phase = bot, READY
        self.ready.set()

    def _indexing(self, done: int, total: int) -> None:
        self.indexed, self.total = done, total

    @property
    def bot(self) -> CaseBot:
        """The bot, waiting while it loads; NotReady while the index is being built or if the start failed."""
        while self.phase != INDEXING:
            if self.ready.wait(WAIT_STEP_S):
                break
        else:
            raise NotReady(self.note())
        if self._bot is None:
            raise NotReady(self.note())
        return self._bot

    def note(self) -> str:
        """How far the start is, in a sentence for whoever is waiting ("" once it is over)."""
        if self.phase == INDEXING:
            done = f": {self.indexed} of {self.total} cases" if self.total else " (reading the case files)"
            return (f"The case library is still being indexed{done}. Questions are answered as soon as it is "
                    "ready, in a minute or so: please ask again then.")
        if self.phase == LOADING:
            return ("The server has just started and is still loading the case library: your question is "
                    "answered as soon as it is loaded.")
        if self.phase == FAILED:
            return f"The case library could not be loaded ({self.error}). The server's log says more."
        return ""

    def status(self) -> dict[str, object]:
        """The start as GET /api/status reports it (a readiness check for a deployment)."""
        return {"ready": self.phase == READY, "phase": self.phase, "indexed": self.indexed, "cases": self.total,
                "message": self.note()}
