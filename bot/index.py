"""Cases -> index: chunks embedded into Chroma, plus a BM25 side index and case table derived from it.

Chroma is the source of truth. The side index (BM25, chunk table, vectors, case table) is a cache stamped with
the collection's version; whoever finds the stamp changed rebuilds it from the collection, so several
processes (or replicas against one Chroma server) always answer from the same data.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import bm25s
import chromadb
import httpx
import numpy as np
from chromadb.config import Settings as ChromaSettings
from langchain_core.documents import Document
from tqdm import tqdm

from bot.audit import contradictions, has_front_matter, stuffed, stuffing
from bot.cases import Case, Rejection, load_cases, same_file, shown
from bot.chunking import chunk_case, chunker_signature
from bot.claims import CLAIMS, ClaimReader
from bot.embedding import DIMENSIONS, MiniLMEmbeddings, model_name
from bot.identifiers import scan_case
from bot.lexicon import Lexicon
from bot.settings import Settings
from bot.text import TOKENIZER_VERSION, tokenize

# Chunks per call to the model: it sorts a call's texts by length and pads each batch to its longest, so
# larger calls pad less (on this CPU, calls of 256 chunks ran ~10% slower than one call of 3,072).
EMBED_SLICE = 1024
# Followed case by case (the web app's first start), calls are smaller so that its progress bar moves: ~10% slower.
PROGRESS_SLICE = 128
# The collection's version stamp while an ingest is writing: readers keep what they have until it is done.
INGESTING = "ingesting-"
# How long a question waits for an ingest holding the lock to write the side index of the version it stamped (a
# library of 70,000 chunks takes under a minute), and how often it looks.
INGEST_WAIT_S = 120
INGEST_POLL_S = 0.2


class IndexMismatch(RuntimeError):
    """The index was built with another embedding model or chunking; mixing them would corrupt results."""


class IndexWriteError(RuntimeError):
    """The side index could not be written (a full disk, a read-only folder); the message names the folder."""


class IndexUnavailable(ValueError):
    """The Chroma server holding the index cannot be reached (stopped, restarting): this question is not answered,
    the next one tries again. A ValueError, as every problem the command line shows its user as a message is."""


class ServedCollection:
    """The Chroma collection, whose calls to a server that cannot be reached raise IndexUnavailable (naming it)
    rather than the HTTP client's transport errors: the one place the index talks to the server through."""

    def __init__(self, collection, location: str):
        self._collection, self._location = collection, location

    def __getattr__(self, name: str):
        value = getattr(self._collection, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            with reaching(self._location):
                return value(*args, **kwargs)

        return call


@contextmanager
def reaching(location: str) -> Iterator[None]:
    """Transport errors of the Chroma client (connection refused, the server gone mid-request) as IndexUnavailable."""
    try:
        yield
    except httpx.TransportError as error:
        raise IndexUnavailable(f"the case index at {location} is not reachable; try again shortly") from error


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list)  # "path: line N: possible <kind> '<text>'"
    stuffing: list[str] = field(default_factory=list)  # "path: keyword stuffing: ..." (bot/audit.py)
    chunks_embedded: int = 0
    completed: bool = False  # an earlier ingest had been cut short (killed, disk full) and this one finished it

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "updated": len(self.updated), "unchanged": len(self.unchanged),
                "removed": len(self.removed), "rejected": len(self.rejected)}


def chroma_client(settings: Settings):
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        from urllib.parse import urlparse

        url = urlparse(settings.chroma_url)
        base = f"{url.scheme or 'http'}://{url.hostname or '127.0.0.1'}:{url.port or 8000}"
        # chromadb's HTTP session never times out, not even for its first heartbeat: a server that accepts and then
        # hangs would hold the start (and later each question, and a web worker) for ever. So the server is asked
        # first with a timeout here, and the session is given one after; a read that takes longer than
        # chroma_timeout raises httpx.ReadTimeout, which `reaching` turns into IndexUnavailable.
        try:
            httpx.get(f"{base}/api/v2/heartbeat", timeout=settings.chroma_timeout).raise_for_status()
            client = chromadb.HttpClient(host=url.hostname or "127.0.0.1", port=url.port or 8000,
                                         ssl=url.scheme == "https", settings=chroma_settings)
        except (httpx.HTTPError, ValueError) as error:  # chromadb's own failure names no address
            raise IndexUnavailable(f"the Chroma server at {settings.chroma_url} (CASEBOT_CHROMA_URL) could not be "
                                   f"reached ({type(error).__name__}: {error}); start it (`chroma run`) or correct "
                                   "the address") from error
        session = getattr(getattr(client, "_server", None), "_session", None)
        if isinstance(session, httpx.Client):
            session.timeout = httpx.Timeout(settings.chroma_timeout)
        return client
    settings.db.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(settings.db), settings=chroma_settings)


