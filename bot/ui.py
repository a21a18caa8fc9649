"""The clinicians' web app (Gradio): a chat whose answers stream in and show each cited case as a chip, a
sources panel with the passages behind the selected answer, filters, the case library, feedback on each
answer, Markdown export, optional login, and the named API endpoint `ask` returning the answer object
(the plain HTTP API, bot/api.py, is mounted on the same server).

Everything typed by a user or read from a case file is escaped before it reaches a Markdown or HTML view:
the only markup on the page is our own."""

from __future__ import annotations

import html
import importlib
import re
import tempfile
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr

from bot.answer import MARKER, Answer, prompt
from bot.api import CaseBotApi
from bot.cases import ORGANS, Case
from bot.chunking import PLAIN_SECTION, SUMMARY_SECTION
from bot.citations_view import anchor, numbered_text, numbering
from bot.conversation import CaseBot, QuestionError
from bot.feedback import feedback_store
from bot.index import SideIndex
from bot.retrieval import FILTER_KEYS, FilterError
from bot.settings import Settings
from bot.teaching import markdown_html
from bot.text import tokenize

EXAMPLES = [
    "Lung fibrosis keeps progressing despite cyclophosphamide: what has been tried?",
    "Raynaud's and PAH not responding to ERAs: what was used next?",
    "Renal crisis not responding to ACE inhibitors: options?",
]
NO_SOURCES = ('<div class="sources"><p class="sources-empty">Ask a question: the cases its answer cites appear '
              "here with the passages that support it. Click an earlier answer to see its own sources.</p></div>")
SEARCHING = '<span class="answer-note">Searching the case library…</span>'
WARMING = ('<span class="answer-note">The server has just started and is still loading the case library: '
           "your question is answered in a few seconds.</span>")
