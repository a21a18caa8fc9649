"""Chosen cases -> generated text: the chat model named by settings.llm, through LangChain's chat-model classes.

`extractive` needs no model. `llamacpp:PATH.gguf` runs a GGUF file in process (llama-cpp-python, the
`llamacpp` extra, through its own chat API wrapped as a LangChain chat model below),
`openai:MODEL` talks to any OpenAI-compatible server (settings.openai_base_url: vLLM, llama.cpp's server,
LM Studio, Ollama's /v1, a cloud), `ollama:MODEL` to an Ollama server. Every call runs against a deadline
(settings.llm_timeout) and every failure becomes a BackendError, so the caller can always fall back to the
extractive answer: a backend that is down, slow or misconfigured never hangs an answer or shows a traceback.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate

from bot.answer import prompt
from bot.chunking import SUMMARY_SECTION
from bot.retrieval import CaseHit, Retriever
from bot.settings import Settings

EXTRACTIVE = "extractive"
BACKENDS = ("llamacpp", "openai", "ollama")
# OpenAI's client insists on a key; local OpenAI-compatible servers ignore it.
PLACEHOLDER_API_KEY = "not-needed"
# llama-cpp-python is an optional extra: `make run` and a core install do without its compile.
LLAMACPP_EXTRA = "pip install -e '.[llamacpp]'"
# langchain-community's ChatLlamaCpp default, kept so that in-process answers stay as they were measured
# (llama-cpp-python's own default, 1.0, applies no penalty).
REPEAT_PENALTY = 1.1
_END = object()


class BackendError(RuntimeError):
    """The configured model cannot answer (misconfigured, down, too slow): the caller shows the extractive answer."""


Evidence = dict[str, list[tuple[str, str]]]  # case id -> (section, text) passages, as shown to the model


def evidence(hits: list[CaseHit], retriever: Retriever, per_case: int) -> Evidence:
    """What the model sees of each chosen case: its title, its metadata summary and its best-ranked passages,
    in the case's own order. The citation check holds the model's sentences to exactly these texts."""
    shown: Evidence = {}
    for hit in hits:
        best = [p.text for p in hit.passages if p.section != SUMMARY_SECTION][:per_case]
        pieces = [("Title", hit.case.title)] + [
            (meta["section"], meta["text"]) for meta in retriever.side.case_passages(hit.case.id)
            if meta["section"] == SUMMARY_SECTION or meta["text"] in best]
        shown[hit.case.id] = [(section, _as_data(text)) for section, text in pieces]
    return shown


def _as_data(text: str) -> str:
    """Case text cannot close its passage or plant a citation marker: <> and [] become look-alikes and ()."""
    return text.replace("[", "(").replace("]", ")").replace("<", "‹").replace(">", "›")


def require_backend_package(settings: Settings) -> None:
    """Raises BackendError naming the extra when the configured backend's package is not installed: checked
    at start-up, so a missing extra stops the command instead of every answer falling back."""
    if settings.llm.partition(":")[0] == "llamacpp":
        _llama_class(settings.llm)


def _llama_class(llm: str) -> type:
    try:
        from llama_cpp import Llama
    except ModuleNotFoundError as error:
        raise BackendError(f"CASEBOT_LLM={llm!r} needs llama-cpp-python, which the core install leaves out: "
                           f"install the llamacpp extra with `{LLAMACPP_EXTRA}`") from error
    return Llama


class InProcessLlama(BaseChatModel):
    """A GGUF model in this process through llama-cpp-python's own chat API (`create_chat_completion`, which
    applies the model's chat template). It replaces langchain-community's ChatLlamaCpp, which is deprecated."""

    client: Any  # llama_cpp.Llama: not thread-safe, ChatBackend calls it one at a time
    max_tokens: int
    temperature: float

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-python"

    def _completion(self, messages: list[BaseMessage], stop: list[str] | None, stream: bool):
        return self.client.create_chat_completion(
            messages=convert_to_openai_messages(messages), max_tokens=self.max_tokens, temperature=self.temperature,
            repeat_penalty=REPEAT_PENALTY, stop=stop or [], stream=stream)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        reply = self._completion(messages, stop, stream=False)
        text = reply["choices"][0]["message"].get("content") or ""
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for part in self._completion(messages, stop, stream=True):
            text = part["choices"][0]["delta"].get("content")
            if text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk


class ChatBackend:
    """The configured chat model, built on first use. Not thread-safe models (llama.cpp) run one call at a time."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.kind, _, self.target = settings.llm.partition(":")
        self.target = self.target.strip()
        self._model: BaseChatModel | None = None
        self._error: BackendError | None = None
        self._building = threading.Lock()
        self._one_at_a_time = threading.Lock() if self.kind == "llamacpp" else nullcontext()

    def describe(self) -> str:
        """The backend as a user configured it, for messages: which model, where."""
        if self.kind == "openai":
            return f"openai model {self.target!r} at {self.settings.openai_base_url or 'the OpenAI API'}"
        if self.kind == "ollama":
            return f"ollama model {self.target!r} at {self.settings.ollama_url}"
        return f"llama.cpp model {self.target}"

    def model(self) -> BaseChatModel:
        with self._building:
            if self._model is None and self._error is None:
                try:
                    self._model = self._build()
                except BackendError as error:
                    self._error = error
                except Exception as error:  # a library refusing its arguments: a configuration problem
                    self._error = BackendError(f"{self.describe()} could not be set up: {_reason(error)}")
            if self._error:
                raise self._error
            return self._model

    def _build(self) -> BaseChatModel:
        s = self.settings
        if self.kind not in BACKENDS or not self.target:
            raise BackendError(f"CASEBOT_LLM={s.llm!r} names no backend: use extractive, llamacpp:PATH.gguf, "
                               "openai:MODEL or ollama:MODEL")
        if self.kind == "llamacpp":
            path = Path(self.target).expanduser()
            if not path.is_file():
                raise BackendError(f"CASEBOT_LLM={s.llm!r}: the model file {path} does not exist")
            llama = _llama_class(s.llm)
            try:
                client = llama(model_path=str(path), n_ctx=s.llm_context, n_batch=512, n_threads=s.llm_threads,
                               seed=0, verbose=False)
            except Exception as error:
                raise BackendError(f"CASEBOT_LLM={s.llm!r}: llama.cpp could not load {path} "
                                   f"(is it a GGUF model file?): {_reason(error)}") from error
            return InProcessLlama(client=client, max_tokens=s.llm_max_tokens, temperature=s.llm_temperature)
        if self.kind == "openai":
            from langchain_openai import ChatOpenAI

            key = s.openai_api_key.get_secret_value() if s.openai_api_key else PLACEHOLDER_API_KEY
            # ChatOpenAI sends max_tokens as OpenAI's newer max_completion_tokens, which several compatible
            # servers (llama-cpp-python's among them) ignore: they get the classic field.
            limit = ({"extra_body": {"max_tokens": s.llm_max_tokens}} if s.openai_base_url
                     else {"max_tokens": s.llm_max_tokens})
            return ChatOpenAI(model=self.target, base_url=s.openai_base_url, api_key=key, timeout=s.llm_timeout,
                              max_retries=1, temperature=s.llm_temperature, **limit)
        from langchain_ollama import ChatOllama

        return ChatOllama(model=self.target, base_url=s.ollama_url, num_predict=s.llm_max_tokens,
                          temperature=s.llm_temperature, client_kwargs={"timeout": s.llm_timeout})

    def answer_stream(self, question: str, shown: Evidence) -> Iterator[str]:
        """The model's answer to `question` from the `shown` passages, piece by piece (unverified)."""
        return self._stream(self.answer_messages(question, shown))

    def answer_messages(self, question: str, shown: Evidence) -> list[BaseMessage]:
        """The system and answer prompts, with every passage delimited and labelled with its case id."""
        passage = prompt(self.settings.prompts_dir, "passage.md")
        passages = "\n".join(passage.format(case_id=case_id, section=section, text=text)
                             for case_id, pieces in shown.items() for section, text in pieces)
        template = ChatPromptTemplate.from_messages([
            ("system", prompt(self.settings.prompts_dir, "system.md")),
            ("human", prompt(self.settings.prompts_dir, "answer.md"))])
        return template.format_messages(passages=passages, question=question, example_id=next(iter(shown)),
                                        max_sentences=self.settings.llm_max_sentences)

    def condense(self, question: str, history: str) -> str:
        """`question` rewritten to stand alone, from the model and the condense prompt."""
        template = ChatPromptTemplate.from_messages([("human", prompt(self.settings.prompts_dir, "condense.md"))])
        text = self.complete(template.format_messages(question=question, history=history))
        lines = [line.strip().strip('"“”').strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise BackendError(f"{self.describe()} returned no rewritten question")
        return lines[0]

    def complete(self, messages: list[BaseMessage]) -> str:
        """The model's whole reply, within the same deadline as a streamed answer."""
        return "".join(self._stream(messages))

    def _stream(self, messages: list[BaseMessage]) -> Iterator[str]:
        """Text pieces as the model writes them. The model runs in a worker thread so that the deadline holds
        even when the backend never answers; a call past its deadline is told to stop at its next piece."""
        model = self.model()
        pieces: queue.Queue = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                with self._one_at_a_time:
                    for chunk in model.stream(messages):
                        if stop.is_set():
                            return
                        pieces.put(chunk.text)
            except Exception as error:  # handed to the caller, which reports it
                pieces.put(error)
            finally:
                pieces.put(_END)

        threading.Thread(target=work, name="casebot-llm", daemon=True).start()
        deadline = time.monotonic() + self.settings.llm_timeout
        try:
            while True:
                try:
                    piece = pieces.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise BackendError(f"{self.describe()} did not finish within {self.settings.llm_timeout:g} s "
                                       "(CASEBOT_LLM_TIMEOUT)") from None
                if piece is _END:
                    return
                if isinstance(piece, Exception):
                    raise BackendError(f"{self.describe()} failed: {_reason(piece)}") from piece
                yield piece
        finally:
            stop.set()


def _reason(error: BaseException) -> str:
    """The error in one line, with its cause when the library wraps it ("Connection error." says little)."""
    text = f"{type(error).__name__}: {error}".strip()
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return " ".join(text.split())[:500]
