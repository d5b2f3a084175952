"""Build the demo's data in examples/demo/ from scratch: documents, preference pairs, prompts.

1. documents: `make_documents.py --n 1000 --seed 0` (invented news paragraphs, each with a
   reference summary and its key facts).
2. candidates: `rlhfkit data synth` on documents 1-720: the bundled model writes two
   summaries of each document (both at temperature 0.8, so both are the model's ordinary
   answers) and the grader `examples/graders/summary_content.yaml` grades each (the share
   of the document's key facts it states, and its ROUGE-L against the reference).
3. labels with noise: human labellers disagree with each other on about a quarter of summary
   pairs (Stiennon et al. 2020, "Learning to summarize from human feedback": labellers
   agreed with each other on about 73% of TL;DR comparisons, which is what two labellers
   who each agree with the truth on 84% do: 0.84^2 + 0.16^2 = 0.73). Each pair's label is
   drawn from a Bradley-Terry model of the two grades, P(first is chosen) =
   sigmoid((grade_0 - grade_1) / TAU), with a fixed seed, so that close pairs are nearly
   coin flips and clear ones are nearly always right; TAU makes the labels agree with the
   grader on about 0.84 of the pairs. The grader's own choice stays in each row as
   `grader_choice`.
4. splits: preferences from documents 1-720, RL prompts from documents 721-900, eval prompts
   from documents 901-1000; no document is in two files.

Usage (about 25 minutes on 2 CPU cores, nearly all of it step 2):
    python scripts/make_demo_data.py
    python scripts/make_demo_data.py --synth /tmp/synth.jsonl   # reuse step 2's output
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rlhfkit.eval.synth import noisy_labels

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
GRADER = "examples/graders/summary_content.yaml"
INSTRUCTION = "Summarize in less than 40 words."
N_DOCUMENTS = 1000
PREFERENCE_DOCS = 720  # documents 1-720: preference pairs
PROMPT_DOCS = 900  # documents 721-900: RL prompts; the rest: eval prompts
TAU = 0.06  # temperature of the label noise, in grade units (about 5 in 6 labels agree)
NOISE_SEED = 0


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    tmp.replace(path)


def make_documents() -> list[dict]:
    """Step 1: the documents, written to examples/demo/documents.jsonl and returned."""
    out = DEMO / "documents.jsonl"
    script = ROOT / "scripts" / "make_documents.py"
    args = ["--out", str(out), "--n", str(N_DOCUMENTS), "--seed", "0"]
    subprocess.run([sys.executable, str(script), *args], check=True)
    return read_jsonl(out)


def synthesize(documents: list[dict], out: Path) -> None:
    """Step 2: two sampled summaries of each preference document, graded, written to `out`."""
    prompts = out.with_name(f"{out.stem}_prompts.jsonl")
    write_jsonl(prompts, documents[:PREFERENCE_DOCS])
    command = [
        *[sys.executable, "-m", "rlhfkit.cli", "data", "synth"],
        f"prompt_dataset={prompts}",
        f"out={out}",
        f"grader={GRADER}",
        f"instruction={INSTRUCTION}",
        "target_sequence_length=64",
        "temperature_0=0.8",
        "temperature_1=0.8",
        "seed=0",
        "batch_size=16",
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    prompts.unlink()


def describe(rows: list[dict]) -> None:
    """Print how often the noisy labels agree with the grader and pick the shorter answer."""
    agree = sum(r["choice"] == r["grader_choice"] for r in rows) / len(rows)

    def words(row: dict, side: int) -> int:
        return len(row[f"candidate_{side}"].split())

    unequal = [r for r in rows if words(r, 0) != words(r, 1)]
    shorter = sum(words(r, r["choice"]) < words(r, 1 - r["choice"]) for r in unequal)
    print(
        f"{len(rows)} pairs; labels agree with the grader on {agree:.3f}; the chosen answer "
        f"is the shorter one in {shorter / len(unequal):.3f} of {len(unequal)} pairs of "
        "unequal length"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synth", type=Path, help="step 2's output: reused when it exists, else written there"
    )
    parser.add_argument("--tau", type=float, default=TAU)
    args = parser.parse_args()
    documents = make_documents()
    with tempfile.TemporaryDirectory() as scratch:
        synth = (args.synth or Path(scratch) / "synth.jsonl").resolve()
        if not synth.exists():
            synthesize(documents, synth)
        pairs = noisy_labels(read_jsonl(synth), args.tau, NOISE_SEED)
    describe(pairs)
    write_jsonl(DEMO / "preferences.jsonl", pairs)
    write_jsonl(DEMO / "prompts.jsonl", documents[PREFERENCE_DOCS:PROMPT_DOCS])
    write_jsonl(DEMO / "eval_prompts.jsonl", documents[PROMPT_DOCS:])


if __name__ == "__main__":
    main()
