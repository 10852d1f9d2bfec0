"""The test server of ``openai_server.py``, also answering interpretation prompts.

An interpretation prompt (ours: ``<sample>...</sample>`` blocks under
``POSITIVE SAMPLES:`` and ``NEGATIVE SAMPLES:``; the reference package's: Python
lists between dashed lines) is answered by ``interpret(positives, negatives) -> str``,
by default ``- "mentions the word X"`` for the word found in the most positive
samples and the fewest negative ones. Annotation prompts are answered as in
:class:`FakeOpenAIServer` (a concept's last word decides), so the default
interpretation is annotated as that word's presence.

Run standalone: ``python tests/interp_server.py --latency 0.05`` prints the URL.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import threading
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_server import FakeOpenAIServer, _content_text

_OURS = re.compile(r"POSITIVE SAMPLES:\n(.*?)\n\nNEGATIVE SAMPLES:\n(.*?)\n\n", re.DOTALL)
_SAMPLE = re.compile(r"<sample>(.*?)</sample>", re.DOTALL)
_REF = re.compile(
    r"POSITIVE SAMPLES:\n-+\n(.*?)\n-+\n\nNEGATIVE SAMPLES:\n-+\n(.*?)\n-+\n", re.DOTALL
)
_TOKEN = re.compile(r"[a-z]{3,}")
_STOP = {"the", "and", "was", "were", "with", "for", "this", "that", "review"}


def parse_interpretation_prompt(prompt: str) -> tuple[list[str], list[str]] | None:
    """(positives, negatives) of an interpretation prompt, or None for other prompts."""
    m = _REF.search(prompt)  # first: our pattern would also match the reference's text
    if m:
        return list(ast.literal_eval(m[1])), list(ast.literal_eval(m[2]))
    m = _OURS.search(prompt)
    if m:
        return _SAMPLE.findall(m[1]), _SAMPLE.findall(m[2])
    return None


def contrastive_word(positives: list[str], negatives: list[str]) -> str:
    """``- "mentions the word X"`` for the most contrastive word X."""
    pos = Counter(w for t in positives for w in set(_TOKEN.findall(t.lower())) - _STOP)
    neg = Counter(w for t in negatives for w in set(_TOKEN.findall(t.lower())) - _STOP)
    if not pos:
        return '- "is short"'
    word = max(sorted(pos), key=lambda w: pos[w] - neg[w])
    return f'- "mentions the word {word}"'


def varied_contrastive_word(positives: list[str], negatives: list[str]) -> str:
    """Like :func:`contrastive_word`, but the 1st, 2nd or 3rd best word, chosen by a
    hash of the negative samples, so draws with other negatives give other candidates."""
    pos = Counter(w for t in positives for w in set(_TOKEN.findall(t.lower())) - _STOP)
    neg = Counter(w for t in negatives for w in set(_TOKEN.findall(t.lower())) - _STOP)
    if not pos:
        return '- "is short"'
    ranked = sorted(sorted(pos), key=lambda w: pos[w] - neg[w], reverse=True)
    rank = zlib.crc32("\n".join(sorted(negatives)).encode()) % min(3, len(ranked))
    return f'- "mentions the word {ranked[rank]}"'


class InterpretingServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` that also answers interpretation prompts.

    Parameters
    ----------
    interpret : callable, default=contrastive_word
        ``interpret(positives, negatives) -> str``, the answer text.
    **kwargs
        As for :class:`FakeOpenAIServer`.
    """

    def __init__(self, *, interpret=contrastive_word, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interpret = interpret
        self.interpretation_prompts: list[tuple[list[str], list[str]]] = []

    def _answer_text(self, messages: list[dict], req: dict) -> str:
        prompt = "\n".join(_content_text(m.get("content")) for m in messages)
        parsed = parse_interpretation_prompt(prompt)
        if parsed is None:
            return super()._answer_text(messages, req)
        with self._lock:
            self.interpretation_prompts.append(parsed)
        return self.interpret(*parsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server (interpretation)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--vary", action="store_true", help="answer with the 1st-3rd best word (hash of negatives)"
    )
    args = parser.parse_args(argv)
    interpret = varied_contrastive_word if args.vary else contrastive_word
    server = InterpretingServer(latency=args.latency, port=args.port, interpret=interpret).start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
