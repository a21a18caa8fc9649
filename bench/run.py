"""`make bench`: speed, memory and retrieval quality, measured side by side in one run on this machine.

Prints a table and writes bench/results.md. Libraries of 50, 1,000 and 10,000 cases are the real library
plus synthetic cases (bench/synthetic.py). Nothing here asserts: the figures are compared with the targets
of SPEC section 7 in the written report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bot.cases import load_cases
from bot.chunking import chunk_case
from bot.conversation import CaseBot
from bot.embedding import MiniLMEmbeddings
from bot.evaluation import load_suite
from bot.index import CaseIndex
from bot.lexicon import Lexicon
from bot.settings import PROJECT_ROOT, load_settings
from synthetic import write_synthetic_cases

KNOWLEDGE = PROJECT_ROOT / "knowledge"
RESULTS = PROJECT_ROOT / "bench" / "results.md"
# The model's own rate is measured, in the ingesting process, on a sample of the library's chunks just before
# and just after the ingest (averaged): this machine's speed drifts by +-15% over minutes, and a change during
# a long ingest skews the comparison less that way.
ENCODE_SAMPLE = 2000
# Latency is measured in rounds, each size in turn, so drift in the machine's speed falls on every size alike.
ROUNDS = 3


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encode_rate(embedder: MiniLMEmbeddings, texts: list[str]) -> float:
    """Chunks per second of the bare model on the same texts that ingest embeds."""
    started = time.perf_counter()
    embedder.embed_documents(texts)
    return len(texts) / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_library(folder: Path, size: int) -> Path:
    cases = folder / "cases"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(KNOWLEDGE / "cases", cases)
    write_synthetic_cases(cases, max(0, size - len(list(cases.glob("*.md")))))
    return folder


def questions() -> list[tuple[str, dict, list[str]]]:
    """First-turn questions of the shipped eval set with their filters and the cases they expect (not the
    patients-like-mine tests, which give a vignette, not a question)."""
    out = []
    for path in sorted((PROJECT_ROOT / "evals").glob("*.yaml")):
        for test in load_suite(path).tests:
            step = test.steps()[0]
            if step.question:
                out.append((step.question, step.filters, step.expect_cases + step.expect_any))
    return out


def answer_times(bot: CaseBot, asked: list[tuple[str, dict, list[str]]]) -> list[float]:
    """Milliseconds per question, warm, each question in a new conversation."""
    for question, filters, _ in asked[:3]:
        bot.ask(question, "warm-up", filters or None)
    totals = []
    for number, (question, filters, _) in enumerate(asked):
        started = time.perf_counter()
        bot.ask(question, f"bench-{number}", filters or None)
        totals.append((time.perf_counter() - started) * 1000)
    return totals


def retrieval_quality(db: Path, asked) -> dict[str, tuple[float, float, float]]:
    """Per mode: hit@1, recall@3 and MRR of the expected cases in the ranked retrieval."""
    out = {}
    for mode in ("bm25", "dense", "hybrid"):
        bot = CaseBot(load_settings(db=db, knowledge=KNOWLEDGE, retrieval=mode), log=lambda m: None)
        hits1, recalls, reciprocal = [], [], []
        for question, filters, expected in asked:
            if not expected:
                continue
            ranked = [h.case.id for h in bot.retriever.search(question, filters or None)]
            hits1.append(float(ranked[:1] and ranked[0] in expected))
            recalls.append(len(set(ranked[:3]) & set(expected)) / min(len(expected), 3))
            rank = next((i + 1 for i, cid in enumerate(ranked) if cid in expected), None)
            reciprocal.append(1 / rank if rank else 0.0)
        out[mode] = (statistics.mean(hits1), statistics.mean(recalls), statistics.mean(reciprocal))
    return out


def startup(db: Path) -> tuple[float, float]:
    """Seconds from launching `casebot serve` to the page being served, and to the first answer through the API."""
    from first_answer import one_restart  # bench/first_answer.py: the same launch, timed per question

    page, answers = one_restart(db, PROJECT_ROOT, pause=0.0)
    return page, page + answers[0]


def measure_ingest(library: Path, db: Path, reuse: bool) -> dict:
    """In its own process (so its peak memory is this library's alone): the bare model's rate on a sample of the
    library's chunks, the ingest, timed end to end with the model already loaded, and the bare rate again.
    With `reuse`, an index already holding every chunk of this library is kept and not timed."""
    lexicon = Lexicon.load(KNOWLEDGE / "lexicon.yaml")
    embedder = MiniLMEmbeddings()
    embedder.embed_query("warm up")
    settings = load_settings(db=db, knowledge=library)
    cases, _ = load_cases([library], lexicon)
    texts = [doc.page_content for case in cases for doc in chunk_case(case, settings.chunk_size,
                                                                       settings.chunk_overlap)]
    out: dict = {"chunks": len(texts), "ingest_s": None}
    if reuse and db.exists() and CaseIndex(settings).count() == len(texts):
        return out
    sample = random.Random(len(texts)).sample(texts, min(len(texts), ENCODE_SAMPLE))
    before = encode_rate(embedder, sample)
    shutil.rmtree(db.parent, ignore_errors=True)
    started = time.perf_counter()
    report = CaseIndex(settings).ingest([library], lexicon, progress=False)
    out |= {"ingest_s": time.perf_counter() - started, "embedded": report.chunks_embedded,
            "ingest_rss": peak_rss_mb(), "encode_before": before, "encode_after": encode_rate(embedder, sample)}
    return out


def measure_latency(library: Path, db: Path) -> dict:
    """In its own process: answer times over the eval questions and the peak memory of answering."""
    bot = CaseBot(load_settings(db=db, knowledge=library), log=lambda m: None)
    return {"times": answer_times(bot, questions()), "rss": peak_rss_mb()}


def child(mode: str, library: Path, db: Path, reuse: bool = False) -> dict:
    command = [sys.executable, __file__, f"--{mode}", str(library), str(db), *(["--reuse"] if reuse else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="50,1000,10000")
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / ".casebot" / "bench")
    parser.add_argument("--reuse", action="store_true",
                        help="keep an index left by an earlier run when it holds every chunk (its ingest is not timed)")
    parser.add_argument("--ingest", nargs=2, type=Path, metavar=("LIBRARY", "DB"), help=argparse.SUPPRESS)
    parser.add_argument("--latency", nargs=2, type=Path, metavar=("LIBRARY", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest:
        print(json.dumps(measure_ingest(*args.ingest, args.reuse)))
        return
    if args.latency:
        print(json.dumps(measure_latency(*args.latency)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    rows = []
    for size in sizes:
        library = build_library(args.work / f"library-{size}", size)
        db = args.work / f"db-{size}" / "chroma"
        row = {"size": size, "library": library, "db": db, "times": [], "rss": 0.0,
               **child("ingest", library, db, args.reuse)}
        rows.append(row)
        if row["ingest_s"]:
            encode = (row["encode_before"] + row["encode_after"]) / 2
            print(f"{size} cases: encode {encode:.0f}/s, ingest {row['embedded'] / row['ingest_s']:.0f}/s", flush=True)
    for round_number in range(ROUNDS):
        for row in rows:
            measured = child("latency", row["library"], row["db"])
            row["times"] += measured["times"]
            row["rss"] = max(row["rss"], measured["rss"])
            print(f"round {round_number + 1}, {row['size']} cases: p95 {percentile(measured['times'], 0.95):.1f} ms",
                  flush=True)
    real_db = args.work / "db-real" / "chroma"
    shutil.rmtree(real_db.parent, ignore_errors=True)
    CaseIndex(load_settings(db=real_db)).ingest([KNOWLEDGE], Lexicon.load(KNOWLEDGE / "lexicon.yaml"), progress=False)
    asked = questions()
    quality = retrieval_quality(real_db, asked)
    write_results(rows, quality, startup(real_db), len(asked), load_before, os.getloadavg()[0])


def write_results(rows: list[dict], quality, started: tuple[float, float], n_questions: int, load_before: float,
                  load_after: float) -> None:
    for row in rows:
        row["p50"], row["p95"] = percentile(row["times"], 0.5), percentile(row["times"], 0.95)
        if row["ingest_s"]:
            row["rate"] = row["embedded"] / row["ingest_s"]
            row["encode"] = (row["encode_before"] + row["encode_after"]) / 2
    ratios = [row["rate"] / row["encode"] for row in rows if row["ingest_s"]]
    lines = ["# Benchmarks", "", f"Measured by `make bench` on this machine ({socket.gethostname()}, "
             f"2 cores, no GPU), {time.strftime('%Y-%m-%d %H:%M')}. Side by side in one run; each library is "
             "ingested, and queried, in processes of its own, so its peak memory is its own. Load average (1 min) "
             f"{load_before:.1f} at the start, {load_after:.1f} at the end: on a busy machine every figure is slower, "
             "the side-by-side comparisons less so.", "",
             f"## Extractive answer latency ({n_questions} eval questions x {ROUNDS} rounds, each question in a new "
             "conversation, warm)", "",
             f"Each round answers the questions at every size in turn, so drift in the machine's speed (+-15% over "
             f"minutes here) falls on every size alike; p50 and p95 are over all {ROUNDS * n_questions} answers.", "",
             "| cases | chunks | p50 ms | p95 ms | peak RSS MB, answering |", "|---|---|---|---|---|"]
    lines += [f"| {r['size']:,} | {r['chunks']:,} | {r['p50']:.1f} | {r['p95']:.1f} | {r['rss']:.0f} |" for r in rows]
    lines += ["", "## Ingest throughput against the embedding model's own `encode`", "",
              f"`encode`: the bare model, in the ingesting process, on a sample of {ENCODE_SAMPLE:,} of the same chunk "
              "texts (all of them when fewer), just before and just after the ingest. Ingest: end to end (load and "
              "check the files, chunk, embed, store, build the BM25 side index).", "",
              "| cases | chunks | encode before | encode after | ingest | ingest / mean encode "
              "| peak RSS MB, ingesting |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ingest_s"]:
            lines.append(f"| {r['size']:,} | {r['chunks']:,} | {r['encode_before']:.0f}/s | {r['encode_after']:.0f}/s "
                         f"| {r['rate']:.0f}/s | {r['rate'] / r['encode']:.0%} | {r['ingest_rss']:.0f} |")
        else:
            lines.append(f"| {r['size']:,} | {r['chunks']:,} | | | index reused (--reuse) | | |")
    lines += ["", "## Retrieval quality on the shipped eval set (ranked retrieval, before the gate)", "",
              "| mode | hit@1 | recall@3 | MRR |", "|---|---|---|---|"]
    lines += [f"| {mode} | {h:.3f} | {r:.3f} | {m:.3f} |" for mode, (h, r, m) in quality.items()]
    small, large = rows[0], rows[-1]
    page, first_answer = started
    worst = f"{min(ratios):.0%} at worst" if ratios else "not measured (indexes reused)"
    lines += ["", "## Start-up", "", f"`casebot serve` from launch: the page served after {page:.1f} s, the first "
              f"answer through the API after {first_answer:.1f} s (the embedding model loads with the first question).",
              "", "## Against the targets (SPEC section 7)", "",
              "| target | measured | met |", "|---|---|---|",
              f"| extractive p95 < 100 ms (warm) | {small['p95']:.1f} ms at {small['size']:,} cases | "
              f"{'yes' if small['p95'] < 100 else 'no'} |",
              f"| 10,000 cases answered < 200 ms | p95 {large['p95']:.1f} ms at {large['size']:,} cases | "
              f"{'yes' if large['p95'] < 200 and large['size'] >= 10000 else 'no'} |",
              f"| latency at 10,000 within 2x of 50 | {large['p95'] / small['p95']:.2f}x (p95), "
              f"{large['p50'] / small['p50']:.2f}x (p50) | {'yes' if large['p95'] <= 2 * small['p95'] else 'no'} |",
              f"| ingest within 10% of encode | {worst} | {'yes' if ratios and min(ratios) >= 0.9 else 'no'} |",
              f"| app ready < 15 s | first answer {first_answer:.1f} s after launch | "
              f"{'yes' if first_answer < 15 else 'no'} |"]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
