"""Write invented news paragraphs as source texts for the summarization demo.

Every document is put together from the tables in scripts/document_tables.json: a topic, one
of its scenarios (the main event), one of its templates (the order and structure of the
sentences) and random entities (places, people, organisations, numbers, dates). Templates
mix key sentences, which a good summary keeps, with filler (quotes, history, side details),
which it may leave out. Each row lists its key facts exactly as they appear in the text, so
that a grader can check how many of them a summary kept. All names and places are made up.

Usage:
    python scripts/make_documents.py --out examples/demo/documents.jsonl --n 480 --seed 0

Row format: {"id", "topic", "input_text", "reference", "facts"}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

MIN_WORDS, MAX_WORDS = 90, 220  # length of a document, in words
MIN_SENTENCES, MAX_SENTENCES = 4, 8  # length of a document, in sentences
MAX_REFERENCE_WORDS = 39  # the reference summary stays under 40 words
MIN_FACTS, MAX_FACTS = 3, 5  # key facts listed per document
FILLER = "~"  # in a template: a place for a randomly chosen filler sentence
KEEP_FILLER = 0.7  # chance that a template's filler place is used
MAX_TRIES = 50  # attempts at a valid, unseen document before giving up

# ---------------------------------------------------------------------------------------
# The tables: names (places are built from a start and an end, so most are invented),
# fillers that fit any topic (a document gets at most one), and the topics, in
# scripts/document_tables.json. Its arrays are read as tuples.
#
# In a topic, a slot spec is either a pattern ("{place} Buses", filled from earlier slots) or a
# tuple: ("pick", options), ("count", lo, hi[, unit]) in words or digits, ("num", lo, hi[,
# unit]) in digits, ("money", lo, hi) in thousands of pounds, ("cash", lo, hi[, step]) in
# pounds, ("pct", lo, hi) and ("ordinal", lo, hi). A picked dict sets several slots at once.
# Scenario strings are filled in order and become slots that the templates use; "facts"
# names the slots a good summary should keep (the topic's facts plus the scenario's). A
# scenario may also bring its own "slots", "quotes" and "fillers".
# ---------------------------------------------------------------------------------------


def _tuples(value):
    """JSON arrays as tuples, all the way down (the tables' specs are tuples)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


TABLES = _tuples(json.loads(Path(__file__).with_name("document_tables.json").read_text()))
FIRST_NAMES = TABLES["first_names"]
LAST_NAMES = TABLES["last_names"]
PLACE_STARTS = TABLES["place_starts"]
PLACE_ENDS = TABLES["place_ends"]
RIVERS = TABLES["rivers"]
REGIONS = TABLES["regions"]
MONTHS = TABLES["months"]
WEEKDAYS = TABLES["weekdays"]
GENERIC_FILLERS = TABLES["generic_fillers"]
TOPICS = TABLES["topics"]

# ---------------------------------------------------------------------------------------
# Slot values
# ---------------------------------------------------------------------------------------

ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """Spell out 0 <= n < 100 in words, e.g. 42 -> "forty-two"."""
    if n < 20:
        return ONES[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def ordinal(n: int) -> str:
    """67 -> "67th", 73 -> "73rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def money(thousands: int) -> str:
    """An amount given in thousands of pounds: 450 -> "£450,000", 2400 -> "£2.4 million"."""
    if thousands >= 1000:
        return f"£{round(thousands / 1000, 1):g} million"
    return f"£{thousands},000"


def with_unit(text: str, spec: tuple) -> str:
    return f"{text} {spec[3]}" if len(spec) > 3 else text


def resolve(spec: str | tuple, rng: random.Random, slots: dict[str, str]) -> str | dict:
    """Turn one slot spec (see the note above the topic tables) into its value."""
    if isinstance(spec, str):
        return spec.format_map(slots)
    kind = spec[0]
    if kind == "pick":
        choice = rng.choice(spec[1])
        if isinstance(choice, dict):
            return {key: text.format_map(slots) for key, text in choice.items()}
        return choice.format_map(slots)
    if kind == "cash":
        step = spec[3] if len(spec) > 3 else 1
        return f"£{rng.randrange(spec[1], spec[2] + 1, step):,}"
    n = rng.randint(spec[1], spec[2])
    if kind == "count":  # words below ten, either form below a hundred, else digits
        spell = n < 10 or (n < 100 and rng.random() < 0.5)
        return with_unit(number_words(n) if spell else f"{n:,}", spec)
    if kind == "num":
        return with_unit(f"{n:,}", spec)
    if kind == "money":
        return money(n if n < 100 else round(n, -1))
    if kind == "pct":
        return f"{n} per cent"
    if kind == "ordinal":
        return ordinal(n)
    raise ValueError(
        f"unknown slot kind {kind!r}; choose from pick, count, num, money, cash, pct, ordinal"
    )


def base_slots(rng: random.Random) -> dict[str, str]:
    """Slots every topic may use: places, people, dates, years."""
    places: list[str] = []
    while len(places) < 3:
        name = rng.choice(PLACE_STARTS) + rng.choice(PLACE_ENDS)
        if name not in places:
            places.append(name)
    slots = {"place": places[0], "place2": places[1], "place3": places[2]}
    people = zip(rng.sample(FIRST_NAMES, 4), rng.sample(LAST_NAMES, 4), strict=True)
    for i, (first, last) in enumerate(people, start=1):
        key = "person" if i == 1 else f"person{i}"
        slots[key] = f"{first} {last}"
        slots[f"{key}_last"] = last
    years = sorted(rng.sample(range(1850, 1991), 3))
    month, month2 = rng.sample(MONTHS, 2)
    weekday, weekday2 = rng.sample(WEEKDAYS, 2)
    slots.update(
        region=rng.choice(REGIONS),
        river=rng.choice(RIVERS),
        month=month,
        month2=month2,
        weekday=weekday,
        weekday2=weekday2,
        date=f"{rng.randint(1, 28)} {month}",
        old_year=str(years[0]),  # foundings and openings
        old_year2=str(years[1]),  # later events
        old_year3=str(years[2]),
        recent_year=str(rng.randint(2005, 2022)),
        pop=f"{rng.randrange(8000, 60000, 100):,}",
    )
    return slots


def scenario_slots(topic: dict, scenario: dict, rng: random.Random) -> dict[str, str]:
    """All slots of one document: base, topic and scenario slots, then scenario strings."""
    slots = base_slots(rng)
    for name, spec in {**topic["slots"], **scenario.get("slots", {})}.items():
        value = resolve(spec, rng, slots)
        if isinstance(value, dict):
            slots.update(value)
        else:
            slots[name] = value
    for name, text in scenario.items():
        if isinstance(text, str):
            slots[name] = text.format_map(slots)
    slots["quote"] = rng.choice(scenario.get("quotes", topic["quotes"]))
    return slots


# ---------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------


def sentence_case(text: str) -> str:
    """Capitalise the first letter, skipping an opening quotation mark."""
    i = 1 if text.startswith('"') else 0
    return text[:i] + text[i].upper() + text[i + 1 :]


def split_sentences(text: str) -> list[str]:
    """Split a document at sentence ends (a full stop, optionally closing a quote)."""
    return re.split(r'(?<=[.!?])\s+|(?<=[.!?]")\s+', text.strip())


def word_count(text: str) -> int:
    return len(text.split())


def fill_template(template: list[str], fillers: list[str], rng: random.Random) -> list[str]:
    """Sentences of one document: the template's key sentences plus fillers to a target length.

    `fillers` is a shuffled pool of formatted filler sentences, used without repeats.
    """
    sentences = []
    for line in template:
        if line != FILLER:
            sentences.append(line)
        elif fillers and rng.random() < KEEP_FILLER:
            sentences.append(fillers.pop())
    target = rng.randint(MIN_WORDS + 5, 170)
    while fillers and len(sentences) < MAX_SENTENCES and word_count(" ".join(sentences)) < target:
        sentences.insert(rng.randint(2, len(sentences)), fillers.pop())
    return [sentence_case(sentence) for sentence in sentences]


def make_document(topic: dict, rng: random.Random) -> dict:
    """One row (without its id) for `topic`: text, reference summary and key facts."""
    scenario = rng.choice(topic["scenarios"])
    slots = scenario_slots(topic, scenario, rng)
    template = [line.format_map(slots) for line in rng.choice(topic["templates"])]
    pool = topic["fillers"] + scenario.get("fillers", ()) + (rng.choice(GENERIC_FILLERS),)
    fillers = [line.format_map(slots) for line in pool]
    rng.shuffle(fillers)
    text = " ".join(fill_template(template, fillers, rng))
    facts = [slots[name] for name in topic["facts"] + scenario.get("facts", ())]
    return {
        "topic": topic["name"],
        "input_text": text,
        "reference": sentence_case(rng.choice(topic["references"]).format_map(slots)),
        "facts": list(dict.fromkeys(facts)),
    }


def problems(row: dict) -> list[str]:
    """What is wrong with a row, as readable messages; empty when it follows the rules."""
    text, found = row["input_text"], []
    words, sentences = word_count(text), len(split_sentences(text))
    if not MIN_WORDS <= words <= MAX_WORDS:
        found.append(f"{words} words, expected {MIN_WORDS} to {MAX_WORDS}")
    if not MIN_SENTENCES <= sentences <= MAX_SENTENCES:
        found.append(f"{sentences} sentences, expected {MIN_SENTENCES} to {MAX_SENTENCES}")
    if word_count(row["reference"]) > MAX_REFERENCE_WORDS:
        found.append(
            f"reference has {word_count(row['reference'])} words, at most {MAX_REFERENCE_WORDS}"
        )
    if not MIN_FACTS <= len(row["facts"]) <= MAX_FACTS:
        found.append(f"{len(row['facts'])} facts, expected {MIN_FACTS} to {MAX_FACTS}")
    found += [f"fact {fact!r} is not in the text" for fact in row["facts"] if fact not in text]
    return found


def generate(n: int, seed: int) -> list[dict]:
    """`n` distinct rows, the same for the same seed; topics take turns in shuffled rounds."""
    rng = random.Random(seed)
    rows: list[dict] = []
    seen: set[str] = set()
    order: list[dict] = []
    while len(rows) < n:
        if not order:
            order = list(TOPICS)
            rng.shuffle(order)
        topic = order.pop()
        for _ in range(MAX_TRIES):
            row = make_document(topic, rng)
            if row["input_text"] not in seen and not problems(row):
                break
        else:
            raise RuntimeError(f"no valid document for topic {topic['name']!r}: {problems(row)}")
        seen.add(row["input_text"])
        rows.append({"id": f"doc-{len(rows) + 1:04d}", **row})
    return rows


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def write_jsonl(rows: list[dict], path: Path) -> None:
    """Write rows to `path` through a temporary file, so a kill leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def report(rows: list[dict]) -> None:
    """Print topic counts and length statistics; exit with a message if a row breaks a rule."""
    words = [word_count(row["input_text"]) for row in rows]
    sentences = [len(split_sentences(row["input_text"])) for row in rows]
    topics = Counter(row["topic"] for row in rows)
    print(f"{len(rows)} documents, {len(topics)} topics")
    for name, count in sorted(topics.items()):
        print(f"  {name:28s} {count}")
    print(f"words: min {min(words)}, median {statistics.median(words)}, max {max(words)}")
    print(f"sentences: min {min(sentences)}, max {max(sentences)}")
    bad = [f"{row['id']}: {'; '.join(problems(row))}" for row in rows if problems(row)]
    if bad:
        raise SystemExit("rows break the length or fact rules:\n" + "\n".join(bad))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    parser.add_argument("--n", type=int, default=480, help="number of documents")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n must be at least 1, got {args.n}")
    rows = generate(args.n, args.seed)
    report(rows)  # before writing, so a bad run leaves the previous file in place
    write_jsonl(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
