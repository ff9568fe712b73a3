"""PII detection in warm worker processes, so that concurrent requests use every core.

Analysis is CPU-bound Python (spaCy, regexes) and holds the interpreter lock: in the web
process's threads two requests take turns on one core. `DetectorPool` keeps `processes` workers
that each load the detector once (`load_detector`) and answer `analyze` / `analyze_many` with the
same findings the in-process detector gives. The web process sends the text and the policy's
detection spec over a pipe and gets findings back; nothing is written anywhere else.

Failure is closed: a worker that dies (a native crash, the kernel's OOM killer) fails the
requests it and its siblings held with `DetectorUnavailable`, so nothing reaches a model, and
the pool starts fresh workers for the next request. Workers exit when the web process is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from appliance.errors import DetectorUnavailable
from appliance.pii.detector import (
    DetectionSpec,
    Finding,
    PiiDetector,
    load_detector,
    wanted_entities,
)

log = logging.getLogger(__name__)

# How often a worker checks that the process that started it is still there.
_PARENT_CHECK_S = 1.0

_worker_detector: PiiDetector | None = None
_worker_error = "the detector process has no detector loaded"


def _start_worker(spacy_model: str, phone_regions: tuple[str, ...], parent: int) -> None:
    """Load and warm the detector in this worker; exit once the web process is gone. A load
    that fails is kept as the answer to every request (an initializer that raised would only
    say that the pool broke, not why)."""
    global _worker_detector, _worker_error

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    try:
        _worker_detector = load_detector(spacy_model, phone_regions)
    except DetectorUnavailable as exc:
        _worker_error = exc.message


def _detector() -> PiiDetector:
    if _worker_detector is None:
        raise DetectorUnavailable(_worker_error)
    return _worker_detector


def _describe() -> tuple[int, frozenset[str]]:
    return os.getpid(), _detector().supported_entities


def _analyze(text: str, spec: DetectionSpec) -> tuple[int, list[Finding]]:
    return os.getpid(), _detector().analyze(text, spec)


def _analyze_many(texts: list[str], spec: DetectionSpec) -> tuple[int, list[list[Finding]]]:
    return os.getpid(), _detector().analyze_many(texts, spec)


class DetectorPool:
    """`processes` warm detector processes behind the in-process detector's interface."""

    def __init__(self, spacy_model: str, phone_regions: tuple[str, ...], *, processes: int) -> None:
        if processes < 1:
            raise ValueError("a detector pool needs at least one process")
        self.spacy_model = spacy_model
        self.phone_regions = phone_regions
        self.processes = processes
        # Which worker answered how many requests (by process id): the pool's own evidence
        # that concurrent requests spread over its processes.
        self.served_by: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._executor = self._start()
        self.supported_entities: frozenset[str] = frozenset()
        self.supported_entities = self._warm()

    def _start(self) -> ProcessPoolExecutor:
        # Spawned, not forked: the web process has threads (and an event loop) that a fork
        # would copy in whatever state they are in.
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.spacy_model, self.phone_regions, os.getpid()),
        )

    def _warm(self) -> frozenset[str]:
        """Start every worker now (one task each, submitted together) and wait until each has
        loaded its detector, so the first requests do not pay for loading."""
        try:
            futures = [self._executor.submit(_describe) for _ in range(self.processes)]
            described = [future.result() for future in futures]
        except Exception as exc:
            self._executor.shutdown(wait=False, cancel_futures=True)
            if isinstance(exc, DetectorUnavailable):
                raise
            raise DetectorUnavailable(f"PII detector processes failed to start: {exc}") from exc
        return described[0][1]

    def warm(self) -> None:
        """The workers are warmed when the pool starts (kept for the detector's interface)."""

    def analyze(self, text: str, spec: DetectionSpec) -> list[Finding]:
        """Findings in `text`, from one of the workers."""
        if self._asks_nothing(spec):
            return []
        found: list[Finding] = self._call(_analyze, text, spec)
        return found

    def analyze_many(self, texts: list[str], spec: DetectionSpec) -> list[list[Finding]]:
        """Findings per text of one conversation, from one of the workers."""
        if self._asks_nothing(spec):
            return [[] for _ in texts]
        found: list[list[Finding]] = self._call(_analyze_many, texts, spec)
        return found

    def _asks_nothing(self, spec: DetectionSpec) -> bool:
        """A spec that names only entities no recognizer finds: answered here, as the worker's
        detector would answer it, without a trip to a worker."""
        return bool(spec.entities) and not wanted_entities(spec, self.supported_entities)

    def _call(self, function: Any, *args: Any) -> Any:
        executor = self._executor
        try:
            pid, result = executor.submit(function, *args).result()
        except BrokenProcessPool as exc:
            self._restart(executor)
            raise DetectorUnavailable(
                "a PII detector process stopped; nothing was sent (it is being restarted)"
            ) from exc
        with self._lock:
            self.served_by[pid] += 1
        return result

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        """Replace a broken executor once, however many requests saw it break."""
        with self._lock:
            if self._executor is not broken:
                return
            log.error("a PII detector process stopped; starting new ones")
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()

    def close(self) -> None:
        """Stop the workers (the web process is shutting down)."""
        with self._lock:
            self._executor.shutdown(wait=False, cancel_futures=True)
