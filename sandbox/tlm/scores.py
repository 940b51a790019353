"""The TLM sandbox's SYNTHETIC scores and explanations: hand-picked for the demo's known pairs,
a hash of ``(prompt, response)`` for every other pair. Not a trust model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Appended to explanations when ``rich_explanations`` is on: characters a UI or a Langfuse
# comment must escape or render safely.
RICH_SUFFIX = (
    " Markup check: <b>bold</b> & <script>alert(1)</script> | pipe | *emphasis* "
    "`code` [link](http://example.invalid) \u2713 \u00e9"
)


@dataclass(frozen=True)
class KnownPair:
    """A demo prompt/response pair with a hand-picked synthetic score.

    Matches when the case-folded prompt contains every ``prompt_has`` substring and the
    case-folded response contains every ``response_has`` substring (empty: any response).
    """

    prompt_has: tuple[str, ...]
    response_has: tuple[str, ...]
    score: float
    explanation: str


KNOWN_PAIRS: tuple[KnownPair, ...] = (
    KnownPair(
        ("3rd month of the year in alphabetical order",),
        ("december",),
        0.94,
        "Sorted alphabetically the months run April, August, December, February, January, "
        "July, June, March, May, November, October, September. The third entry is December, "
        "which is what the response says, so the answer is consistent with a careful "
        "re-derivation and is rated as likely correct.",
    ),
    KnownPair(
        ("3rd month of the year in alphabetical order",),
        (),
        0.09,
        "The question asks for the third month in alphabetical order, not in calendar order. "
        "Sorted alphabetically the months run April, August, December, February, and so on, so "
        "the third one is December. The response appears to give the third calendar month "
        "(March) instead, which answers a different question. This response is likely wrong.",
    ),
    KnownPair(
        ("seconds are in 100 years",),
        ("3,153,600,000",),
        0.31,
        "The response multiplies 60 x 60 x 24 x 365 = 31,536,000 seconds per year by 100, "
        "which ignores leap years. A century contains about 24 or 25 leap days, so the true "
        "figure is closer to 3,155,673,600 to 3,155,760,000 seconds. The arithmetic is right "
        "for 365-day years, but the stated total is not exact, so the answer is doubtful.",
    ),
    KnownPair(
        ("seconds are in 100 years",),
        ("3153600000",),
        0.31,
        "The response multiplies 31,536,000 seconds per year by 100, which ignores leap years. "
        "A century contains about 24 or 25 leap days, so the true figure is closer to "
        "3,155,673,600 to 3,155,760,000 seconds. The stated total is therefore not exact.",
    ),
    KnownPair(
        ("capital of france",),
        ("paris",),
        0.985,
        "Paris has been the capital of France for centuries and this is uncontroversial, widely "
        "documented general knowledge. The response states it directly and without hedging, "
        "and alternative answers sampled for the same question agree with it, so the response "
        "is rated as very likely correct.",
    ),
    # NB: with the relations stated in the sandbox's own question (Alice = 2 x Bob,
    # Bob = 3 x Charlie, total $72) this answer is CORRECT: 7.20 + 21.60 + 43.20 = 72.
    KnownPair(
        ("alice", "bob", "charlie", "twice", "three times"),
        ("7.20", "21.60", "43.20"),
        0.88,
        "Let Charlie's share be c. Then Bob has 3c and Alice has 2 x 3c = 6c, so 10c = 72 and "
        "c = 7.20. Bob therefore gets 21.60 and Alice 43.20, which add up to 72. The response "
        "matches this derivation, so it is rated as likely correct, with a small margin for "
        "possible misreadings of who gets a multiple of whom.",
    ),
    KnownPair(
        ("alice", "bob", "charlie", "72"),
        ("7.20", "21.60", "43.20"),
        0.18,
        "The split 7.20 / 21.60 / 43.20 follows from 'Alice pays twice Bob and Bob pays three "
        "times Charlie', but the question as asked does not state those relations in that form. "
        "Re-deriving the shares from the stated conditions gives different amounts, so the "
        "response likely answers a different problem than the one posed.",
    ),
    KnownPair(
        ("declaration of independence",),
        ("august 2",),
        0.9,
        "The Continental Congress adopted the Declaration on July 4, 1776, and most delegates "
        "signed the engrossed copy on August 2, 1776, with a few signing later. The response "
        "reflects the signing date correctly, so it is rated as likely correct.",
    ),
    KnownPair(
        ("declaration of independence",),
        ("july 4, 1776",),
        0.42,
        "July 4, 1776 is the date the Continental Congress adopted the Declaration, and it is "
        "the date printed on it, but most delegates actually signed the engrossed copy on "
        "August 2, 1776, and some signed even later. The response conflates adoption with "
        "signing, so it is only partly correct.",
    ),
)


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def pair_digest(prompt: str, response: str) -> bytes:
    """SHA-256 of a pair: what synthetic scores and per-item latencies are drawn from."""
    return hashlib.sha256(prompt.encode() + b"\x00" + response.encode()).digest()


def known_pair(prompt: str, response: str) -> KnownPair | None:
    """The :data:`KNOWN_PAIRS` entry a prompt/response pair matches (first match), if any."""
    p, r = _fold(prompt), _fold(response)
    for pair in KNOWN_PAIRS:
        if all(s in p for s in pair.prompt_has) and all(s in r for s in pair.response_has):
            return pair
    return None


def synthetic_score(prompt: str, response: str) -> float:
    """The sandbox's deterministic, SYNTHETIC score for a pair (a known pair's, else a hash)."""
    pair = known_pair(prompt, response)
    if pair is not None:
        return pair.score
    x = int.from_bytes(pair_digest(prompt, response)[:8], "big") / 2**64
    return round(0.02 + 0.96 * x, 4)


# the hand-picked demo explanations read like a model's: say plainly where they come from (a
# short label first, so a table that shortens explanations still shows the why)
SYNTHETIC_LABEL = "[Synthetic] "
HAND_WRITTEN = " (Hand-written for the sandbox demo, not TLM output.)"


def synthetic_explanation(
    prompt: str, response: str, score: float | None = None, *, rich: bool = False
) -> str:
    """The sandbox's deterministic explanation for a pair (plain text unless ``rich``)."""
    pair = known_pair(prompt, response)
    if pair is not None:
        text = SYNTHETIC_LABEL + pair.explanation + HAND_WRITTEN
    else:
        s = synthetic_score(prompt, response) if score is None else score
        ref = pair_digest(prompt, response).hex()[:12]
        verdict = (
            "Likely correct"
            if s >= 0.8
            else "Uncertain"
            if s >= 0.5
            else "Doubtful, worth a human review"
        )
        text = (
            f"{SYNTHETIC_LABEL}{verdict}, if this were a real score. The local TLM "
            f"sandbox is not a trust model: the score {s:.3f} was derived deterministically from "
            f"a hash of the prompt ({len(prompt)} characters) and the response "
            f"({len(response)} characters), so it carries no information about correctness "
            f"(ref {ref})."
        )
    return text + RICH_SUFFIX if rich else text


def _unit_score(*parts: str) -> float:
    """A hash of ``parts`` mapped into [0.02, 0.98], rounded to 4 places."""
    digest = hashlib.sha256(b"\x00".join(p.encode() for p in parts)).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    return round(0.02 + 0.96 * x, 4)


def eval_score(
    name: str,
    *,
    query: str | None = None,
    context: str | None = None,
    response: str | None = None,
) -> float:
    """The SYNTHETIC score of a TrustworthyRAG eval: a hash of its name and of the inputs it
    reads (pass only those its identifiers name: an eval without a ``response_identifier``
    scores the same whatever the response)."""
    return _unit_score(
        "rag-eval",
        name,
        "q" if query is None else "Q" + query,
        "c" if context is None else "C" + context,
        "r" if response is None else "R" + response,
    )


def criteria_score(name: str, prompt: str, response: str) -> float:
    """The SYNTHETIC score of a custom evaluation criterion on plain TLM (by name, prompt,
    response)."""
    return _unit_score("custom-criterion", name, prompt, response)