DRAFT = '<span class="answer-note">The model is writing; its citations are checked before the answer is shown.</span>\n\n'
# At 1366x768 the chat leaves room for the header, tabs, filters and the question box below it.
CHAT_HEIGHT = "calc(100vh - 330px)"
CHAT_MIN_HEIGHT = 320
# System fonts: the theme's bundled Source Sans Pro SemiBold drew a bold capital A or B as a small capital
# ("ᴀCE"), and Gradio quotes generic names like system-ui, which then match no font at all.
SANS = ("Segoe UI", "Roboto", "Helvetica Neue", "Noto Sans", "Liberation Sans", "DejaVu Sans", "Arial", "sans-serif")
MONO = ("Consolas", "SF Mono", "Menlo", "Liberation Mono", "DejaVu Sans Mono", "monospace")
STYLE = """
#intro h1 { font-size: 1.5em; margin: 0 0 .2em; }
#intro p { margin: 0; font-size: .9em; }
.cite-chip { display: inline-block; padding: 0 .45em; margin: 0 .1em; border-radius: .8em; font-size: .85em;
  font-family: var(--font-mono); background: var(--color-accent-soft); color: var(--body-text-color);
  border: 1px solid var(--color-accent); white-space: nowrap; }
a.cite-num { position: relative; padding: 0 .3em; margin: 0 .05em; font-family: inherit; font-weight: 600;
  text-decoration: none; cursor: pointer; }
a.cite-num:hover { background: var(--color-accent); color: var(--button-primary-text-color, #fff); }
a.cite-num:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 1px; }
a.cite-num:focus-visible::after { content: attr(title); position: absolute; left: 0; top: 1.6em; z-index: 20;
  width: max-content; max-width: 16em; padding: .3em .5em; border-radius: .3em; font-weight: normal;
  white-space: normal; background: var(--neutral-800, #27272a); color: var(--neutral-50, #fafafa); }
#chat table { display: block; max-width: 100%; overflow-x: auto; font-size: .85em; }
#chat th, #chat td { word-break: normal; overflow-wrap: normal; hyphens: none; }
#chat th { white-space: nowrap; }
#chat td:first-child { min-width: 8em; }
#pathway-table table, #similar-results table { display: block; max-width: 100%; overflow-x: auto; font-size: .85em; }
#pathway-table th, #pathway-table td, #similar-results th, #similar-results td {
  word-break: normal; overflow-wrap: normal; hyphens: none; }
#pathway-table th, #similar-results th { white-space: nowrap; }
#pathway-table th:first-child, #pathway-table td:first-child, #similar-results th:first-child,
#similar-results td:first-child { min-width: 10em; }
#pathway-table td:first-child, #similar-results td:first-child { white-space: nowrap; }  /* "cardioverter-defibrillator" broke at its hyphen */
#similar-results td .cite-chip { white-space: nowrap; }
.answer-note { display: block; font-style: italic; color: var(--body-text-color-subdued); }
.answer-warning { display: block; font-style: italic; color: var(--color-red-600, #b91c1c); }
.sources { max-height: 720px; overflow-y: auto; }
.sources h4 { margin: .8em 0 .2em; }
.sources .source-number { font-weight: 600; color: var(--color-accent); }
.sources .source-ref { font-size: .85em; color: var(--body-text-color-subdued); margin: 0 0 .3em;
  overflow-wrap: anywhere; }
.sources section.source { scroll-margin-top: .5em; border-radius: .3em; transition: background-color .6s; }
.sources section.source.source-shown, .cited-cases li.source-shown { background: var(--color-accent-soft); }
.cited-cases li { scroll-margin-top: .5em; transition: background-color .6s; }
.pathway-legend { display: flex; flex-wrap: wrap; gap: .3em 1.2em; list-style: none; margin: 0; padding: 0; }
.pathway-legend .swatch { display: inline-block; width: .9em; height: .9em; margin-right: .35em;
  vertical-align: -.1em; border-radius: .15em; }
.cited-cases .source-number { font-weight: 600; color: var(--color-accent); }
.cited-cases .source-ref, .teach-walk .source-ref { font-size: .85em; color: var(--body-text-color-subdued);
  overflow-wrap: anywhere; }
.sources blockquote.passage { margin: .3em 0; padding: .3em .6em; border-left: 3px solid var(--color-accent); }
.sources mark, .case mark { background: #fde68a; color: inherit; padding: 0 .1em; }
.sources .cite-chip { white-space: normal; overflow-wrap: anywhere; }
.case-facts th { text-align: left; padding-right: 1em; vertical-align: top; }
#teach-area.projector { --text-sm: 20px; --text-md: 24px; --text-lg: 28px; --text-xl: 34px; --text-xxl: 40px;
  --block-label-text-size: 20px; --block-title-text-size: 22px; --input-text-size: 24px;
  --button-large-text-size: 24px; --prose-text-size: 24px; }
#teach-area.projector .prose, #teach-area.projector .teach-walk { font-size: 24px; line-height: 1.45; }
@media (max-width: 640px) {  /* a phone: the question box stays on the first screen under the filters */
  #chat { height: calc(100vh - 470px) !important; min-height: 260px !important; }
}
"""
# Runs once per page. A citation number scrolls the chat's sources panel to its case as soon as the panel shows
# that answer's sources (the click also selects the answer, which brings them), or the Pathways and Teach tabs to
# the case their number names; the page itself scrolls only when the case is out of sight (a phone). A new
# question is scrolled to the top of the chat, so its answer is read from its start while it streams in below
# (the chat's own autoscroll is off: it showed the answer's end).
SCRIPT = """
() => {
  document.addEventListener('click', (event) => {
    const link = event.target.closest ? event.target.closest('a.cite-num') : null;
    if (!link) return;
    event.preventDefault();
    const id = link.getAttribute('href').slice(1);
    const until = Date.now() + 10000;
    const reveal = () => {
      const target = document.getElementById(id);
      if (!target) { if (Date.now() < until) setTimeout(reveal, 100); return; }
      const panel = target.closest('.sources');  // the chat's panel; the Pathways and Teach tabs have none
      if (panel) panel.scrollTop += target.getBoundingClientRect().top - panel.getBoundingClientRect().top;
      const top = target.getBoundingClientRect().top;
      if (top < 0 || top > window.innerHeight - 60) target.scrollIntoView({block: 'start'});
      target.focus({preventScroll: true});
      target.classList.add('source-shown');
      setTimeout(() => target.classList.remove('source-shown'), 2000);
    };
    reveal();
  }, true);

  // Until the new question reaches the top of the chat (the scroll is clamped while its answer is short) or the
  // reader scrolls the chat themselves.
  let questions = 0, pinned = false;
  const scroller = (element) => {
    for (let node = element.parentElement; node; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowY;
      if ((overflow === 'auto' || overflow === 'scroll') && node.scrollHeight > node.clientHeight) return node;
    }
    return null;
  };
  const follow = () => {
    const asked = document.querySelectorAll('#chat [data-testid="user"]');
    if (asked.length > questions) pinned = true;
    questions = asked.length;
    const last = asked[asked.length - 1], box = last && scroller(last);
    if (!pinned || !box) return;
    const gap = () => last.getBoundingClientRect().top - box.getBoundingClientRect().top - 40;  // below the label
    box.scrollTop += gap();
    if (Math.abs(gap()) < 2) pinned = false;
  };
  for (const kind of ['wheel', 'touchmove', 'keydown']) {
    document.addEventListener(kind, (event) => {
      if (event.target.closest && event.target.closest('#chat')) pinned = false;
    }, {passive: true});
  }
  const start = () => {
    const chat = document.querySelector('#chat');
    if (!chat) { setTimeout(start, 200); return; }
    new MutationObserver(follow).observe(chat, {subtree: true, childList: true, characterData: true});
  };
  start();
}
"""

