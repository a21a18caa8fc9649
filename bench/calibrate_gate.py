"""Calibrate the relevance gate on the shipped eval set: print, for each first-turn question, the best
case's similarity and concept coverage, then the accuracy of every threshold pair on a grid.

    .venv/bin/python bench/calibrate_gate.py [--db PATH] [EVAL.yaml ...]

The chosen pair goes into `Settings.gate_min_similarity` / `gate_min_coverage`; the README records the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.conversation import CaseBot
from bot.evaluation import load_suite
from bot.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    files = args.files or sorted(Path("evals").glob("*.yaml"))
    bot = CaseBot(load_settings(db=args.db))
    rows = []  # (similarity, coverage, should_answer, id)
    for path in files:
        for test in load_suite(path).tests:
            step = test.steps()[0]
            hits = bot.retriever.search(step.question, step.filters or None)
            best = max(hits, key=lambda h: (h.coverage, h.similarity), default=None)
            rows.append((best.similarity if best else 0.0, best.coverage if best else 0.0,
                         not step.expect_refusal, test.id))
    for sim, cov, answer, test_id in sorted(rows, key=lambda r: (r[2], r[1])):
        print(f"{'answer' if answer else 'refuse'}  sim {sim:.3f}  coverage {cov:.3f}  {test_id}")
    print("\nmin_similarity min_coverage  correct  wrong-refusals  wrong-answers")
    results = []
    for sim_t in [x / 100 for x in range(10, 55, 5)]:
        for cov_t in [x / 100 for x in range(30, 95, 5)]:
            wrong_refusal = sum(1 for s, c, a, _ in rows if a and not (s >= sim_t and c >= cov_t))
            wrong_answer = sum(1 for s, c, a, _ in rows if not a and (s >= sim_t and c >= cov_t))
            results.append((wrong_refusal + wrong_answer, wrong_answer, wrong_refusal, sim_t, cov_t))
    for errors, wrong_answer, wrong_refusal, sim_t, cov_t in sorted(results)[:15]:
        print(f"{sim_t:14.2f} {cov_t:12.2f}  {len(rows) - errors:7d}  {wrong_refusal:14d}  {wrong_answer:13d}")


if __name__ == "__main__":
    main()
