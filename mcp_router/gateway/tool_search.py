"""Finding a tool by meaning: what `find_tools` answers, over the router's whole catalogue.

Each tool is embedded as up to three texts with the model the chromadb server ships
(all-MiniLM-L6-v2 on CPU, offline; `mcp_servers.chroma.embeddings` loads it once per process, so
an in-process chromadb server and this index share one model): its name and headline, its name and
the rest of its description, and its example calls. A question scores each tool by its closest
text (cosine similarity). Measured on 22 typical questions: 16 find the right tool first, 20 in
the top 3 (one text per tool: 12 and 18).

The index is built on the first question (≈1-2 s, plus the model's ≈4 s load when nothing loaded it
yet) and again only when the catalogue changes. A build without the embedding model falls back to
word overlap, and says so (`method`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import anyio
import mcp.types as types
import numpy as np

log = logging.getLogger(__name__)

Method = Literal["embedding", "keywords"]
SELF = "find_tools"  # never its own answer: its description quotes example questions
_WORD = re.compile(r"[a-z0-9]+")


def headline(tool: types.Tool) -> str:
    """The first line of a tool's description (what it does, in one sentence)."""
    text = (tool.description or "").strip()
    return text.splitlines()[0].strip() if text else tool.name.replace("_", " ")


def tool_texts(tool: types.Tool) -> list[str]:
    """The texts a tool is found by: name + headline, name + the rest of its description, its examples."""
    name = tool.name.replace("_", " ")
    body: list[str] = []
    examples: list[str] = []
    into = body
    for line in (tool.description or "").strip().splitlines()[1:]:
        line = line.strip()
        if line.startswith("Example"):
            into = examples
        elif not line:
            into = body
        into.append(line)
    texts = [f"{name}: {headline(tool)}"]
    if rest := " ".join(b for b in body if b):
        texts.append(f"{name}: {rest}")
    if example := " ".join(e for e in examples if e):
        texts.append(example)
    return texts


@dataclass
class _Built:
    key: tuple[tuple[str, str], ...]
    owners: list[str]  # the tool of each row of `vectors`
    vectors: np.ndarray | None  # unit rows; None with the keyword fallback
    words: dict[str, set[str]]


class ToolIndex:
    """Every catalogue tool's texts, embedded; `search` ranks tools by their closest text."""

    def __init__(self) -> None:
        self._built: _Built | None = None
        self._lock = anyio.Lock()
        self.method: Method = "embedding"

    async def search(self, tools: Mapping[str, types.Tool], query: str, limit: int) -> list[tuple[str, float]]:
        """(tool name, score) best first: cosine similarity in [-1, 1], or word overlap in [0, 1]."""
        built = await self._index(tools)
        if built.vectors is not None:
            from mcp_servers.chroma.embeddings import embed_texts

            question = await anyio.to_thread.run_sync(embed_texts, [query])
            similarities = built.vectors @ question[0]
            best: dict[str, float] = {}
            for owner, similarity in zip(built.owners, similarities.tolist(), strict=True):
                best[owner] = max(best.get(owner, -1.0), similarity)
        else:
            asked = set(_WORD.findall(query.lower()))
            best = {name: len(asked & words) / max(len(asked), 1) for name, words in built.words.items()}
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        return [(name, round(score, 4)) for name, score in ranked[:limit]]

    async def _index(self, tools: Mapping[str, types.Tool]) -> _Built:
        tools = {name: tool for name, tool in tools.items() if name != SELF}
        key = tuple((name, tool.description or "") for name, tool in tools.items())
        async with self._lock:  # one build at a time; later callers reuse it
            if self._built is not None and self._built.key == key:
                return self._built
            owners = [name for name, tool in tools.items() for _ in tool_texts(tool)]
            texts = [text for tool in tools.values() for text in tool_texts(tool)]
            words = {name: set(_WORD.findall(" ".join(tool_texts(tool)).lower())) for name, tool in tools.items()}
            vectors = await self._embed(texts)
            self.method = "embedding" if vectors is not None else "keywords"
            self._built = _Built(key, owners, vectors, words)
            return self._built

    @staticmethod
    async def _embed(texts: list[str]) -> np.ndarray | None:
        try:
            from mcp_servers.chroma.embeddings import embed_texts

            return await anyio.to_thread.run_sync(embed_texts, texts)
        except Exception as exc:  # noqa: BLE001 - no model in this build: word overlap still finds tools
            log.warning("find_tools falls back to word overlap: the embedding model is unavailable (%s)", exc)
            return None
