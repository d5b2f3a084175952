"""Sample two summaries per document from a model and label the pair (AI feedback).

Writes a preference dataset in the rlhf_pipeline text format. Candidate A is sampled at a
low temperature, candidate B at a high one; a grader decides which is better, so either
can win. The grader: key-fact coverage (the document's `facts` that the summary repeats)
plus half the ROUGE-L F1 against the reference summary, minus 0.5 for summaries over 50
words. Pairs whose grades differ by less than `--min-gap` are left out (and counted).

    python scripts/make_preferences.py --documents examples/demo/documents.jsonl \
        --out examples/demo/preferences.jsonl --limit 400
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

import torch

from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import Message
from rlhfkit.fileio import atomic_write_jsonl
from rlhfkit.models import load_model, load_tokenizer

INSTRUCTION = "Summarize in less than 50 words."
WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def rouge_l_f1(candidate: str, reference: str) -> float:
    a, b = words(candidate), words(reference)
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def fact_coverage(summary: str, facts: list[str]) -> float:
    text = " ".join(words(summary))
    hits = sum(" ".join(words(f)) in text for f in facts if words(f))
    return hits / max(1, len(facts))


def grade(summary: str, row: dict) -> float:
    score = fact_coverage(summary, row["facts"]) + 0.5 * rouge_l_f1(summary, row["reference"])
    if len(words(summary)) > 50:
        score -= 0.5
    if not summary.strip():
        score = 0.0
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=0, help="first N documents (0: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperatures", default="0.7,1.3")
    parser.add_argument("--min-gap", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with open(args.documents, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    if args.limit:
        rows = rows[: args.limit]
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    encoder = PromptEncoder(tokenizer, instruction=INSTRUCTION, prompt_sequence_length=512)
    low, high = (float(t) for t in args.temperatures.split(","))
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    out, skipped, started = [], 0, time.perf_counter()
    from rlhfkit.models.generate import generate_text

    for start in range(0, len(rows), args.batch_size):
        chunk = rows[start : start + args.batch_size]
        prompts = [encoder.encode_prompt((Message("user", r["input_text"]),)).ids for r in chunk]
        kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=True, top_p=0.95)
        first = generate_text(model, tokenizer, prompts, temperature=low, **kwargs)
        second = generate_text(model, tokenizer, prompts, temperature=high, **kwargs)
        for row, a, b in zip(chunk, first, second, strict=True):
            grade_a, grade_b = grade(a, row), grade(b, row)
            if abs(grade_a - grade_b) < args.min_gap:
                skipped += 1
                continue
            better = a if grade_a > grade_b else b
            worse = b if grade_a > grade_b else a
            choice = rng.randint(0, 1)
            candidates = [better, worse] if choice == 0 else [worse, better]
            out.append(
                {
                    "input_text": row["input_text"],
                    "candidate_0": candidates[0],
                    "candidate_1": candidates[1],
                    "choice": choice,
                    "id": row["id"],
                    "grades": [round(grade(c, row), 4) for c in candidates],
                }
            )
        done = min(start + args.batch_size, len(rows))
        print(
            f"{done}/{len(rows)} documents, {len(out)} pairs, {skipped} ties skipped, "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
    atomic_write_jsonl(args.out, out)
    print(f"wrote {len(out)} pairs to {args.out} ({skipped} near-ties left out)")


if __name__ == "__main__":
    main()
