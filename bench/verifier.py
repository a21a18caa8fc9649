"""The claim check on the planted-sentence probe (tests/probes/claims.yaml): faithful paraphrases kept and
distortions caught per library and kind, and milliseconds per sentence, for the check before issue 16
(similarity and shared terms only: bot/verification.py at BEFORE, read from git) and the current one.

    .venv/bin/python bench/verifier.py [--show] [--library shipped|heldout] [--before REV]

Timings are of a warm verifier (passage vectors cached after the first sentence on each case, as in a
running bot); the first pass over the probe, which embeds every passage sentence, is reported apart."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bot.embedding import MiniLMEmbeddings  # noqa: E402
from bot.lexicon import Lexicon  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.verification import CitationVerifier  # noqa: E402
from probes.probe import Result, library_passages, load_probes, run, tally  # noqa: E402

# The last commit whose bot/verification.py had only the similarity and term checks.
BEFORE = "e398da6"


def before_verifier(rev: str, lexicon: Lexicon, embedder, min_similarity: float):
    """The citation verifier as it was at `rev`, loaded from git (read only) into a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:bot/verification.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "verification_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("verification_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.CitationVerifier(lexicon, embedder, min_similarity)


def table(before: list[Result], after: list[Result], cold_ms: float) -> str:
    b, a = tally(before), tally(after)
    lines = ["| library | kind | n | before: right | after: right |", "|---|---|---|---|---|"]
    for (library, kind), (right, total) in a.items():
        verb = "kept" if kind == "faithful" else "caught"
        lines.append(f"| {library} | {kind} ({verb}) | {total} | {b[(library, kind)][0]} | {right} |")
    for library in sorted({lib for lib, _ in a}):
        for faithful in (True, False):
            rows = [(k, v) for k, v in a.items() if k[0] == library and (k[1] == "faithful") == faithful]
            total = sum(v[1] for _, v in rows)
            right_after = sum(v[0] for _, v in rows)
            right_before = sum(b[k][0] for k, _ in rows)
            label = "all faithful (kept)" if faithful else "all distortions (caught)"
            lines.append(f"| {library} | **{label}** | {total} | {right_before} ({right_before / total:.0%}) "
                         f"| {right_after} ({right_after / total:.0%}) |")
    ms = sorted(r.ms for r in after)
    ms_before = sorted(r.ms for r in before)
    lines.append("")
    lines.append(f"ms per sentence, warm: before median {ms_before[len(ms_before) // 2]:.1f}, "
                 f"after median {ms[len(ms) // 2]:.1f}, p95 {ms[int(len(ms) * 0.95)]:.1f}, max {ms[-1]:.1f}; "
                 f"first pass (embedding every passage sentence, after): {cold_ms:.0f} ms for {len(after)} sentences")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="list each probe the current check gets wrong")
    parser.add_argument("--library", choices=("shipped", "heldout"))
    parser.add_argument("--before", default=BEFORE, metavar="REV", help=f"git revision of the old check ({BEFORE})")
    args = parser.parse_args()
    settings = load_settings()
    lexicon = Lexicon.load(settings.lexicon_path)
    embedder = MiniLMEmbeddings()
    probes = [p for p in load_probes() if not args.library or p.library == args.library]
    passages = library_passages(lexicon)
    after_verifier = CitationVerifier(lexicon, embedder, settings.verify_min_similarity)
    old = before_verifier(args.before, lexicon, embedder, settings.verify_min_similarity)
    started = time.perf_counter()
    run(after_verifier.verify, probes, passages)  # cold: fills the verifier's cache
    cold_ms = (time.perf_counter() - started) * 1000
    after = run(after_verifier.verify, probes, passages)
    run(old.verify, probes, passages)  # the old check has no cache: its warm and cold runs are alike
    before = run(old.verify, probes, passages)
    print(table(before, after, cold_ms))
    if args.show:
        for r in after:
            if not r.right:
                verdict = "REJECTED faithful" if r.probe.faithful else f"MISSED {r.probe.kind}"
                print(f"\n{verdict} [{r.probe.case}] {r.probe.sentence}\n    {r.problems}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
