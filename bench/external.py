"""External bench: retrieval and the relevance gate on BioASQ's golden snippets (as shipped in MIRAGE).

    .venv/bin/python bench/external.py --data /path/to/mirage-bioasq [--limit N] [--db PATH] [--write]

`--data` is a folder of BioASQ `*_golden.json` files (e.g. MIRAGE's `rawdata/bioasq/`, copied anywhere
outside this repository) or one such file; nothing of it is committed. The library: one plain `.txt` entry
per PubMed document that a gold snippet comes from (its title snippet, else its first snippet's first
sentence, on the first line; then its distinct snippets), written to a temporary folder and indexed through
the product's own ingest. Each question's gold documents are its expected citations; every question is
asked through `CaseBot.ask` (each in a new conversation) with retrieval=hybrid, dense and bm25 over the same
index, in the same run, the three modes taking turns question by question. Off-topic questions (the bank
the product ships in knowledge/off_topic_questions.yaml when it exists, else the list below) should all be
refused. With `--limit N` only the first N questions are asked and the library holds only their documents.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from bot.conversation import CaseBot  # noqa: E402
from bot.index import CaseIndex  # noqa: E402
from bot.lexicon import Lexicon  # noqa: E402
from bot.settings import load_settings  # noqa: E402

MODES = ("hybrid", "dense", "bm25")
HERE = Path(__file__).resolve().parent  # results and the bank are this checkout's, wherever `bot` is from
RESULTS = HERE / "results.md"
HEADING = "## External set (BioASQ via MIRAGE)"
SENTENCE_END = re.compile(r"(?<=[a-z0-9)]{2}[.?!]) (?=[A-Z])")  # for a title line when none is given
SHIPPED_BANK = HERE.parent / "knowledge" / "off_topic_questions.yaml"
OFF_TOPIC = {  # used when the product ships no bank of its own
    "everyday": [
        "What is the capital of France?", "Who won the 2018 World Cup?", "How do I make sourdough bread?",
        "What time does the sun set in Oslo in June?", "How do I change a flat tyre on a bicycle?",
        "Recommend a good thriller to read on holiday.", "How many teaspoons are in a tablespoon?",
        "What is the best way to learn Spanish quickly?", "How do I reset my wifi router?",
        "Which train goes from Paris to Lyon fastest?", "How long should I boil an egg for a runny yolk?",
        "What is the weather forecast for tomorrow?", "How do I fix a leaking kitchen tap?",
        "Who painted the Mona Lisa?", "What are good names for a golden retriever puppy?",
        "How do I file my income tax return?", "What is the offside rule in football?",
        "How do I get red wine out of a carpet?", "Which laptop should I buy for programming?",
        "Write a birthday poem for my grandmother.", "How do I plant tulip bulbs in autumn?",
        "What is the exchange rate of the euro to the dollar?", "How do I unblock a shower drain?",
    ],
    "unrelated-medical": [
        "How do I book a flu shot at my local pharmacy?", "What are the visiting hours of the cardiology ward?",
        "How do I renew my medical licence online?", "Which health insurance plan covers dental implants?",
        "What should I pack in a hospital bag before giving birth?", "How do I bill a telehealth consultation?",
        "Where is the nearest walk-in clinic open on Sunday?", "How do I get a copy of my medical records?",
        "What size of scrubs should I order for a new nurse?", "How do I clean a stethoscope between patients?",
        "What is the parking fee at the hospital car park?", "How do I schedule the night shifts on a ward rota?",
        "How many continuing education credits does a GP need each year?",
        "What is a good stretching routine for office workers?", "How do I choose reading glasses at a pharmacy?",
        "How long is the waiting list for a hip replacement in my region?",
        "How do I fill in a sick note for my employer?", "What should a first-aid kit for a car contain?",
        "How do I sign up to donate blood?", "Which running shoes are best for flat feet?",
    ],
}


def load_questions(data: Path) -> list[dict]:
    """Every BioASQ question under `data` (a golden JSON file or a folder of them) that has gold snippets, in
    file-name order."""
    files = [data] if data.is_file() else sorted(data.rglob("*.json"))
    questions = [q for f in files for q in json.loads(f.read_text(encoding="utf-8")).get("questions", [])]
    if not questions:
        raise SystemExit(f"no BioASQ questions found under {data}")
    return [q for q in questions if q.get("snippets")]


def pmid(snippet: dict) -> str:
    return snippet["document"].rstrip("/").split("/")[-1]


def write_library(questions: list[dict], folder: Path) -> int:
    """One plain .txt file per gold document: a title line, then its distinct snippets. Returns the count."""
    docs: dict[str, list[dict]] = {}
    for question in questions:
        for snippet in question["snippets"]:
            docs.setdefault(pmid(snippet), []).append(snippet)
    folder.mkdir(parents=True, exist_ok=True)
    for doc, snippets in docs.items():
        texts = list(dict.fromkeys(re.sub(r"\s+", " ", s["text"]).strip().lstrip("#").strip() for s in snippets))
        texts = [t for t in texts if t and not any(t != other and t in other for other in texts)]
        titles = [re.sub(r"\s+", " ", s["text"]).strip() for s in snippets if s.get("beginSection") == "title"]
        title = titles[0] if titles else SENTENCE_END.split(texts[0])[0]
        body = [t for t in texts if t != title] or texts
        (folder / f"pubmed-{doc}.txt").write_text(title[:200] + "\n\n" + "\n\n".join(body) + "\n", encoding="utf-8")
    return len(docs)


def off_topic_bank() -> tuple[str, list[tuple[str, str]]]:
    """(source, [(category, question)]): the product's bank when it ships one, else this script's."""
    if not SHIPPED_BANK.exists():
        return "bench/external.py's own list", [(c, q) for c, qs in OFF_TOPIC.items() for q in qs]

    def walk(node, category):
        if isinstance(node, str):
            yield category, node
        elif isinstance(node, dict):
            if isinstance(node.get("question"), str):
                yield node.get("category", category), node["question"]
            else:
                for key, value in node.items():
                    yield from walk(value, category if key == "questions" else str(key))
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, category)

    return str(SHIPPED_BANK.relative_to(HERE.parent)), list(walk(yaml.safe_load(SHIPPED_BANK.read_text()), "all"))


def score(answers: list, gold: list[set[str]]) -> dict:
    """Shares over the questions (every question's gold documents are in the library)."""
    n = len(answers)
    top1 = [bool(a.retrieved) and a.retrieved[0] in g for a, g in zip(answers, gold)]
    cited = [[c.case_id for c in a.citations] for a in answers]
    return {
        "top1": sum(top1) / n,
        "first_cited": sum(bool(c) and c[0] in g for c, g in zip(cited, gold)) / n,
        "cited_any": sum(bool(set(c) & g) for c, g in zip(cited, gold)) / n,
        "false_refusals": sum(a.refused for a in answers) / n,
        "refused_top1": sum(a.refused and t for a, t in zip(answers, top1)),
        "wrong_first": sum(bool(c) and c[0] not in g for c, g in zip(cited, gold)) / n,
        "p50_ms": statistics.median(a.timings_ms["total"] for a in answers),
    }


def table(rows: dict[str, dict], off: dict[str, dict[str, tuple[int, int]]]) -> list[str]:
    categories = sorted({c for per_mode in off.values() for c in per_mode})
    lines = ["| mode | top-1 retrieved | first citation gold | gold cited at all | false refusals "
             "(of which gold ranked 1st) | wrong first citation | off-topic refused | "
             + " | ".join(f"off-topic refused: {c}" for c in categories) + " | answer p50 ms |",
             "|---" * (8 + len(categories)) + "|"]
    for mode, r in rows.items():
        refused = sum(k for k, _ in off[mode].values()), sum(n for _, n in off[mode].values())
        lines.append(f"| {mode} | {r['top1']:.3f} | {r['first_cited']:.3f} | {r['cited_any']:.3f} | "
                     f"{r['false_refusals']:.1%} ({r['refused_top1']}) | {r['wrong_first']:.1%} | "
                     f"{refused[0]}/{refused[1]} ({refused[0] / refused[1]:.0%}) | "
                     + " | ".join(f"{off[mode][c][0]}/{off[mode][c][1]}" for c in categories)
                     + f" | {r['p50_ms']:.0f} |")
    return lines


def write_section(lines: list[str]) -> None:
    """Replace this bench's section of results.md (or append it at the end), leaving the rest as it is."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    start = text.find(HEADING)
    if start < 0:
        before, after = text.rstrip("\n") + "\n\n", ""
    else:
        nxt = re.search(r"^## ", text[start + len(HEADING):], re.MULTILINE)
        before = text[:start]
        after = "\n" + text[start + len(HEADING) + nxt.start():] if nxt else ""
    RESULTS.write_text(before + "\n".join(lines) + "\n" + after, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="BioASQ *_golden.json file or folder of them")
    parser.add_argument("--limit", type=int, help="ask only the first N questions (the library: their documents)")
    parser.add_argument("--db", type=Path, help="index folder to build or reuse (default: a temporary one)")
    parser.add_argument("--label", default="",
                        help="a sentence put in front of the written section (e.g. the code's commit)")
    parser.add_argument("--write", action="store_true", help=f"write the '{HEADING}' section of bench/results.md")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    questions = load_questions(args.data)[: args.limit]
    gold = [{f"pubmed-{pmid(s)}" for s in q["snippets"]} for q in questions]
    source, bank = off_topic_bank()
    with tempfile.TemporaryDirectory(prefix="casebot-external-") as work:
        library = Path(work) / "library"
        n_docs = write_library(questions, library / "cases")
        db = args.db or Path(work) / "chroma"
        settings = load_settings(db=db, knowledge=library)
        report = CaseIndex(settings).ingest([library], Lexicon.load(settings.lexicon_path), progress=False)
        ingest_s = time.perf_counter() - started
        print(f"{len(questions)} questions, {n_docs} documents; index {db}: "
              + ", ".join(f"{n} {k}" for k, n in report.counts().items())
              + f", {report.chunks_embedded} chunks embedded in {ingest_s:.0f} s", flush=True)
        bots = {mode: CaseBot(load_settings(db=db, knowledge=library, retrieval=mode), log=lambda m: None)
                for mode in MODES}
        n_chunks = len(bots["hybrid"].retriever.side.chunk_ids)
        for bot in bots.values():
            bot.ask("warm up", "warm-up")
        answers: dict[str, list] = {mode: [] for mode in MODES}
        for number, question in enumerate(questions):
            for mode, bot in bots.items():
                answers[mode].append(bot.ask(question["body"], f"q{number}"))
                bot.forget(f"q{number}")
            if (number + 1) % 200 == 0:
                print(f"  {number + 1}/{len(questions)} questions, "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
        off: dict[str, dict[str, tuple[int, int]]] = {}
        answered_off: dict[str, list[str]] = {}
        for mode, bot in bots.items():
            per_category: dict[str, list[bool]] = {}
            for number, (category, question) in enumerate(bank):
                refused = bot.ask(question, f"off{number}").refused
                per_category.setdefault(category, []).append(refused)
                if not refused:
                    answered_off.setdefault(question, []).append(mode)
            off[mode] = {c: (sum(v), len(v)) for c, v in per_category.items()}
    rows = {mode: score(answers[mode], gold) for mode in MODES}
    minutes = (time.perf_counter() - started) / 60
    command = "bench/external.py --data DATA" + (f" --limit {args.limit}" if args.limit else "")
    lines = [HEADING, "",
             (args.label + " " if args.label else "") + f"`{command}`, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {minutes:.1f} min (load average {load_before:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end). DATA: BioASQ Task 7B-11B golden files as shipped in MIRAGE "
             "(github.com/Teddy-XiongGZ/MIRAGE, `rawdata/bioasq/`), read from outside the repository. "
             f"{len(questions):,} questions (all types), each asked alone; the library: their {n_docs:,} gold "
             f"PubMed documents as plain .txt entries (title line plus the document's gold snippets), "
             f"{n_chunks:,} chunks. Every question's gold documents are in the library, so every refusal is "
             f"false. Off-topic: {len(bank)} questions from {source}.", "",
             *table(rows, off), "",
             "top-1 retrieved: the first of `retrieved` is a gold document. First citation gold / wrong: the answer's "
             "first citation is / is not a gold document. Gold cited at all: any citation is gold. The three modes "
             "are `Settings(retrieval=...)` over the same index, taking turns question by question."]
    if answered_off:
        lines += ["", "Off-topic questions answered: " + "; ".join(
            f"\"{q}\" ({', '.join(m)})" for q, m in sorted(answered_off.items())) + "."]
    print("\n".join(lines))
    if args.write:
        write_section(lines)
        print(f"\nwrote the '{HEADING}' section of {RESULTS}")


if __name__ == "__main__":
    main()
