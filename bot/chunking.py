"""Cases -> chunks: one chunk per section (split further only when long), the heading kept with its text."""

from __future__ import annotations

import json

from langchain_core.documents import Document
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from bot.cases import Case

CHUNKER_VERSION = "sections-v1"
PLAIN_SECTION = "Text"
SUMMARY_SECTION = "Summary"


def chunker_signature(chunk_size: int, chunk_overlap: int) -> str:
    """Recorded in the index so that chunks made with other settings are never mixed in."""
    return f"{CHUNKER_VERSION}:{chunk_size}:{chunk_overlap}"


def case_metadata(case: Case) -> dict:
    """The case-level fields every chunk carries, so the case table can be rebuilt from the index alone."""
    return case.model_dump(exclude={"body"})


def chunk_case(case: Case, chunk_size: int, chunk_overlap: int) -> list[Document]:
    sections = MarkdownHeaderTextSplitter([("##", "section")], strip_headers=True).split_text(case.body)
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    pieces: list[tuple[str, str]] = []
    summary = _summary_text(case)
    if summary:
        pieces.append((SUMMARY_SECTION, summary))
    for section in sections:
        heading = section.metadata.get("section", PLAIN_SECTION)
        text = section.page_content.strip()
        if heading == PLAIN_SECTION or "section" not in section.metadata:
            text = text.lstrip("#").strip() if text.startswith("# ") else text
        for piece in splitter.split_text(text):
            pieces.append((heading, piece))
    meta = json.dumps(case_metadata(case))
    return [
        Document(
            id=f"{case.id}:{index:03d}",
            page_content=f"{case.title}\n## {heading}\n{text}",
            metadata={
                "case_id": case.id,
                "section": heading,
                "text": text,
                "chunk_index": index,
                "n_chunks": len(pieces),
                "content_hash": case.content_hash,
                # the case's front matter once, on its first chunk: ~70% of a chunk's metadata otherwise
                **({"case": meta} if index == 0 else {}),
            },
        )
        for index, (heading, text) in enumerate(pieces)
    ]


def _summary_text(case: Case) -> str:
    """A searchable line from the front matter; empty for plain files, which have no metadata."""
    fields = [
        ("Subtype", [case.subtype] if case.subtype != "unknown" else []),
        ("Organs", case.organs),
        ("Antibodies", case.antibodies),
        ("Failed therapies", case.failed_therapies),
        ("Next therapies", case.next_therapies),
        ("Outcome", [case.outcome] if case.outcome != "unknown" else []),
    ]
    return ". ".join(f"{name}: {', '.join(values)}" for name, values in fields if values)
