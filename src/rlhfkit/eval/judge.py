"""A pairwise LLM judge: which of two answers is better, asked in both orders.

The judge sees the request and the two answers labelled A and B and answers with a JSON
object `{"choice": "A" | "B" | "TIE", "explanation": "..."}`. It is asked twice, the second
time with the answers swapped, so that a preference for a position cancels out:

| first order | second order (mapped back) | choice | confidence |
| --- | --- | --- | --- |
| A | A | A | 1.0 |
| A | TIE | A | 0.5 |
| A | B | TIE | 0.0 |
| TIE | TIE | TIE | 1.0 |
| A | unreadable | A | 0.5 |
| unreadable | unreadable | no judgment | 0.0 |

Confidence is the share of the two orders that gave the final choice. An answer that
cannot be read is counted (`malformed`), never raised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from rlhfkit.graders.base import GradingError

MAX_REQUEST_CHARS = 8000
"""A longer request is cut (marked) before it is shown to the judge, so that the answers
and the answer format always fit in a local judge's context."""

SYSTEM_PROMPT = (
    "You are a careful, impartial judge. You compare two responses to the same request "
    "and decide which one is better."
)
USER_TEMPLATE = """Which response better does what the request asks? Judge helpfulness, \
accuracy and faithfulness to the request and its instructions. The order of the responses \
and their length must not decide.
{instruction}
[Request]
{request}

[Response A]
{response_a}

[Response B]
{response_b}

Answer with one JSON object and nothing else:
{{"choice": "A" or "B" or "TIE", "explanation": "one or two sentences"}}"""

_CHOICE_OBJECT = re.compile(r"\{[^{}]*\"choice\"[^{}]*\}", re.IGNORECASE)
_CHOICE_LINE = re.compile(
    r"\b(?:choice|answer|verdict|winner|better response)\s*(?:is)?\s*[:=]?\s*[\"'*\[(]*"
    r"\s*(?:response\s+)?(A|B|TIE)\b",
    re.IGNORECASE,
)
_BARE_CHOICE = re.compile(r"^\W*(?:response\s+)?(A|B|TIE)\W*$", re.IGNORECASE)
_SIDE_BETTER = re.compile(r"\bresponse\s+(A|B)\s+is\s+(?:clearly\s+|much\s+)?better\b", re.I)
_TIE_WORDS = {"tie": "TIE", "equal": "TIE", "both": "TIE", "a": "A", "b": "B"}
SWAP = {"A": "B", "B": "A", "TIE": "TIE"}


@dataclass(frozen=True)
class Vote:
    """One reading of the judge: a choice in the order it was shown, or why there is none."""

    choice: str | None
    explanation: str
    error: str | None = None


@dataclass(frozen=True)
class PairVerdict:
    """The two orders combined, in the caller's A/B frame."""

    choice: str | None
    confidence: float
    explanation: str
    votes: tuple[str | None, str | None]
    malformed: int


def judge_messages(
    request: str, response_a: str, response_b: str, instruction: str | None = None
) -> list[tuple[str, str]]:
    """The (role, content) messages that ask for one pairwise judgment."""
    if len(request) > MAX_REQUEST_CHARS:
        request = request[:MAX_REQUEST_CHARS] + " [...cut]"
    task = (
        f"\nThe responses were asked to follow this instruction: {instruction}\n"
        if instruction
        else ""
    )
    user = USER_TEMPLATE.format(
        instruction=task, request=request, response_a=response_a, response_b=response_b
    )
    return [("system", SYSTEM_PROMPT), ("user", user)]


def parse_vote(text: str | GradingError) -> Vote:
    """Read a choice from a judge's answer (or keep the transport error).

    Accepted, first match wins: a JSON object with `choice` (alone or inside other text);
    a line such as `Choice: B` or `Winner: TIE`; a bare `A`, `B` or `TIE`; "Response B is
    better". Anything else is a Vote with no choice and an error saying why.
    """
    if isinstance(text, GradingError):
        return Vote(None, "", f"{text.kind}: {text.message}")
    for candidate in (text.strip(), *_CHOICE_OBJECT.findall(text)):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        raw = {k.lower(): v for k, v in parsed.items()}.get("choice")
        choice = _TIE_WORDS.get(_bare(raw)) if isinstance(raw, str) else None
        if choice is None:
            return Vote(None, "", f"the judge's choice {raw!r} is not A, B or TIE")
        explanation = parsed.get("explanation")
        return Vote(choice, explanation.strip() if isinstance(explanation, str) else "")
    for pattern in (_CHOICE_LINE, _BARE_CHOICE, _SIDE_BETTER):
        match = pattern.search(text.strip())
        if match:
            return Vote(match.group(1).upper(), text.strip()[:500])
    return Vote(None, "", f"no choice in the judge's answer: {text.strip()[:200]!r}")


def combine_votes(first: Vote, second: Vote) -> PairVerdict:
    """Combine the answer to (A, B) with the answer to the swapped order (B, A).

    `second.choice` is in the swapped frame and is mapped back here.
    """
    votes = (first.choice, SWAP[second.choice] if second.choice else None)
    valid = [v for v in votes if v is not None]
    malformed = 2 - len(valid)
    explanation = " | ".join(
        f"{label}: {vote.explanation or vote.error}"
        for label, vote in (("order A,B", first), ("order B,A", second))
        if vote.explanation or vote.error
    )
    if not valid:
        return PairVerdict(None, 0.0, explanation, votes, malformed)
    score = sum({"A": 1.0, "TIE": 0.5, "B": 0.0}[v] for v in valid) / len(valid)
    choice = "A" if score > 0.5 else "B" if score < 0.5 else "TIE"
    confidence = sum(v == choice for v in valid) / 2
    return PairVerdict(choice, confidence, explanation, votes, malformed)


def _bare(choice: str) -> str:
    """`"Response B"` -> `"b"`, `" TIE "` -> `"tie"`."""
    return choice.strip().lower().removeprefix("response").strip()