# Markdown punctuation, backslash-escaped in typed text so that it shows verbatim.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_CASE_BLOCK = re.compile(r"(?=\n- )|(?=\n\n)")  # boundaries between an answer's case blocks, kept in place


def as_text(value: str) -> str:
    """Typed text for a Markdown view (the chat): HTML escaped and Markdown neutralised, so it shows as typed."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(value, quote=False))


def chip(case_id: str) -> str:
    return f'<span class="cite-chip" title="cited case {html.escape(case_id)}">{html.escape(case_id)}</span>'


def answer_text(text: str) -> str:
    """Answer Markdown for the chat: HTML escaped, stray brackets neutralised, each [case-id] a chip."""
    pieces = MARKER.split(html.escape(text, quote=False))  # text, case id, text, case id, ..., text
    return "".join(chip(piece) if i % 2 else piece.replace("[", "\\[").replace("]", "\\]")
                   for i, piece in enumerate(pieces))


def describe_filters(filters: dict[str, str]) -> str:
    return ", ".join(f"{value} ({key})" for key, value in filters.items())


def answer_blocks(answer: Answer, filters: dict[str, str], turn: int) -> list[str]:
    """The chat message of turn `turn` (from 0) in pieces, in the order they are streamed: notes first, then
    one case block at a time (joined, the pieces are the whole message), its citations numbered."""
    notes = []
    if answer.understood_as:
        notes.append(f'<span class="answer-note">Understood as: {as_text(answer.understood_as)}</span>')
    if filters:
        notes.append(f'<span class="answer-note">{as_text("filtered to: " + describe_filters(filters))}</span>')
    body = [numbered_text(piece, answer, turn) for piece in _CASE_BLOCK.split(answer.answer) if piece] or [""]
    warnings = [f'\n\n<span class="answer-warning">{as_text(warning)}</span>' for warning in answer.warnings]
    if notes:
        body[0] = "\n\n".join(notes) + "\n\n" + body[0]
    return [*body[:-1], body[-1] + "".join(warnings)]


def highlight(text: str, stems: set[str]) -> str:
    """The passage as HTML with each word that shares a stem with the question marked."""
    words = list(_WORD.finditer(text))
    stems_of = tokenize([word.group() for word in words]) if words else []
    out, last = [], 0
    for word, word_stems in zip(words, stems_of):
        shown = html.escape(word.group())
        out += [html.escape(text[last:word.start()]), f"<mark>{shown}</mark>" if stems & set(word_stems) else shown]
        last = word.end()
    return "".join(out) + html.escape(text[last:])


def rejoin(first: str, second: str) -> str:
    """Two consecutive chunks of one section as one text, without the overlap the splitter repeated."""
    for size in range(min(len(first), len(second)), 7, -1):  # overlaps shorter than 8 characters are chance
        if first.endswith(second[:size]):
            return first + second[size:]
    return first + "\n\n" + second


def case_markdown(side: SideIndex, case_id: str) -> str:
    """A case's text put back together from its chunks in the index (the index keeps no other copy, and in
    server mode the files may live elsewhere): one block per section, split sections rejoined."""
    sections: dict[str, str] = {}
    for passage in side.case_passages(case_id):
        section, text = passage["section"], passage["text"]
        if section != SUMMARY_SECTION:
            sections[section] = rejoin(sections[section], text) if section in sections else text
    return "\n\n".join(text if section == PLAIN_SECTION else f"## {section}\n\n{text}"
                        for section, text in sections.items())


def case_html(case: Case, side: SideIndex | None = None) -> str:
    """A whole case for reading: its metadata, then its text (from the index, or the case's own body when it
    is not indexed yet) rendered from Markdown with any HTML as text."""
    facts = [("Subtype", case.subtype), ("Organs", ", ".join(case.organs)), ("Antibodies", ", ".join(case.antibodies)),
             ("Failed", ", ".join(case.failed_therapies)), ("Next", ", ".join(case.next_therapies)),
             ("Outcome", case.outcome), ("Evidence", case.evidence or ""), ("Source", case.source or case.path)]
    rows = "".join(f"<tr><th>{name}</th><td>{html.escape(value)}</td></tr>" for name, value in facts if value)
    return (f'<article class="case" data-case="{html.escape(case.id)}"><h3>{html.escape(case.title)}</h3>'
            f'<p>{chip(case.id)}</p><table class="case-facts">{rows}</table>'
            f"{markdown_html(case_markdown(side, case.id) if side else case.body)}</article>")


def sources_html(record: dict, number: int, side: SideIndex) -> str:
    """The sources panel for one answer: its own citations, their passages with the question's words marked,
    and each whole case one click away."""
    head = (f'<p class="sources-head"><strong>Sources of answer {number + 1}</strong>: '
            f"“{html.escape(record['question'])}”</p>")
    if record["filters"]:
        head += f'<p class="answer-note">filtered to: {html.escape(describe_filters(record["filters"]))}</p>'
    if record["answer"] is None:
        return f'<div class="sources">{head}<p>Not answered: {html.escape(record["error"])}</p></div>'
    answer = Answer.model_validate(record["answer"])
    if not answer.citations:
        return (f'<div class="sources">{head}<p>No case in the library supports an answer to this question, '
                "so nothing is cited.</p></div>")
    stems = set(record["highlight"])
    numbers = numbering(answer)
    sections = []
    for citation in sorted(answer.citations, key=lambda citation: numbers[citation.case_id]):
        passages = "".join(f'<blockquote class="passage">{highlight(p, stems)}</blockquote>' for p in citation.passages)
        case = side.cases.get(citation.case_id)
        whole = (f'<details class="whole-case"><summary>Open the whole case</summary>{case_html(case, side)}</details>'
                 if case else "")
        sections.append(
            f'<section class="source" id="{anchor(number, numbers[citation.case_id])}" '
            f'data-case="{html.escape(citation.case_id)}" tabindex="-1">'
            f'<h4><span class="source-number">[{numbers[citation.case_id]}]</span> {html.escape(citation.title)}</h4>'
            f'<p class="source-ref">{html.escape(citation.case_id)} · {html.escape(citation.source)} · '
            f"similarity {citation.score:.2f}</p>{passages}{whole}</section>")
    return f'<div class="sources">{head}{"".join(sections)}</div>'


def conversation_markdown(turns: list[dict]) -> str:
    """The conversation as a Markdown document: each answer with its own citations and passages."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# casebot conversation", "", f"Exported {stamp}.", ""]
    for number, record in enumerate(turns, start=1):
        lines += [f"## {number}. {record['question']}", ""]
        answer = record["answer"]
        if answer is None:
            lines += [f"_Not answered: {record['error']}_", ""]
            continue
        if answer.get("understood_as"):
            lines += [f"_Understood as: {answer['understood_as']}_", ""]
        if record["filters"]:
            lines += [f"_Filtered to: {describe_filters(record['filters'])}_", ""]
        lines += [answer["answer"], ""]
        if answer["citations"]:
            lines += ["### Sources", ""]
            for citation in answer["citations"]:
                lines.append(f"- **[{citation['case_id']}]** {citation['title']} ({citation['source']})")
                lines.extend(f"  > {passage}" for passage in citation["passages"])
            lines.append("")
    return "\n".join(lines)


