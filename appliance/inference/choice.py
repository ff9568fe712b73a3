"""Constrained-choice scoring on the embedded engine: the log-probability of each closed answer.

Used for classification confidence and the router model's verdict. The prompt is formatted with
the model's own chat template, evaluated once, and each choice's tokens are scored by rolling the
context back to the end of the prompt between choices (llama.cpp keeps the prompt's KV cache).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.inference.base import Message


def _prompt(llama: Any, chat_format: str | None, messages: list[Message]) -> tuple[str, bool]:
    """The formatted prompt text, and whether it already carries the BOS token."""
    from llama_cpp import llama_chat_format  # deferred: the native library, in workers only

    payload: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
    template = llama.metadata.get("tokenizer.chat_template")
    if chat_format is None and template:
        eos = llama._model.token_get_text(llama.token_eos()) if llama.token_eos() != -1 else ""
        bos = llama._model.token_get_text(llama.token_bos()) if llama.token_bos() != -1 else ""
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos
        )
        result = formatter(messages=payload)
    else:
        formatter_fn = getattr(llama_chat_format, f"format_{chat_format or 'chatml'}")
        result = formatter_fn(messages=payload)
    return result.prompt, bool(result.added_special)


def _log_softmax(logits: Any) -> Any:
    shifted = logits - np.max(logits)
    return shifted - math.log(float(np.sum(np.exp(shifted))))


_PROMPT_STEP = 32
"""Prompt tokens evaluated per step when `between_steps` is given (a pause point per step)."""


def score_choices_sync(
    llama: Any,
    chat_format: str | None,
    messages: list[Message],
    choices: list[str],
    *,
    between_steps: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Sum of token log-probabilities of each choice as the answer's first tokens.

    `between_steps` (background work) is called between evaluation steps, so the caller can
    pause there while more urgent work uses the cores.
    """
    text, has_bos = _prompt(llama, chat_format, messages)
    prompt = llama.tokenize(text.encode("utf-8"), add_bos=not has_bos, special=True)
    n_vocab = llama.n_vocab()

    def last_logits() -> Any:
        return np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(n_vocab,)).copy()

    llama.reset()
    if between_steps is None:
        llama.eval(prompt)
    else:
        for start in range(0, len(prompt), _PROMPT_STEP):
            between_steps()
            llama.eval(prompt[start : start + _PROMPT_STEP])
    after_prompt = _log_softmax(last_logits())
    scores: dict[str, float] = {}
    for choice in choices:
        tokens = llama.tokenize(choice.encode("utf-8"), add_bos=False, special=False)
        # Roll back to the end of the prompt; `eval` drops the KV cache past `n_tokens`.
        llama.n_tokens = len(prompt)
        total = float(after_prompt[tokens[0]])
        for previous, token in itertools.pairwise(tokens):
            if between_steps is not None:
                between_steps()
            llama.eval([previous])
            total += float(_log_softmax(last_logits())[token])
        scores[choice] = total
    # Leave no half-scored state for the next generation's prefix match.
    llama.n_tokens = len(prompt)
    return scores
