"""A small HTTP wrapper around presidio-analyzer or presidio-anonymizer for `make bench-peer`.

Presidio's PyPI packages do not ship the HTTP service of its docker images, and LiteLLM's
Presidio guardrail talks to that service. This wrapper serves the same wire format on loopback:
`POST /analyze` (the analyzer's request fields, a JSON list of results) and `POST /anonymize`
(`text`, `analyzer_results`, optional `anonymizers`; `{"text", "items"}` back), plus `GET /health`.
It stands in for the docker images; it is not Presidio's own code, and it is named as such in
PEER.md. It runs in the benchmark's throwaway venv (var/peer-venv), never in the appliance's.

The analyzer's NLP engine is configured explicitly with the small spaCy model the appliance uses
(the docker image defaults to `en_core_web_lg`), so both sides of the comparison read text with
the same pipeline. Request bodies are never logged.

    python tests/bench/presidio_service.py analyzer|anonymizer PORT [SPACY_MODEL]
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Presidio's URL recognizer uses tldextract, which would download the public suffix list.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def analyzer(model: str) -> Any:
    """`POST /analyze` as the analyzer image answers it."""
    from presidio_analyzer import AnalyzerEngine, AnalyzerRequest
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    )
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    engine.analyze(text="Warm up: Jane Doe, jane@example.org.", language="en")

    def handle(body: dict[str, Any]) -> tuple[int, Any]:
        request = AnalyzerRequest(body)
        if not request.text:
            return 400, {"error": "No text provided"}
        if not request.language:
            return 400, {"error": "No language provided"}
        results = engine.analyze(
            text=request.text,
            language=request.language,
            correlation_id=request.correlation_id,
            score_threshold=request.score_threshold,
            entities=request.entities,
            return_decision_process=request.return_decision_process,
            ad_hoc_recognizers=list[Any](request.ad_hoc_recognizers),
            context=request.context,
            allow_list=request.allow_list,
            allow_list_match=request.allow_list_match,
            regex_flags=request.regex_flags,
        )
        return 200, [result.to_dict() for result in results]

    return handle


def anonymizer() -> Any:
    """`POST /anonymize` as the anonymizer image answers it."""
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.services.app_entities_convertor import AppEntitiesConvertor

    engine = AnonymizerEngine()

    def handle(body: dict[str, Any]) -> tuple[int, Any]:
        operators = AppEntitiesConvertor.operators_config_from_json(body.get("anonymizers"))
        if AppEntitiesConvertor.check_custom_operator(operators):
            return 400, {"error": "Custom type anonymizer is not supported"}
        results = AppEntitiesConvertor.analyzer_results_from_json(body.get("analyzer_results"))
        result = engine.anonymize(
            text=body.get("text", ""), analyzer_results=results, operators=operators
        )
        return 200, json.loads(result.to_json())

    return handle


def serve(kind: str, port: int, model: str) -> None:
    handle = analyzer(model) if kind == "analyzer" else anonymizer()
    route = "/analyze" if kind == "analyzer" else "/anonymize"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the images' servers do

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # the stdlib's handler names
            if self.path == "/health":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != route:
                self._reply(404, {"error": "not found"})
                return
            try:
                status, payload = handle(json.loads(raw))
            except Exception as exc:  # the images answer 500 with the error's type, no text
                status, payload = 500, {"error": type(exc).__name__}
            self._reply(status, payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log: nothing about a request leaves the process

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
