"""What the web app's tabs share (bot/web/): typed text and answers made safe for Markdown, numbered citations,
a case as HTML, the chat's sources panel and the Markdown list of the sources (which the export and the HTTP
API's chat replies also use), the library's filter values.

Numbered citations: [1], [2] in an answer's text and tables, as papers and clinical answer engines number their
sources. The answer object keeps its [case-id] markers (the contract the CLI, the API, the export and the
evaluation read); only the web app maps them (the chat, the Pathways and Teach tabs), because full case ids
broke pathway tables apart on a ward laptop and overflowed the bubbles on a phone. Each number carries its
case's title (shown on hover and on keyboard focus) and links to that case in the sources panel (or the tab's
list of cases), where the same number heads it.

Everything typed by a user or read from a case file is escaped before it reaches a Markdown or HTML view: the
only markup on the page is our own. Nothing here imports Gradio, so the HTTP API can use it too."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable

from bot.answer import MARKER, Answer, Citation, cited_ids
from bot.cases import ORGANS, Case
from bot.chunking import PLAIN_SECTION, SUMMARY_SECTION
from bot.index import SideIndex
from bot.teaching import markdown_html
from bot.text import tokenize

# Markdown punctuation, backslash-escaped in typed text so that it shows verbatim (":", "/" and "@" too: the
# chat's Markdown makes a live link of any bare web or e-mail address).
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:/@])")
# What the chat's Markdown turns into a link by itself in answer text (the scheme's "//", "www.", an e-mail's "@").
_AUTOLINK = re.compile(r"(?<=:)//|(?<=\bwww)\.|@", re.IGNORECASE)
# What makes a link of case Markdown: [text](url), and <url> autolinks.
_LINK_SYNTAX = re.compile(r"([\[\]<])")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_CASE_BLOCK = re.compile(r"(?=\n- )|(?=\n\n)")  # boundaries between an answer's case blocks, kept in place


def as_text(value: str) -> str:
    """Typed text for a Markdown view (the chat): HTML escaped and Markdown neutralised, so it shows as typed."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(value, quote=False))


def unlinked(text: str) -> str:
    """Markdown text in which no web or e-mail address becomes a link: a case quoting "see https://..." must not
    put a live link to a site nobody vetted in an answer. The address still shows as written."""
    return _AUTOLINK.sub(lambda found: "".join("\\" + character for character in found.group()), text)


def chip(case_id: str) -> str:
    return f'<span class="cite-chip" title="cited case {html.escape(case_id)}">{html.escape(case_id)}</span>'


def answer_text(text: str) -> str:
    """Answer Markdown for the chat: HTML escaped, stray brackets neutralised, each [case-id] a chip."""
    pieces = MARKER.split(html.escape(text, quote=False))  # text, case id, text, case id, ..., text
    return "".join(chip(piece) if i % 2 else unlinked(piece.replace("[", "\\[").replace("]", "\\]"))
                   for i, piece in enumerate(pieces))


def numbering(answer: Answer) -> dict[str, int]:
    """Each cited case's number, from 1 in the order the text first cites it; a citation the text never
    marks (none, normally) follows, so the panel and the text never disagree."""
    order = dict.fromkeys([*cited_ids(answer.answer), *(citation.case_id for citation in answer.citations)])
    return {case_id: number for number, case_id in enumerate(order, start=1)}


def anchor(turn: int, number: int) -> str:
    """The id of source `number` of answer `turn` (from 0) in the sources panel: unique across a conversation,
    so a number clicked in an earlier answer finds its own case once that answer's sources are shown."""
    return f"source-{turn + 1}-{number}"


def cite_link(number: int, title: str, target: str) -> str:
    """One citation as a link to element `target` of the page, titled with its case (the chat's sanitiser
    keeps href, class and title, and drops data attributes); the brackets are entities, so Markdown leaves
    them as text."""
    return (f'<a class="cite-chip cite-num" href="#{html.escape(target)}" title="{html.escape(title)}">'
            f"&#91;{number}&#93;</a>")


def marked_text(text: str, numbers: dict[str, int], titles: dict[str, str], target: Callable[[int], str]) -> str:
    """`text` with its [case-id] markers as numbered links (HTML escaped, stray brackets neutralised for
    Markdown): case `numbers`, `titles` on hover, each number leading to element `target(number)`."""
    pieces = MARKER.split(html.escape(text, quote=False))  # text, case id, text, case id, ..., text
    return "".join(cite_link(numbers[piece], titles.get(piece, piece), target(numbers[piece])) if i % 2
                   else unlinked(piece.replace("[", "\\[").replace("]", "\\]")) for i, piece in enumerate(pieces))


def numbered_text(text: str, answer: Answer, turn: int) -> str:
    """`text`, a piece of the answer of turn `turn`, as chat Markdown, each [case-id] its number leading to its
    case in the sources panel."""
    titles = {citation.case_id: citation.title for citation in answer.citations}
    return marked_text(text, numbering(answer), titles, lambda number: anchor(turn, number))

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
    is not indexed yet) rendered from Markdown with any HTML and any link as text."""
    facts = [("Subtype", case.subtype), ("Organs", ", ".join(case.organs)), ("Antibodies", ", ".join(case.antibodies)),
             ("Failed", ", ".join(case.failed_therapies)), ("Next", ", ".join(case.next_therapies)),
             ("Outcome", case.outcome), ("Evidence", case.evidence or ""), ("Source", case.source or case.path)]
    rows = "".join(f"<tr><th>{name}</th><td>{html.escape(value)}</td></tr>" for name, value in facts if value)
    text = _LINK_SYNTAX.sub(r"\\\1", case_markdown(side, case.id) if side else case.body)
    return (f'<article class="case" data-case="{html.escape(case.id)}"><h3>{html.escape(case.title)}</h3>'
            f'<p>{chip(case.id)}</p><table class="case-facts">{rows}</table>{markdown_html(text)}</article>')


def sources_html(record: dict, number: int, side: SideIndex | None) -> str:
    """The sources panel for one answer: its own citations, their passages with the question's words marked,
    and each whole case one click away (from `side`, which a question not answered does not need)."""
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
        case = side.cases.get(citation.case_id) if side else None
        whole = (f'<details class="whole-case"><summary>Open the whole case</summary>{case_html(case, side)}</details>'
                 if case else "")
        sections.append(
            f'<section class="source" id="{anchor(number, numbers[citation.case_id])}" '
            f'data-case="{html.escape(citation.case_id)}" tabindex="-1">'
            f'<h4><span class="source-number">[{numbers[citation.case_id]}]</span> {html.escape(citation.title)}</h4>'
            f'<p class="source-ref">{html.escape(citation.case_id)} · {html.escape(citation.source)} · '
            f"similarity {citation.score:.2f}</p>{passages}{whole}</section>")
    return f'<div class="sources">{head}{"".join(sections)}</div>'


def sources_markdown(citations: list[Citation]) -> list[str]:
    """The cited cases as a Markdown list, each with its source and the passages behind it: the exported
    conversation and the HTTP API's chat replies (the heading above it is the caller's)."""
    lines = []
    for citation in citations:
        lines.append(f"- **[{citation.case_id}]** {citation.title} ({citation.source})")
        lines.extend(f"  > {passage}" for passage in citation.passages)
    return lines


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
