"""Request classification for `model: "auto"`: L0 lookup / L1 extraction / L2 aggregation / L3 reasoning,
and the token estimates used for routing, reservations and (only when the upstream reports no usage)
accounting. The rules are documented in docs/gateway.md ("Classification"); first match wins:

  hint  the `X-Joulestream-Tier: L0|L1|L2|L3` request header
  L3    `reasoning_effort` / `reasoning` in the body; or max output ≥ 4096 tokens; or a reasoning hint in
        the user text (step by step, prove, derive, algorithm, debug, implement, write code, a ``` fence…)
  L1    tools / functions / tool_choice, or `response_format` json_object / json_schema; or an extraction
        hint (extract, parse, "as JSON", fill in, list all …)
  L2    estimated prompt ≥ 2,000 tokens; or more than 6 messages; or max output ≥ 1,024 tokens; or an
        aggregation hint (summarize, rewrite, translate, compare, combine, synthesize, outline, review this …)
  L0    everything else (short question, short answer); embeddings are always L0
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from core.contracts import RoutingTier

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 85
MAX_SCAN_CHARS = 8_000  # classification reads at most this much user text

L3_MAX_OUTPUT = 4096
L2_MAX_OUTPUT = 1024
L2_PROMPT_TOKENS = 2000
L2_MESSAGES = 6

_REASONING = re.compile(
    r"step[- ]by[- ]step|\bthink (?:carefully|hard|through)|\breason(?:ing)? (?:about|through)|\bprove\b|"
    r"\bproof\b|\bderive\b|\balgorithm|\bdebug|\brefactor|\bimplement\b|\bsolve\b|\bplan (?:out|the|a)\b|"
    r"\bwrite (?:a |the |some )?(?:code|function|program|script|class|query|unit tests?)\b|```|"
    r"\bchain of thought\b|\bwhy does\b|\btrade-?offs?\b",
    re.IGNORECASE,
)
_EXTRACTION = re.compile(
    r"\bextract|\bparse\b|\b(?:as|in|into|return) json\b|\bfill in\b|\blist all\b|\bpull out\b|"
    r"\bnamed entit|\bstructured\b|\bkey[- ]value",
    re.IGNORECASE,
)
_AGGREGATION = re.compile(
    r"\bsummar|\btl;?dr\b|\brewrite\b|\brephrase\b|\bparaphrase\b|\btranslate\b|\bcompare\b|\bcombine\b|"
    r"\bmerge\b|\bsynthesi[sz]e\b|\bcondense\b|\boutline\b|\breview (?:this|the|these|my)\b|\bdigest\b",
    re.IGNORECASE,
)
_HINT_HEADER_VALUES = {t.value: t for t in RoutingTier}


class Classification(NamedTuple):
    tier: RoutingTier
    rule: str  # which rule decided, e.g. "L2: aggregation hint 'summar'"


def _estimate_text(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _content_text(content: Any) -> tuple[str, int]:
    """(text, extra tokens for non-text parts) of a message content (str or list of parts)."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    parts: list[str] = []
    extra = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "input_image", "image"):
                    extra += IMAGE_TOKENS
            elif isinstance(part, str):
                parts.append(part)
    return "\n".join(parts), extra


def estimate_chat_prompt(messages: list[dict[str, Any]]) -> int:
    total = 3
    for m in messages:
        text, extra = _content_text(m.get("content"))
        total += MESSAGE_OVERHEAD_TOKENS + _estimate_text(text) + extra
        for call in m.get("tool_calls") or ():
            if isinstance(call, dict):
                total += _estimate_text(str(call.get("function", "")))
    return total


def estimate_prompt_input(prompt: Any) -> int:
    """Tokens of a completions `prompt` or an embeddings `input`: str, [str], [int] or [[int]]."""
    if isinstance(prompt, str):
        return _estimate_text(prompt)
    if isinstance(prompt, list):
        if not prompt:
            return 0
        if all(isinstance(x, int) for x in prompt):
            return len(prompt)
        return sum(estimate_prompt_input(x) for x in prompt)
    return 0


def tokens_for_chars(n_chars: int) -> int:
    """Estimated tokens of a generated text of `n_chars` characters."""
    return (n_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def user_text(messages: list[dict[str, Any]]) -> str:
    """The user (and developer) text that classification looks at, newest first, at most MAX_SCAN_CHARS."""
    chunks: list[str] = []
    budget = MAX_SCAN_CHARS
    for m in reversed(messages):
        if m.get("role") not in ("user", "developer"):
            continue
        text, _ = _content_text(m.get("content"))
        chunks.append(text[:budget])
        budget -= len(chunks[-1])
        if budget <= 0:
            break
    return "\n".join(chunks)


def max_output(body: dict[str, Any]) -> int | None:
    v = body.get("max_completion_tokens")
    if v is None:
        v = body.get("max_tokens")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rf_type(body: dict[str, Any]) -> str | None:
    rf = body.get("response_format")
    return rf.get("type") if isinstance(rf, dict) else None


def classify(
    endpoint: str,
    body: dict[str, Any],
    prompt_tokens: int,
    hint: str | None = None,
) -> Classification:
    """The routing tier of a request (see the module docstring for the rules)."""
    if hint:
        tier = _HINT_HEADER_VALUES.get(hint.strip().upper())
        if tier is not None:
            return Classification(tier, f"{tier.value}: X-Joulestream-Tier header")
    if endpoint == "embeddings":
        return Classification(RoutingTier.L0, "L0: embeddings")
    if endpoint == "chat":
        messages = body.get("messages") or []
        text = user_text(messages)
        n_messages = len(messages)
    else:
        prompt = body.get("prompt")
        text = prompt[:MAX_SCAN_CHARS] if isinstance(prompt, str) else ""
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            text = "\n".join(prompt)[:MAX_SCAN_CHARS]
        n_messages = 1
    out = max_output(body)

    if body.get("reasoning_effort") is not None or body.get("reasoning") is not None:
        return Classification(RoutingTier.L3, "L3: reasoning parameter")
    if out is not None and out >= L3_MAX_OUTPUT:
        return Classification(RoutingTier.L3, f"L3: max output {out} >= {L3_MAX_OUTPUT}")
    if m := _REASONING.search(text):
        return Classification(RoutingTier.L3, f"L3: reasoning hint {m.group(0)!r}")

    if body.get("tools") or body.get("functions") or body.get("tool_choice") not in (None, "none"):
        return Classification(RoutingTier.L1, "L1: tool use")
    if _rf_type(body) in ("json_object", "json_schema"):
        return Classification(RoutingTier.L1, f"L1: response_format {_rf_type(body)}")
    if m := _EXTRACTION.search(text):
        return Classification(RoutingTier.L1, f"L1: extraction hint {m.group(0)!r}")

    if prompt_tokens >= L2_PROMPT_TOKENS:
        return Classification(RoutingTier.L2, f"L2: prompt ~{prompt_tokens} tokens >= {L2_PROMPT_TOKENS}")
    if n_messages > L2_MESSAGES:
        return Classification(RoutingTier.L2, f"L2: {n_messages} messages > {L2_MESSAGES}")
    if out is not None and out >= L2_MAX_OUTPUT:
        return Classification(RoutingTier.L2, f"L2: max output {out} >= {L2_MAX_OUTPUT}")
    if m := _AGGREGATION.search(text):
        return Classification(RoutingTier.L2, f"L2: aggregation hint {m.group(0)!r}")
    return Classification(RoutingTier.L0, "L0: short lookup")