class CaseIndex:
    """The Chroma collection of case chunks, its manifest and its side index."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.manifest = {"embedding_model": model_name(),
                         "chunker": chunker_signature(settings.chunk_size, settings.chunk_overlap)}
        with reaching(self.location):
            self.client = chroma_client(settings)
            self.collection = ServedCollection(self.client.get_or_create_collection(
                settings.collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
                metadata={**self.manifest, "version": "empty"}), self.location)
        self._check_manifest()

    @property
    def location(self) -> str:
        return self.settings.chroma_url or str(self.settings.db)

    def _check_manifest(self) -> None:
        stored = self.collection.metadata or {}
        for key, wanted in self.manifest.items():
            if stored.get(key) != wanted:
                raise IndexMismatch(
                    f"the index at {self.location} was built with {key} {stored.get(key)!r}, but these settings "
                    f"use {wanted!r}; rebuild it with `casebot ingest --reset` or choose another --db")

    @property
    def cache_dir(self) -> Path:
        """Where the side index lives: inside the embedded database, or a local folder per server."""
        if self.settings.chroma_url:
            key = hashlib.sha256(f"{self.settings.chroma_url}/{self.settings.collection}".encode()).hexdigest()[:12]
            return self.settings.db.parent / f"server-cache-{key}"
        return self.settings.db / "casebot-side-index"

    def version(self) -> str:
        """The collection's version stamp, read afresh (every question looks whether the library changed)."""
        with reaching(self.location):
            return str(self.client.get_collection(self.settings.collection, embedding_function=None)
                       .metadata.get("version", "empty"))

    def _stamp(self, version: str) -> None:
        self.collection.modify(metadata={**self.manifest, "version": version})

    def _settled(self) -> bool:
        """Whether the last ingest finished: the collection carries a final stamp and the side index was built
        for it. An ingest killed (or out of disk space) after its last write leaves one of them behind."""
        version = self.version()
        try:
            side = (self.cache_dir / "version").read_text()
        except OSError:
            return False
        return not version.startswith(INGESTING) and side == f"{version}:{TOKENIZER_VERSION}"

    @cached_property
    def max_batch(self) -> int:
        """Most records one Chroma call may carry (5,461 for the embedded SQLite store; a server says its own)."""
        with reaching(self.location):
            return self.client.get_max_batch_size()

    def count(self) -> int:
        return self.collection.count()

    @classmethod
    def reset(cls, settings: Settings) -> CaseIndex:
        """An empty index in place of whatever was there, whatever model or chunking built it."""
        client = chroma_client(settings)
        if settings.collection in [c.name for c in client.list_collections()]:
            client.delete_collection(settings.collection)
        index = cls(settings)
        shutil.rmtree(index.cache_dir, ignore_errors=True)
        return index

    @property
    def lock_file(self) -> Path:
        return self.cache_dir.parent / f".{self.cache_dir.name}.lock"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One ingest at a time per index: a second one waits, and says so."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"another ingest is running on {self.location}; waiting for it to finish", file=sys.stderr)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ingesting(self) -> bool:
        """Whether an ingest (of this process or another) holds the index's lock now."""
        try:
            handle = open(self.lock_file)
        except OSError:  # never ingested from this machine
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def _stored(self) -> dict[str, dict]:
        """Per stored case: its content hash (None if its chunks disagree or are incomplete), path, chunk ids."""
        got = self.collection.get(include=["metadatas"])
        cases: dict[str, dict] = defaultdict(lambda: {"ids": [], "hashes": set(), "n": set(), "path": ""})
        for chunk_id, meta in zip(got["ids"], got["metadatas"]):
            entry = cases[meta["case_id"]]
            entry["ids"].append(chunk_id)
            entry["hashes"].add(meta["content_hash"])
            entry["n"].add(meta["n_chunks"])
            if "case" in meta:
                entry["path"] = json.loads(meta["case"])["path"]
        for entry in cases.values():
            complete = len(entry["hashes"]) == 1 and entry["n"] == {len(entry["ids"])}
            entry["hash"] = next(iter(entry["hashes"])) if complete else None
        return dict(cases)

    def ingest(self, sources: list[Path], lexicon: Lexicon, progress: bool | None = None,
               strict: bool = False, prune: bool = True,
               on_case: Callable[[int, int], None] | None = None) -> IngestReport:
        """Bring the index in line with the case files under `sources`, embedding only what changed.

        Likely patient identifiers are reported with file and line; with `strict` their files are refused, and
        so are files whose front matter their own text contradicts (bot/audit.py, as `casebot check` finds).
        Without `prune`, cases indexed from elsewhere are kept (adding one file must not remove the rest).
        `on_case(done, total)` follows the embedding case by case (the web app's progress bar)."""
        with self.lock():
            progress = sys.stderr.isatty() if progress is None else progress
            return self._ingest(sources, lexicon, progress, strict, prune, on_case)

    def _ingest(self, sources: list[Path], lexicon: Lexicon, progress: bool, strict: bool,
                prune: bool, on_case: Callable[[int, int], None] | None) -> IngestReport:
        stored = self._stored()
        cases, rejections = load_cases(sources, lexicon, self.settings.max_case_chars,
                                       owners={cid: entry["path"] for cid, entry in stored.items()})
        report = IngestReport(rejected=rejections)
        cases = self._keep_owners(cases, stored, report, prune, sources)
        cases = self._screen_identifiers(cases, report, strict)
        if strict:
            cases = self._screen_contradictions(cases, report, ClaimReader.load(CLAIMS, lexicon))
        to_embed: list[Case] = []
        for case in cases:
            previous = stored.get(case.id)
            if previous is None:
                report.added.append(case.id)
                to_embed.append(case)
            elif previous["hash"] != case.content_hash:
                report.updated.append(case.id)
                to_embed.append(case)
            else:
                report.unchanged.append(case.id)
        report.stuffing = [f"{shown(case.path)}: {problem}" for case in to_embed if (problem := stuffing(case.body))]
        current = {case.id for case in cases}
        kept_paths = {str(r.path) for r in rejections}  # a file that became invalid keeps its last good chunks
        report.removed = sorted(cid for cid, entry in stored.items()
                                if prune and cid not in current and entry["path"] not in kept_paths)
        if not (to_embed or report.removed):
            if self._settled():
                return report
            report.completed = True
        self._stamp(f"{INGESTING}{uuid.uuid4().hex}")
        stale = [chunk for cid in [*report.removed, *(c.id for c in to_embed if c.id in stored)]
                 for chunk in stored[cid]["ids"]]
        for start in range(0, len(stale), self.max_batch):
            self.collection.delete(ids=stale[start : start + self.max_batch])
        report.chunks_embedded = self._embed_and_store(to_embed, progress, on_case)
        self._stamp(uuid.uuid4().hex)
        SideIndex.rebuild(self)
        return report

    @staticmethod
    def _keep_owners(cases: list[Case], stored: dict[str, dict], report: IngestReport, prune: bool,
                     sources: list[Path]) -> list[Case]:
        """A case already indexed keeps its id: a file from elsewhere claiming it is rejected by name. It may take
        the id over only as the same case renamed or moved, when a full ingest finds the old file gone or outside
        the folders it reads (that ingest removes the old one: rejecting both would leave neither)."""
        roots = [Path(source).resolve() for source in sources]

        def read_now(owner: str) -> bool:
            path = Path(owner).resolve()
            return path.exists() and any(path == root or root in path.parents for root in roots)

        kept = []
        for case in cases:
            owner = stored.get(case.id, {}).get("path")
            if owner and not same_file(owner, case.path) and (not prune or read_now(owner)):
                report.rejected.append(Rejection(Path(case.path), f"duplicate id {case.id!r}, already used by "
                                                                  f"{shown(owner)} (in the index)"))
            else:
                kept.append(case)
        return kept

    @staticmethod
    def _screen_identifiers(cases: list[Case], report: IngestReport, strict: bool) -> list[Case]:
        kept = []
        for case in cases:
            path = Path(case.path)
            findings = scan_case(case)
            report.identifiers.extend(f"{shown(path)}: {finding}" for finding in findings)
            if strict and findings:
                report.rejected.append(Rejection(path, "possible patient identifiers (--strict): "
                                                       + "; ".join(str(f) for f in findings)))
            else:
                kept.append(case)
        return kept

    @staticmethod
    def _screen_contradictions(cases: list[Case], report: IngestReport, reader: ClaimReader) -> list[Case]:
        """`--strict`: a case whose own text contradicts its front matter is refused, naming field and sentence."""
        kept = []
        for case in cases:
            found = contradictions(case, reader) if has_front_matter(case) else []
            if found:
                report.rejected.append(Rejection(Path(case.path), "its text contradicts its front matter (--strict): "
                                                 + "; ".join(str(f).removeprefix(f"{f.path}: ") for f in found)))
            else:
                kept.append(case)
        return kept

    def _embed_and_store(self, cases: list[Case], progress: bool, on_case: Callable[[int, int], None] | None) -> int:
        """Chunk, embed and store a slice at a time, so memory holds one slice of chunks, not the library.

        Storing runs in line: Chroma's insert holds the interpreter lock and the model keeps both cores busy, so
        storing on a second thread slowed embedding more than it saved (7,000 chunks: 74 against 84 chunks/s)."""
        embedder = MiniLMEmbeddings()
        bar = tqdm(total=len(cases), unit="case", desc="embedding", disable=not progress or not cases)
        pending: list[Document] = []
        stored = 0

        def flush() -> None:
            """Embeds and stores what is pending, in calls within both the model's slice and Chroma's batch limit
            (one long case alone can pass the limit)."""
            nonlocal stored
            step = min(EMBED_SLICE, self.max_batch)
            for start in range(0, len(pending), step):
                part = pending[start : start + step]
                self.collection.upsert(ids=[doc.id for doc in part],
                                       embeddings=embedder.embed_array([doc.page_content for doc in part]),
                                       documents=[doc.page_content for doc in part],
                                       metadatas=[doc.metadata for doc in part])
                stored += len(part)
            pending.clear()

        size = EMBED_SLICE if on_case is None else PROGRESS_SLICE
        if on_case:
            on_case(0, len(cases))
        for done, case in enumerate(cases, start=1):
            pending.extend(chunk_case(case, self.settings.chunk_size, self.settings.chunk_overlap))
            if len(pending) >= size:
                flush()
                if on_case:
                    on_case(done, len(cases))  # every case so far is stored
            bar.update(1)
            bar.set_postfix(chunks=stored + len(pending))
        if pending:
            flush()
        if on_case:
            on_case(len(cases), len(cases))
        bar.close()
        return stored

    def all_chunks(self) -> Iterator[tuple[str, str, dict, np.ndarray]]:
        """Every chunk: id, text, metadata and stored vector, a page at a time."""
        total = self.count()
        for offset in range(0, total, 5000):
            got = self.collection.get(include=["documents", "metadatas", "embeddings"], limit=5000, offset=offset)
            yield from zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])


