"""The HTTP API that `casebot serve` carries on the FastAPI server Gradio runs: OpenAI's chat API
(`POST /v1/chat/completions`, streaming or not, and `GET /v1/models`), so that any OpenAI client or chat front end
can use casebot as a "model", `POST /api/ask`, returning the answer object of SPEC section 4, and
`POST /api/similar` (patients like mine, bot/similar.py).

Like OpenAI's, the chat API keeps no state: a conversation's history comes from its messages, and an earlier
reply's [case-id] markers are what a follow-up refers back to. Only checked text is sent: a generating backend's
draft is never streamed, the answer goes out once its citations are verified, with the answer object alongside
in a `casebot` field."""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from bot.answer import Answer, cited_ids
from bot.cli import checked_filters
from bot.conversation import CaseBot, Turn, clean_question
from bot.feedback import feedback_store
from bot.index import IndexUnavailable
from bot.retrieval import FILTER_KEYS
from bot.similar import PatientMatcher, Profile, SimilarResult, VignetteError
from bot.web.render import sources_markdown

MODEL_ID = "casebot"
INDEX_RETRY_AFTER_S = 5  # told to a client while the Chroma server is unreachable (a restart takes seconds)
Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    """A request the API refuses, answered in OpenAI's error shape so that its clients show the message."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.param, self.retry_after = status, code, param, retry_after

    def body(self) -> dict[str, Any]:
        kind = ("authentication_error" if self.status == 401 else "server_error" if self.status >= 500
                else "invalid_request_error")
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool calls...: accepted, not used
    role: str
    content: str | list[ContentPart] | None = None

    def text(self, where: str) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        other = [part.type for part in self.content if part.type != "text"]
        if other:
            raise ApiError(400, f"{where}.content: casebot reads text only, not {other[0]!r} parts", "invalid_content",
                           f"{where}.content")
        return "\n".join(part.text or "" for part in self.content)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, user...: the answer does not depend on them
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    casebot_filters: dict[str, str] | None = None
    metadata: dict[str, str] | None = None


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored
    question: str
    conversation: str | None = None
    filters: dict[str, str] = {}


class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vignette: str
    k: int | None = Field(None, ge=1, le=100)
    profile: Profile | None = None  # the profile as the user corrected it; default: read from the vignette


@dataclass
class Question:
    text: str
    history: list[Turn]
    filters: dict[str, str]


def parse(model: type[Model], body: bytes) -> Model:
    """The request body as `model`; a 400 naming the first field that is wrong."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}", "invalid_request", where) from None


def reply_text(answer: Answer) -> str:
    """What a chat front end shows: how a follow-up was read, the answer, then each cited case with its source
    and the passages behind it."""
    lines = [f"_Understood as: {answer.understood_as}_", ""] if answer.understood_as else []
    lines.append(answer.answer)
    if answer.citations:
        lines += ["", "**Sources**", "", *sources_markdown(answer.citations)]
    return "\n".join(lines)


