"""Run extraction in a short-lived child process with a time limit and a memory cap.

A parser stuck on a hostile file cannot be stopped inside the server's own process (threads are
not killable), and a decompression bomb would take the server's memory with it. The child gets an
address-space limit and is killed when the deadline passes; either way the caller gets a 422.
Children fork from a `forkserver` that has the parsers imported, so each start is cheap and no
child inherits the server's threads or open model files.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import resource
from typing import Any

from appliance.documents.extract import Extracted, ExtractionError, Kind, Limits, extract, sniff

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["appliance.documents.extract", "pypdf", "docx"])


def _child(
    connection: multiprocessing.connection.Connection,
    data: bytes,
    filename: str | None,
    limits: Limits,
    memory_bytes: int,
) -> None:
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        kind = sniff(data, filename)
        result = extract(data, kind, limits)
        connection.send(("ok", result.kind, result.text, result.pages))
    except ExtractionError as exc:
        connection.send(("error", str(exc)))
    except MemoryError:
        connection.send(("error", "the file needs more memory than allowed to read"))
    except BaseException as exc:  # the child reports everything; the parent decides
        connection.send(("error", f"the file could not be read ({type(exc).__name__})"))
    finally:
        connection.close()


def extract_isolated(
    data: bytes,
    filename: str | None,
    limits: Limits,
    *,
    timeout_s: float,
    memory_bytes: int,
) -> Extracted:
    """Sniff and extract `data` in a child process; blocking (call it from a worker thread)."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(
        target=_child, args=(send, data, filename, limits, memory_bytes), daemon=True
    )
    process.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise ExtractionError(f"reading the file took longer than {timeout_s:g} s")
        try:
            message: tuple[Any, ...] = receive.recv()
        except (EOFError, OSError):
            raise ExtractionError("the file could not be read (the reader stopped)") from None
    finally:
        receive.close()
        if process.is_alive():
            process.kill()
        process.join(5)
        process.close()
    if message[0] == "error":
        raise ExtractionError(str(message[1]))
    kind: Kind = message[1]
    return Extracted(kind, str(message[2]), message[3])
