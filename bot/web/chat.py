"""The web app's Chat tab: answers stream in with their citations numbered, a sources panel with the passages
behind the selected answer, filters, feedback on each answer, Markdown export, and the named API endpoint
`ask` returning the answer object."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import gradio as gr

from bot.answer import Answer
from bot.conversation import QuestionError
from bot.feedback import feedback_store
from bot.index import IndexUnavailable
from bot.retrieval import FILTER_KEYS, FilterError
from bot.web.render import (answer_blocks, as_text, describe_filters, filter_choices, new_conversation_id,
                            sources_html, sources_markdown)
from bot.web.startup import READY, NotReady, Startup

EXAMPLES = [
    "Lung fibrosis keeps progressing despite cyclophosphamide: what has been tried?",
    "Raynaud's and PAH not responding to ERAs: what was used next?",
    "Renal crisis not responding to ACE inhibitors: options?",
]
NO_SOURCES = ('<div class="sources"><p class="sources-empty">Ask a question: the cases its answer cites appear '
              "here with the passages that support it. Click an earlier answer to see its own sources.</p></div>")
SEARCHING = '<span class="answer-note">Searching the case library…</span>'
DRAFT = '<span class="answer-note">The model is writing; its citations are checked before the answer is shown.</span>\n\n'
# At 1366x768 the chat leaves room for the header, tabs, filters and the question box below it.
CHAT_HEIGHT = "calc(100vh - 330px)"
CHAT_MIN_HEIGHT = 320


def conversation_markdown(turns: list[dict]) -> str:
    """The conversation as a Markdown document: each answer with its own citations and passages."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# casebot conversation", "", f"Exported {stamp}.", ""]
    for number, record in enumerate(turns, start=1):
        lines += [f"## {number}. {record['question']}", ""]
        if record["answer"] is None:
            lines += [f"_Not answered: {record['error']}_", ""]
            continue
        answer = Answer.model_validate(record["answer"])
        if answer.understood_as:
            lines += [f"_Understood as: {answer.understood_as}_", ""]
        if record["filters"]:
            lines += [f"_Filtered to: {describe_filters(record['filters'])}_", ""]
        lines += [answer.answer, ""]
        if answer.citations:
            lines += ["### Sources", "", *sources_markdown(answer.citations), ""]
    return "\n".join(lines)