class CaseBotApi:
    """The API's routes over one bot. Requests wait for `ready` (the warm-up of `casebot serve`) and at most
    settings.web_concurrency are answered at once, as in the web app."""

    def __init__(self, bot: CaseBot, ready: threading.Event):
        self.bot, self.ready = bot, ready
        self.key = bot.settings.api_key.get_secret_value() if bot.settings.api_key else None
        self.closed = self.key is None and bot.settings.auth is not None
        self.slots = threading.BoundedSemaphore(bot.settings.web_concurrency)
        self.started = int(time.time())
        self.audit = feedback_store(bot.settings)
        self.matcher = PatientMatcher(bot.retriever, bot.lexicon, bot.settings)

    def routes(self) -> list[BaseRoute]:
        router = APIRouter()
        router.add_api_route("/v1/models", self.models, methods=["GET"])
        router.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        router.add_api_route("/api/ask", self.ask, methods=["POST"])
        router.add_api_route("/api/similar", self.similar, methods=["POST"])
        return router.routes

    def authorize(self, request: Request) -> None:
        """With CASEBOT_API_KEY set, its bearer key is required; with a web login but no key, the API is closed."""
        if self.closed:
            raise ApiError(401, "the API is closed: the web app requires a login (CASEBOT_AUTH) and no API key "
                           "is set on the server (CASEBOT_API_KEY)", "api_closed")
        if self.key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.key.encode()):
            raise ApiError(401, "a valid API key is required: send Authorization: Bearer <CASEBOT_API_KEY>",
                           "invalid_api_key")

    async def models(self, request: Request):
        try:
            self.authorize(request)
        except ApiError as error:
            return error.response()
        return JSONResponse({"object": "list", "data": [
            {"id": MODEL_ID, "object": "model", "created": self.started, "owned_by": "casebot"}]})

    async def chat_completions(self, request: Request):
        try:
            self.authorize(request)
            chat = parse(ChatRequest, await request.body())
            if chat.model != MODEL_ID:
                raise ApiError(404, f"the model {chat.model!r} does not exist: this server offers {MODEL_ID!r}",
                               "model_not_found", "model")
            question = await run_in_threadpool(self.question_of, chat)
            if chat.stream:
                return StreamingResponse(self.events(question), media_type="text/event-stream")
            answer = await run_in_threadpool(self.answer, question, None)
        except ApiError as error:
            return error.response()
        return JSONResponse(completion(answer, "chat.completion",
                                       {"message": {"role": "assistant", "content": reply_text(answer)}}))

    async def ask(self, request: Request):
        try:
            self.authorize(request)
            asked = parse(AskRequest, await request.body())
            question = await run_in_threadpool(self.checked, asked.question, [], asked.filters)
            # A named conversation is kept, and is the web API `ask`'s conversation of the same id.
            named = f"api:{asked.conversation}" if asked.conversation else None
            answer = await run_in_threadpool(self.answer, question, named)
        except ApiError as error:
            return error.response()
        return JSONResponse(answer.model_dump(mode="json"))

    async def similar(self, request: Request):
        """Patients like mine: the profile, the ranked matches and what followed. The vignette is neither audited
        nor stored; one with an identifier is refused (422) with the reason."""
        try:
            self.authorize(request)
            asked = parse(SimilarRequest, await request.body())
            result = await run_in_threadpool(self.similar_to, asked)
        except ApiError as error:
            return error.response()
        return JSONResponse(result.model_dump(mode="json"))

    def similar_to(self, asked: SimilarRequest) -> SimilarResult:
        self.ready.wait()
        try:
            with self.slots:
                return self.matcher.find(asked.vignette, asked.k or self.bot.settings.similar_k, asked.profile)
        except VignetteError as error:
            raise ApiError(422, str(error), "vignette_refused", "vignette") from None

    def question_of(self, chat: ChatRequest) -> Question:
        """The last message is the question; earlier user messages with the assistant's reply to them are the
        conversation's turns, each citing the library's cases that its reply marks."""
        *earlier, last = chat.messages
        if last.role != "user":
            raise ApiError(400, f"messages: the last message must be the user's question (role 'user'), not "
                           f"{last.role!r}", "invalid_messages", "messages")
        history = []
        for number, (asked, reply) in enumerate(zip(earlier, earlier[1:])):
            if asked.role == "user" and reply.role == "assistant":
                text = self.cleaned(asked.text(f"messages.{number}"), f"messages.{number}")
                marked = cited_ids(reply.text(f"messages.{number + 1}"))
                cited = [cid for cid in marked if cid in self.bot.retriever.cases]
                history.append(Turn(text, text, cited))
        filters = chat.casebot_filters if chat.casebot_filters is not None else {
            key: value for key, value in (chat.metadata or {}).items() if key in FILTER_KEYS}
        return self.checked(last.text(f"messages.{len(earlier)}"), history, filters, f"messages.{len(earlier)}")

    def checked(self, text: str, history: list[Turn], filters: dict[str, str], where: str = "question") -> Question:
        try:
            return Question(self.cleaned(text, where), history, checked_filters(self.bot, filters))
        except ValueError as error:  # a filter key or value the library does not have
            raise ApiError(400, f"filters: {error}", "invalid_filter", "filters") from None

    @staticmethod
    def cleaned(text: str, where: str) -> str:
        try:
            return clean_question(text)
        except ValueError as error:
            raise ApiError(400, f"{where}: {error}", "invalid_question", where) from None

    def answer(self, question: Question, conversation: str | None) -> Answer:
        """The bot's answer within `conversation`, or within a conversation made of the question's own history
        and forgotten afterwards."""
        self.ready.wait()
        name = conversation or f"openai:{uuid.uuid4().hex}"
        if conversation is None:
            self.bot.conversation(name).turns.extend(question.history)
        try:
            with self.slots:
                answer = self.bot.ask(question.text, name, question.filters or None)
        except IndexUnavailable as error:
            raise ApiError(503, str(error), "index_unavailable", retry_after=INDEX_RETRY_AFTER_S) from None
        finally:
            if conversation is None:
                self.bot.forget(name)
        self.audit.record(name, answer)
        return answer

    def events(self, question: Question) -> Iterator[str]:
        """Server-sent events as OpenAI streams them: the role at once, the checked reply line by line, then the
        end with the answer object, then [DONE]. A question that cannot be answered now (the index unreachable)
        ends the stream with an error event, which OpenAI's clients raise with its message."""
        stream_id = f"chatcmpl-{uuid.uuid4().hex}"
        yield sse(chunk(stream_id, {"role": "assistant", "content": ""}))
        try:
            answer = self.answer(question, None)
        except ApiError as error:
            yield sse(error.body())
            yield "data: [DONE]\n\n"
            return
        for line in reply_text(answer).splitlines(keepends=True):
            yield sse(chunk(stream_id, {"content": line}))
        yield sse(completion(answer, "chat.completion.chunk", {"delta": {}}, stream_id))
        yield "data: [DONE]\n\n"


def completion(answer: Answer, kind: str, choice: dict, completion_id: str | None = None) -> dict[str, Any]:
    """A finished chat completion (or the last chunk of a stream), carrying the answer object as `casebot`."""
    return {"id": completion_id or f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": MODEL_ID, "choices": [{"index": 0, **choice, "finish_reason": "stop"}],
            "casebot": answer.model_dump(mode="json")}


def chunk(stream_id: str, delta: dict) -> dict[str, Any]:
    return {"id": stream_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