@dataclass
class SideIndex:
    """BM25 over the chunks, the chunk table, their vectors and the case table, all derived from the collection.

    The vectors (row-aligned with chunk_ids, memory-mapped) serve filtered and by-case similarity: a filtered
    nearest-neighbour query in Chroma scans metadata and slows with the library (~90 ms at 70,000 chunks),
    a dot product over the allowed rows does not (~7 ms at worst)."""

    version: str
    chunk_ids: list[str]
    chunk_case: list[str]
    chunk_meta: list[dict]
    cases: dict[str, Case]
    bm25: bm25s.BM25
    vectors: np.ndarray
    doc_freq: dict[str, int]
    case_tokens: dict[str, set[str]]
    stuffed_cases: set[str]  # cases whose text is keyword stuffing (bot/audit.py): their words count for nothing
    _by_failed: dict[str, list[Case]] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {chunk_id: row for row, chunk_id in enumerate(self.chunk_ids)}

    @cached_property
    def vocabulary_by_prefix(self) -> dict[str, list[str]]:
        """Library words by their first two letters, for spelling correction."""
        groups: dict[str, list[str]] = defaultdict(list)
        for token in self.doc_freq:
            groups[token[:2]].append(token)
        return dict(groups)

    @cached_property
    def rows_of_case(self) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = defaultdict(list)
        for row, case_id in enumerate(self.chunk_case):
            rows[case_id].append(row)
        return dict(rows)

    @cached_property
    def facets(self) -> dict[str, dict[str, set[str]]]:
        """Case ids by organ, subtype, outcome and therapy (lower case), so a filter is a set lookup."""
        found: dict[str, dict[str, set[str]]] = {key: defaultdict(set) for key in
                                                 ("organ", "subtype", "outcome", "therapy")}
        for case in self.cases.values():
            for organ in case.organs:
                found["organ"][organ].add(case.id)
            for therapy in case.therapies:
                found["therapy"][therapy.lower()].add(case.id)
            found["subtype"][case.subtype].add(case.id)
            found["outcome"][case.outcome].add(case.id)
        return {key: dict(values) for key, values in found.items()}

    def cases_by_failed(self, lexicon: Lexicon) -> dict[str, list[Case]]:
        """Cases by each therapy they record as failed (lexicon names), worked out once per side index so that
        a pathway question does not walk the whole library."""
        if self._by_failed is None:
            found: dict[str, list[Case]] = defaultdict(list)
            for case in sorted(self.cases.values(), key=lambda c: c.id):
                for name in dict.fromkeys(lexicon.canonical("therapies", t) or t for t in case.failed_therapies):
                    found[name].append(case)
            self._by_failed = dict(found)
        return self._by_failed

    def rows_of(self, case_ids: set[str]) -> np.ndarray:
        """The chunk rows of these cases, in row order."""
        return np.fromiter(sorted(row for cid in case_ids for row in self.rows_of_case.get(cid, [])), dtype=np.int64)

    def case_passages(self, case_id: str) -> list[dict]:
        """Every chunk's metadata for one case, in document order."""
        return [self.chunk_meta[row] for row in self.rows_of_case.get(case_id, [])]

    @classmethod
    def rebuild(cls, index: CaseIndex) -> SideIndex:
        version = index.version()
        rows = sorted(index.all_chunks(), key=lambda row: row[0])
        folder = index.cache_dir
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Its own temporary folder: two processes (or threads) may rebuild the same version at once.
        tokens = tokenize([row[1] for row in rows]) if rows else []
        retriever = bm25s.BM25()
        if rows:
            retriever.index(tokens, show_progress=False)
        table = {"ids": [r[0] for r in rows], "metas": [r[2] for r in rows], "tokens": tokens}
        vectors = np.asarray([r[3] for r in rows], dtype=np.float32) if rows else np.zeros((0, DIMENSIONS), np.float32)
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f"{folder.name}.tmp-"))
            if rows:
                retriever.save(tmp / "bm25", show_progress=False)
            (tmp / "chunks.json").write_text(json.dumps(table))
            np.save(tmp / "vectors.npy", vectors)
            (tmp / "version").write_text(f"{version}:{TOKENIZER_VERSION}")
        except OSError as error:  # a full disk: no half-written copy is left, the previous one stays
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise IndexWriteError(f"cannot write the side index in {folder.parent} "
                                  f"({error.strerror or error}); free space there and run `casebot ingest` "
                                  "again to complete the index") from error
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:  # another rebuild put its copy there first
            shutil.rmtree(tmp, ignore_errors=True)
        return cls._from_table(version, table, retriever, vectors)

    @classmethod
    def load(cls, index: CaseIndex) -> SideIndex:
        """The cached side index if it matches the collection's version stamp, else a fresh one. While an ingest
        holds the index's lock it is about to write that copy itself, and is waited for (at most INGEST_WAIT_S):
        a rebuild here at the same time, in another process, read chunks that process's Chroma did not hold yet
        and failed the question ("Error finding id")."""
        version = index.version()
        deadline = time.monotonic() + INGEST_WAIT_S
        while (side := cls._cached(index.cache_dir, version)) is None and index.ingesting():
            if time.monotonic() > deadline:
                break
            time.sleep(INGEST_POLL_S)
        return side or cls.rebuild(index)

    @classmethod
    def _cached(cls, folder: Path, version: str) -> SideIndex | None:
        """The copy in `folder` if it was written for `version` (and is whole), else None."""
        try:
            if (folder / "version").read_text() == f"{version}:{TOKENIZER_VERSION}":
                table = json.loads((folder / "chunks.json").read_text())
                retriever = bm25s.BM25.load(folder / "bm25", show_progress=False) if table["ids"] else bm25s.BM25()
                vectors = np.load(folder / "vectors.npy", mmap_mode="r")
                return cls._from_table(version, table, retriever, vectors)
        except (OSError, ValueError, KeyError):
            pass
        return None

    @classmethod
    def _from_table(cls, version: str, table: dict, retriever: bm25s.BM25, vectors: np.ndarray) -> SideIndex:
        """The tables behind retrieval. A stuffed case's words stay out of the word statistics, so its repeating
        the whole vocabulary neither makes the library "hold" a word (the gate refuses what no case mentions) nor
        covers a question; `Retriever._bm25` leaves its chunks out too. It is still listed and its chunks stored."""
        cases: dict[str, Case] = {}
        words: dict[str, list[str]] = defaultdict(list)
        for meta, tokens in zip(table["metas"], table["tokens"]):
            if "case" in meta:
                cases[meta["case_id"]] = Case(**json.loads(meta["case"]), body="")
            words[meta["case_id"]].extend(tokens)
        stuffed_cases = {case_id for case_id, tokens in words.items() if stuffed(tokens)}
        doc_freq: dict[str, int] = defaultdict(int)
        case_tokens: dict[str, set[str]] = defaultdict(set)
        for meta, tokens in zip(table["metas"], table["tokens"]):
            if meta["case_id"] in stuffed_cases:
                continue
            case_tokens[meta["case_id"]].update(tokens)
            for token in set(tokens):
                doc_freq[token] += 1
        return cls(version, table["ids"], [m["case_id"] for m in table["metas"]], table["metas"], cases,
                   retriever, vectors, dict(doc_freq), dict(case_tokens), stuffed_cases)