@cache
def exports_folder() -> Path:
    """This process's folder of conversation exports: its own (mode 0700, not a folder shared in /tmp, where other
    users could read what clinicians asked), and removed when the process ends."""
    folder = Path(tempfile.mkdtemp(prefix="casebot-exports-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def write_export(turns: list[dict], conversation_id: str) -> Path:
    """The export file of one conversation, rewritten after each answer so the download is always current;
    readable by the server's user alone (0600). Gradio serves a copy of it from its own cache, which it clears."""
    folder = exports_folder() / conversation_id
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "casebot-conversation.md"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        handle.write(conversation_markdown(turns))
    return path


def turn_of(history: list[dict], message_index: int) -> int:
    """The turn (a question and its answer) that chat message `message_index` belongs to."""
    return sum(1 for message in history[: message_index + 1] if message["role"] == "user") - 1


def forget(startup: Startup, conversation_id: str) -> None:
    """A closed (or cleared) session's conversation leaves the bot (if there is a bot yet), and its export the disk."""
    shutil.rmtree(exports_folder() / conversation_id, ignore_errors=True)
    if startup.phase == READY:
        startup.bot.forget(conversation_id)


def build_chat_tab(startup: Startup, started: gr.State) -> None:
    """The tab's components and events; called inside an open gr.Tab. Each browser session gets its own
    conversation id, history and citations; `started` turns true in a session once the bot is ready."""
    settings = startup.settings
    feedback = feedback_store(settings)
    workers = settings.web_concurrency
    choices = filter_choices([])  # the library's values arrive with the bot (`started`)
    conversation = gr.State(new_conversation_id, delete_callback=lambda name: forget(startup, name))
    turns = gr.State([])  # one record per question, aligned with the chat's question/answer pairs
    shown = gr.State(None)  # the turn whose sources are on show, which a comment goes with

    with gr.Row():
        filters = [gr.Dropdown(choices[key], value="", label=f"Filter: {key}", elem_id=f"filter-{key}")
                   for key in FILTER_KEYS]
    # On a phone the columns stack: the sources panel comes straight after the question box, the
    # examples and the conversation's buttons after it.
    with gr.Row():
        with gr.Column(scale=3, min_width=300):
            chatbot = gr.Chatbot(label="Case review", elem_id="chat", height=CHAT_HEIGHT,
                                 min_height=CHAT_MIN_HEIGHT, autoscroll=False, allow_tags=False,
                                 buttons=["copy"], feedback_options=("Like", "Dislike"))
            question = gr.Textbox(placeholder="Ask about the case library…", show_label=False,
                                  submit_btn="Ask", elem_id="question")
        with gr.Column(scale=2, min_width=300):
            sources = gr.HTML(NO_SOURCES, elem_id="sources")
            comment = gr.Textbox(label="Comment on the answer shown above (optional)", lines=2,
                                 elem_id="comment")
            send_comment = gr.Button("Send comment", elem_id="send-comment")
            feedback_status = gr.Markdown(elem_id="feedback-status")
    gr.Examples(EXAMPLES, inputs=question, label="Example questions")
    with gr.Row():
        clear = gr.Button("Clear chat", elem_id="clear")
        export = gr.DownloadButton("Export conversation (Markdown)", value=None,
                                   interactive=False, elem_id="export")

    def respond(message: str, history: list[dict], records: list[dict], conversation_id: str, *values: str):
        """Streams the answer as it is composed: the question at once, a generating model's draft as it
        writes (plain text: its citations are not yet checked), then the answer one case block at a time.
        Asked while the bot loads, it says so and waits; while the index is built, it is refused politely
        with how far the indexing is, and the question goes back to its box to be asked again."""
        if not message.strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        chosen = {key: value for key, value in zip(FILTER_KEYS, values) if value}
        history = [*history, {"role": "user", "content": as_text(message)},
                   {"role": "assistant", "content": SEARCHING}]
        yield history, gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
        if not startup.ready.is_set():
            history[-1] = {"role": "assistant", "content": f'<span class="answer-note">{as_text(startup.note())}</span>'}
            yield history, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        record = {"id": uuid.uuid4().hex, "question": message, "filters": chosen, "answer": None}
        asked_again = gr.skip()
        try:
            bot = startup.bot
            draft = ""
            for piece in bot.ask_stream(message, conversation_id, chosen or None):
                if isinstance(piece, Answer):
                    answer = piece
                else:
                    draft += piece
                    history[-1] = {"role": "assistant", "content": DRAFT + as_text(draft)}
                    yield history, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        except (QuestionError, FilterError, NotReady, IndexUnavailable) as error:  # shown in the chat
            record["error"] = str(error)
            blocks = [f'<span class="answer-warning">{as_text(str(error))}</span>']
            # A question refused for now, not for what it says, goes back to its box to be asked again.
            asked_again = message if isinstance(error, (NotReady, IndexUnavailable)) else gr.skip()
        else:
            feedback.record(conversation_id, answer)
            concepts = bot.retriever.concepts(answer.question)
            record |= {"answer": answer.model_dump(),
                       "highlight": sorted(set().union(*(alt for c in concepts for alt in c.alternatives)))}
            blocks = answer_blocks(answer, chosen, len(records))
        records = [*records, record]
        for count in range(1, len(blocks)):
            history[-1] = {"role": "assistant", "content": "".join(blocks[:count])}
            yield history, records, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        history[-1] = {"role": "assistant", "content": "".join(blocks)}
        number = len(records) - 1
        side = bot.retriever.side if record["answer"] else None  # a question not answered shows no case
        yield (history, records, number, sources_html(record, number, side), asked_again,
               gr.DownloadButton(value=write_export(records, conversation_id), interactive=True))

    question.submit(respond, [question, chatbot, turns, conversation, *filters],
                    [chatbot, turns, shown, sources, question, export],
                    api_visibility="private", concurrency_id="answers", concurrency_limit=workers)

    def show_selected(history: list[dict], records: list[dict], selected: gr.SelectData):
        number = turn_of(history, selected.index)
        if not 0 <= number < len(records):
            return gr.skip(), gr.skip()
        side = startup.bot.retriever.side if records[number]["answer"] is not None else None
        return sources_html(records[number], number, side), number

    chatbot.select(show_selected, [chatbot, turns], [sources, shown], api_visibility="private")

    def rate(history: list[dict], records: list[dict], conversation_id: str, like: gr.LikeData) -> str:
        number = turn_of(history, like.index)
        if not 0 <= number < len(records) or records[number]["answer"] is None:
            return "Only answers can be rated."
        rating = {True: "up", False: "down"}.get(like.liked)  # anything else withdraws the rating
        record = records[number]
        feedback.rate(record["id"], conversation_id, Answer.model_validate(record["answer"]), rating)
        said = {"up": "👍 stored", "down": "👎 stored", None: "rating withdrawn"}[rating]
        return f"Answer {number + 1}: {said}. Thank you."

    chatbot.like(rate, [chatbot, turns, conversation], feedback_status, api_visibility="private")

    def store_comment(text: str, records: list[dict], number: int | None, conversation_id: str):
        if not text.strip():
            return "Write a comment first.", gr.skip()
        if number is None or records[number]["answer"] is None:
            return "Comments go with the answer shown in the sources panel: ask a question first.", gr.skip()
        record = records[number]
        feedback.comment(record["id"], conversation_id, Answer.model_validate(record["answer"]), text)
        return f"Answer {number + 1}: comment stored. Thank you.", ""

    send_comment.click(store_comment, [comment, turns, shown, conversation], [feedback_status, comment],
                       api_visibility="private")

    def restart(conversation_id: str):
        """A fresh conversation: the bot forgets the old one, so follow-ups cannot reach back into it."""
        forget(startup, conversation_id)
        return ([], [], None, NO_SOURCES, gr.DownloadButton(value=None, interactive=False), "",
                new_conversation_id())

    reset_outputs = [chatbot, turns, shown, sources, export, feedback_status, conversation]
    clear.click(restart, conversation, reset_outputs, api_visibility="private")
    chatbot.clear(restart, conversation, reset_outputs, api_visibility="private")

    def current_filters():
        """Each page offers the filter values of the library as it is now (cases may have been added), or as
        the bot last read it while the index is unreachable."""
        retriever = startup.bot.retriever
        try:
            side = retriever.refresh()
        except IndexUnavailable:
            side = retriever.side
        now = filter_choices(list(side.cases.values()))
        return [gr.Dropdown(choices=now[key]) for key in FILTER_KEYS]

    started.change(current_filters, None, filters, api_visibility="private")

    def ask(question: str, conversation_id: str | None = None, request: gr.Request | None = None) -> dict:
        """The answer object of SPEC section 4 for `question` within conversation `conversation_id`; without
        one, the caller's own session's conversation (each client has its own session), never a shared one."""
        session = request.session_hash if request and request.session_hash else new_conversation_id()
        name = f"api:{conversation_id}" if conversation_id else f"api-session:{session}"
        bot = startup.bot
        try:
            answer = bot.ask(question, name)
        except (QuestionError, IndexUnavailable) as error:
            raise gr.Error(str(error)) from error
        feedback.record(name, answer)
        return answer.model_dump()

    gr.api(ask, api_name="ask", concurrency_id="answers", concurrency_limit=workers)