def write_export(turns: list[dict], conversation_id: str) -> Path:
    """The export file of one conversation, rewritten after each answer so the download is always current."""
    folder = Path(tempfile.gettempdir()) / "casebot-exports" / conversation_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "casebot-conversation.md"
    path.write_text(conversation_markdown(turns), encoding="utf-8")
    return path


def turn_of(history: list[dict], message_index: int) -> int:
    """The turn (a question and its answer) that chat message `message_index` belongs to."""
    return sum(1 for message in history[: message_index + 1] if message["role"] == "user") - 1


def filter_choices(cases: list[Case]) -> dict[str, list[tuple[str, str]]]:
    """Each filter's values as found in the library, after an "any" choice meaning no filter."""
    values = {
        "organ": [organ for organ in ORGANS if any(organ in case.organs for case in cases)],
        "subtype": sorted({case.subtype for case in cases}),
        "therapy": sorted({therapy for case in cases for therapy in case.therapies}, key=str.lower),
        "outcome": sorted({case.outcome for case in cases}),
    }
    return {key: [("any", ""), *((value, value) for value in found)] for key, found in values.items()}


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def build(bot: CaseBot, ready: threading.Event | None = None) -> gr.Blocks:
    """The app over one bot; each browser session gets its own conversation id, history and citations.
    Questions wait for `ready` (set once the bot is warmed up; none: ready now)."""
    if ready is None:
        ready = threading.Event()
        ready.set()
    feedback = feedback_store(bot.settings)
    note = prompt(bot.settings.prompts_dir, "educational_note.md")
    choices = filter_choices(list(bot.retriever.cases.values()))
    workers = bot.settings.web_concurrency
    # Imported here, not at the top: the tabs' modules use this module's rendering helpers.
    from bot.ui_library import build_library_tab
    from bot.ui_pathways import build_pathways_tab
    from bot.ui_similar import build_similar_tab
    from bot.ui_teach import build_teach_tab

    with gr.Blocks(title="casebot: resistant SSc case review", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# casebot\nCase review for treatment-resistant systemic sclerosis. Answers come only from "
                    f"the case library, and every statement cites its case. {note}", elem_id="intro")
        conversation = gr.State(new_conversation_id, delete_callback=bot.forget)
        turns = gr.State([])  # one record per question, aligned with the chat's question/answer pairs
        shown = gr.State(None)  # the turn whose sources are on show, which a comment goes with

        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"):
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

            with gr.Tab("Case library", id="library-tab"):
                build_library_tab(bot)
            with gr.Tab("Pathways", id="pathways-tab"):
                build_pathways_tab(bot, demo)
            with gr.Tab("Patients like mine", id="similar-tab"):
                build_similar_tab(bot)
            with gr.Tab("Teach", id="teach-tab"):
                build_teach_tab(bot, demo)

        def respond(message: str, history: list[dict], records: list[dict], conversation_id: str, *values: str):
            """Streams the answer as it is composed: the question at once, a generating model's draft as it
            writes (plain text: its citations are not yet checked), then the answer one case block at a time."""
            if not message.strip():
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
            chosen = {key: value for key, value in zip(FILTER_KEYS, values) if value}
            history = [*history, {"role": "user", "content": as_text(message)},
                       {"role": "assistant", "content": SEARCHING}]
            yield history, gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
            if not ready.is_set():
                history[-1] = {"role": "assistant", "content": WARMING}
                yield history, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                ready.wait()
            record = {"id": uuid.uuid4().hex, "question": message, "filters": chosen, "answer": None}
            try:
                draft = ""
                for piece in bot.ask_stream(message, conversation_id, chosen or None):
                    if isinstance(piece, Answer):
                        answer = piece
                    else:
                        draft += piece
                        history[-1] = {"role": "assistant", "content": DRAFT + as_text(draft)}
                        yield history, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            except (QuestionError, FilterError) as error:  # shown in the chat; nothing else changes
                record["error"] = str(error)
                blocks = [f'<span class="answer-warning">{as_text(str(error))}</span>']
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
            yield (history, records, number, sources_html(record, number, bot.retriever.side), gr.skip(),
                   gr.DownloadButton(value=write_export(records, conversation_id), interactive=True))

        question.submit(respond, [question, chatbot, turns, conversation, *filters],
                        [chatbot, turns, shown, sources, question, export],
                        api_visibility="private", concurrency_id="answers", concurrency_limit=workers)

        def show_selected(history: list[dict], records: list[dict], selected: gr.SelectData):
            number = turn_of(history, selected.index)
            if not 0 <= number < len(records):
                return gr.skip(), gr.skip()
            return sources_html(records[number], number, bot.retriever.side), number

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
            bot.forget(conversation_id)
            return ([], [], None, NO_SOURCES, gr.DownloadButton(value=None, interactive=False), "",
                    new_conversation_id())

        reset_outputs = [chatbot, turns, shown, sources, export, feedback_status, conversation]
        clear.click(restart, conversation, reset_outputs, api_visibility="private")
        chatbot.clear(restart, conversation, reset_outputs, api_visibility="private")

        def current_filters():
            """Each page load offers the filter values of the library as it is now (cases may have been added)."""
            now = filter_choices(list(bot.retriever.refresh().cases.values()))
            return [gr.Dropdown(choices=now[key]) for key in FILTER_KEYS]

        demo.load(current_filters, None, filters, api_visibility="private")

        def ask(question: str, conversation_id: str | None = None, request: gr.Request | None = None) -> dict:
            """The answer object of SPEC section 4 for `question` within conversation `conversation_id`; without
            one, the caller's own session's conversation (each client has its own session), never a shared one."""
            session = request.session_hash if request and request.session_hash else new_conversation_id()
            name = f"api:{conversation_id}" if conversation_id else f"api-session:{session}"
            ready.wait()
            try:
                answer = bot.ask(question, name)
            except QuestionError as error:
                raise gr.Error(str(error)) from error
            feedback.record(name, answer)
            return answer.model_dump()

        gr.api(ask, api_name="ask", concurrency_id="answers", concurrency_limit=workers)
    return demo


