"""Numbered citations for the web chat: [1], [2] in an answer's text and tables, as papers and clinical answer
engines number their sources.

The answer object keeps its [case-id] markers (the contract the CLI, the API, the export and the evaluation
read); only the web app maps them (the chat, the Pathways and Teach tabs), because full case ids broke pathway
tables apart on a ward laptop and overflowed the bubbles on a phone. Each number carries its case's title
(shown on hover and on keyboard focus) and links to that case in the sources panel (or the tab's list of
cases), where the same number heads it."""

from __future__ import annotations

import html
from collections.abc import Callable

from bot.answer import MARKER, Answer, cited_ids


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
                   else piece.replace("[", "\\[").replace("]", "\\]") for i, piece in enumerate(pieces))


def numbered_text(text: str, answer: Answer, turn: int) -> str:
    """`text`, a piece of the answer of turn `turn`, as chat Markdown, each [case-id] its number leading to its
    case in the sources panel."""
    titles = {citation.case_id: citation.title for citation in answer.citations}
    return marked_text(text, numbering(answer), titles, lambda number: anchor(turn, number))
