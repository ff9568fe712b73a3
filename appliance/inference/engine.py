"""One llama.cpp model instance and the operations the embedded backend needs from it.

This is the code that touches llama.cpp's native library. It runs inside an engine worker process
(`appliance.inference.worker`), never in the web process, so a native crash costs one worker; the
in-process use left is the benchmark's baseline arm and the tests that compare against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import InferenceError, InvalidInput
from appliance.inference.base import Delta, Message, Usage

ROLES = ("interactive", "background", "embedding")
"""What an instance is for: interactive requests, batch items, or embeddings."""


@dataclass(frozen=True)
class LocalModel:
    """A GGUF file the embedded engine serves under `name`."""

    name: str
    path: Path
    chat_format: str | None = None


def system_info() -> str:
    """llama.cpp's own report of the CPU features it was built with and found."""
    import llama_cpp  # deferred: the native library loads only where a model runs

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class LlamaInstance:
    """A loaded model: chat generation, constrained-choice scoring and embeddings."""

    def __init__(self, model: LocalModel, *, threads: int, context: int, role: str) -> None:
        import llama_cpp  # deferred: the native library loads only where a model runs

        if role not in ROLES:
            raise ValueError(f"unknown role '{role}'")
        if not model.path.is_file():
            raise FileNotFoundError(f"model file for '{model.name}' is missing: {model.path}")
        # A chat model has no pooling of its own: mean-pool the token vectors.
        embedding: dict[str, Any] = (
            {"embedding": True, "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN}
            if role == "embedding"
            else {}
        )
        self.model = model
        self.role = role
        self.llama: Any = llama_cpp.Llama(
            model_path=str(model.path),
            n_ctx=context,
            n_threads=threads,
            chat_format=model.chat_format,
            verbose=False,
            **embedding,
        )

    def close(self) -> None:
        """Free the model's memory."""
        self.llama.close()

    def stream_chat(
        self,
        *,
        messages: list[Message],
        max_tokens: int,
        temperature: float,
        json_schema: dict[str, Any] | None,
        timeout_s: float,
        cancelled: Callable[[], bool] = lambda: False,
        between_steps: Callable[[], float] | None = None,
    ) -> Iterator[Delta]:
        """Generate, one delta per token, then a last delta with usage and finish reason.

        Stops early when `cancelled()` turns true or `timeout_s` runs out; `between_steps`
        (background work) is called after each token and returns the seconds it paused, which
        do not count against the time limit.
        """
        llama = self.llama
        args: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        if json_schema is not None:
            args["response_format"] = {"type": "json_object", "schema": json_schema}
        deadline = time.monotonic() + timeout_s
        started = time.perf_counter()
        first: float | None = None
        completion_tokens = 0
        finish = "stop"
        with engine_errors():
            chunks = llama.create_chat_completion(**args)
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if text:
                        completion_tokens += 1
                        if first is None:
                            first = time.perf_counter()
                        yield Delta(content=text)
                    if cancelled():
                        finish = "cancelled"
                        break
                    if time.monotonic() > deadline:
                        finish = "timeout"
                        break
                    if between_steps is not None:
                        # Time spent giving way to interactive requests does not count as slow.
                        deadline += between_steps()
            finally:
                chunks.close()
        total = time.perf_counter() - started
        # The context now holds the prompt and every generated token that was evaluated. A
        # generation that ends on an end-of-turn token has evaluated all its text tokens; one cut
        # short (max_tokens, cancel, timeout) stops right after sampling its last token, which is
        # never evaluated.
        pending = 1 if finish != "stop" and completion_tokens else 0
        yield Delta(
            content="",
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=max(int(llama.n_tokens) - completion_tokens + pending, 0),
                completion_tokens=completion_tokens,
                ttft_s=(first - started) if first is not None else total,
                total_s=total,
            ),
        )

    def score_choices(
        self,
        messages: list[Message],
        choices: list[str],
        *,
        between_steps: Callable[[], object] | None = None,
    ) -> dict[str, float]:
        """Log-probability of each of `choices` as the answer (constrained-choice scoring)."""
        from appliance.inference.choice import score_choices_sync  # deferred: loads numpy

        with engine_errors():
            return score_choices_sync(
                self.llama,
                self.model.chat_format,
                messages,
                choices,
                between_steps=between_steps,
            )

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One mean-pooled vector per text; an input longer than one batch is refused."""
        llama = self.llama
        limit = int(llama.n_batch)
        for index, text in enumerate(texts):
            count = len(llama.tokenize(text.encode("utf-8"), add_bos=True))
            if count > limit:
                raise InvalidInput(
                    f"input {index} is {count} tokens; '{self.model.name}' embeds at most {limit}",
                    field="input",
                )
        with engine_errors():
            vectors = llama.embed(texts)
        return [[float(x) for x in vector] for vector in vectors]

    def smoke(self) -> None:
        """Generate one token (or embed one word): proof the build works on this CPU."""
        if self.role == "embedding":
            self.embed(["ready"])
            return
        for _ in self.stream_chat(
            messages=[Message("user", "Say OK.")],
            max_tokens=1,
            temperature=0.0,
            json_schema=None,
            timeout_s=60.0,
        ):
            pass


@contextmanager
def engine_errors() -> Iterator[None]:
    """Map llama.cpp's exceptions into the error tree without echoing any prompt text."""
    try:
        yield
    except (InferenceError, InvalidInput):
        raise
    except ValueError as exc:
        if "context window" in str(exc):
            raise InvalidInput(
                "the messages do not fit the model's context window", field="messages"
            ) from exc
        raise InferenceError(f"generation failed ({type(exc).__name__})") from exc
    except Exception as exc:
        raise InferenceError(f"generation failed ({type(exc).__name__})") from exc