def warm_up(bot: CaseBot) -> None:
    """One search: it loads the embedding model and reads the index, which made the first question after a
    restart wait ~9-11 s while the later ones took under a second. Gradio imports pandas when it finishes
    its first event (for its event statistics): another 0.5 s of the first answer, imported here instead."""
    bot.retriever.search(EXAMPLES[0])
    importlib.import_module("pandas")


def serve(settings: Settings) -> None:
    """Serves the app on settings.host (127.0.0.1 unless told otherwise), never through a share link. The page
    is served at once while the bot warms up; a question asked meanwhile waits for it, so that no question
    loads the model itself (nor a second copy beside the warm-up's)."""
    credentials = settings.credentials
    bot = CaseBot(settings)
    ready = threading.Event()
    demo = build(bot, ready)
    demo.launch(server_name=settings.host, server_port=settings.port, share=False, auth=credentials,
                auth_message="casebot: log in with the account your department set up.",
                theme=gr.themes.Default(font=SANS, font_mono=MONO), css=STYLE, js=SCRIPT, prevent_thread_lock=True,
                app_kwargs={"routes": CaseBotApi(bot, ready).routes()})  # the HTTP API, with its own key
    try:
        warm_up(bot)
    finally:
        ready.set()  # nothing is left waiting; the error ends the process (the server thread is a daemon)
    demo.block_thread()