def ensure_index(settings: Settings, lexicon: Lexicon, log: Callable[[str], None] = print,
                 on_case: Callable[[int, int], None] | None = None) -> CaseIndex:
    """The index, built from the knowledge folder first when it is empty (`on_case` as in CaseIndex.ingest)."""
    index = CaseIndex(settings)
    if index.count() == 0:
        log(f"index at {index.location} is empty: building it from {settings.knowledge}")
        report = index.ingest([settings.knowledge], lexicon, on_case=on_case)
        log(format_report(report))
    elif index.version().startswith(INGESTING):
        log(f"warning: an ingest into {index.location} is running or was cut short; the cases stored so far are "
            "served, and the rest appear when it finishes (re-run `casebot ingest` if none is running)")
    return index


def format_report(report: IngestReport) -> str:
    counts = ", ".join(f"{n} {name}" for name, n in report.counts().items())
    lines = [f"{counts} ({report.chunks_embedded} chunks embedded)"]
    if report.completed:
        lines.append("completed an earlier ingest that had been cut short; the index is now current")
    lines.extend(f"rejected {rejection}" for rejection in report.rejected)
    lines.extend(f"check {finding}" for finding in report.identifiers if not any(
        finding.startswith(f"{shown(r.path)}:") for r in report.rejected))
    lines.extend(f"check {finding}; its words are not searched until it is written out as a report"
                 for finding in report.stuffing)
    return "\n".join(lines)
