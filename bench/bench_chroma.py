"""Benchmark of the Chroma semantic memory: add throughput, query latency, recall@10.

    python bench/bench_chroma.py                      # 10k and 100k documents (several minutes)
    python bench/bench_chroma.py --sizes 10000        # the small set only

What is measured, exactly (per size N, in a fresh PersistentClient directory, with
the experiments collection created by NeonBlue's own store, so with its HNSW settings
and embedding function):

- corpus: R = min(N, --real-docs [3000]) experiment descriptions generated from templates and
  embedded by the real model (all-MiniLM-L6-v2, CPU), plus N - R synthetic unit vectors,
  each a random convex mixture of three real embeddings plus Gaussian noise, renormalised
  (embedding 100k sentences on 2 cores takes longer than the whole bench may). They lie
  in the same region of the space as real sentence embeddings, but their neighbourhoods
  are an approximation of a real 100k corpus, not a sample of one.
- embed docs/s: the model's batched throughput on the R real documents.
- add docs/s: Chroma `add` of precomputed vectors + a short document + metadata, in
  batches of 2000: the index part of a write, without embedding.
- store docs/s: `ChromaService.sync_from_registry` of 200 new experiment records into the
  filled collection: validation, text building, dedupe check, embedding and indexing.
- query p50/p99: `ChromaService.semantic_experiment_search(text, n_results=10)` for held-out
  query sentences; includes the query embedding (one sentence, ≈10 ms of it), filter
  validation, the HNSW search and fetching documents and metadata.
- hnsw p50: `collection.query` with the precomputed query vector (the index alone).
- recall@10: overlap of the service's top 10 with the exact top 10 by brute force
  (numpy, cosine) over the same stored vectors and the same query vectors.
- stress rows (--stress-size, default 10000): isotropic random unit vectors, the worst case
  for HNSW (no structure at all), with Chroma's defaults and with NeonBlue's settings.

Timings depend on what else runs on the machine; recall does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio  # noqa: E402
import numpy as np  # noqa: E402

from mcp_servers.chroma import DEFAULT_HNSW, open_service  # noqa: E402
from mcp_servers.chroma.embeddings import embed_texts, load_sentence_model  # noqa: E402

AREAS = [
    "checkout flow", "pricing page", "onboarding tour", "signup form", "search results page",
    "product recommendations", "email subject lines", "push notification timing", "support chatbot system prompt",
    "LLM model routing", "paywall modal", "product detail page", "shopping cart", "homepage hero banner",
    "navigation menu", "free trial length", "annual plan discount", "retrieval top-k for RAG answers",
    "agent tool retry policy", "summarisation prompt", "in-app survey", "referral program", "cancellation flow",
    "account settings page", "mobile app tab bar", "search autocomplete", "shipping cost display",
    "loyalty points banner", "video player autoplay", "dark mode default",
]
CHANGES = [
    "reducing the number of steps", "adding social proof badges", "changing the call-to-action color",
    "personalising the content", "shortening the copy", "adding a progress indicator", "changing the default option",
    "adding few-shot examples", "switching to a smaller faster model", "lowering the sampling temperature",
    "showing prices with charm pricing", "delaying the modal by five minutes", "using a single-page layout",
    "removing optional form fields", "adding express payment buttons", "highlighting the most popular plan",
    "sending at the recipient's local morning", "adding an emoji to the subject", "increasing retrieved chunks from 5 to 10",
    "retrying failed tool calls with backoff", "adding chain-of-thought instructions", "showing a countdown timer",
    "using larger product images", "offering guest checkout", "lazy loading below-the-fold images",
]
SEGMENTS = [
    "mobile users", "new visitors", "returning customers", "enterprise admins", "free-tier users", "users in Germany",
    "power users", "trial users", "tablet shoppers", "developers using the API", "small business owners", "students",
]
METRICS = [
    "conversion rate", "seven-day retention", "revenue per user", "click-through rate", "ticket resolution rate",
    "p95 latency", "average order value", "trial-to-paid conversion", "churn rate", "answer accuracy",
]
INDUSTRIES = ["ecommerce", "saas", "fintech", "media", "travel", "education", "healthcare", "gaming"]
QUERY_TEMPLATES = [
    "What happened when we tried {c} on the {a}?", "experiments about the {a} for {s}", "did {c} improve {m}?",
    "{a} tests in {i} that changed {m}", "{c} for {s}",
]
OUTCOMES = ["success", "failure", "neutral"]


def pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def experiment_sentence(rng: np.random.Generator) -> str:
    return (f"A/B test on the {pick(rng, AREAS)} for {pick(rng, SEGMENTS)} in {pick(rng, INDUSTRIES)}: "
            f"{pick(rng, CHANGES)}. Primary metric {pick(rng, METRICS)}; result {rng.normal(4, 9):+.1f}% "
            f"with p-value {rng.uniform(0.0005, 0.6):.3f}.")


def query_sentence(rng: np.random.Generator) -> str:
    return pick(rng, QUERY_TEMPLATES).format(a=pick(rng, AREAS), c=pick(rng, CHANGES), s=pick(rng, SEGMENTS),
                                             m=pick(rng, METRICS), i=pick(rng, INDUSTRIES))


def synthetic_vectors(base: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.03) -> np.ndarray:
    idx = rng.integers(len(base), size=(n, 3))
    weights = rng.dirichlet([2.0, 1.0, 1.0], size=n).astype(np.float32)
    vectors = (weights[:, :, None] * base[idx]).sum(axis=1)
    vectors += noise * rng.standard_normal(vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def random_unit_vectors(n: int, rng: np.random.Generator, dim: int = 384) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def exact_top10(queries: np.ndarray, vectors: np.ndarray) -> list[set[int]]:
    truth = []
    for start in range(0, len(queries), 50):
        sims = queries[start:start + 50] @ vectors.T
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        truth.extend(set(map(int, row)) for row in top)
    return truth


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def add_vectors(collection, vectors: np.ndarray, documents: list[str], rng: np.random.Generator,
                batch: int = 2000) -> float:
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        stop = min(len(vectors), start + batch)
        collection.add(
            ids=[f"exp-{i}" for i in range(start, stop)],
            embeddings=vectors[start:stop],
            documents=documents[start:stop],
            metadatas=[{"experiment_key": f"exp-{i}", "outcome": OUTCOMES[i % 3], "sample_size": int(rng.integers(100, 50_000))}
                       for i in range(start, stop)],
        )
    return time.perf_counter() - started


async def bench_size(n: int, real_vectors: np.ndarray, real_docs: list[str], queries: list[str],
                     query_vectors: np.ndarray, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    rng = np.random.default_rng(n)
    r = min(n, len(real_vectors))
    vectors = np.concatenate([real_vectors[:r], synthetic_vectors(real_vectors, n - r, rng)]) if n > r else real_vectors[:n]
    documents = real_docs[:r] + [f"synthetic experiment vector {i}" for i in range(r, n)]
    path = workdir / f"chroma_{n}"
    async with open_service(path=path) as service:
        collection = service.store.collection("experiments")  # same collection the tools use
        add_seconds = add_vectors(collection, vectors, documents, rng)
        print(f"  [{n}] added {n} vectors in {add_seconds:.1f} s", file=sys.stderr, flush=True)

        truth = exact_top10(query_vectors, vectors)
        for text in queries[:5]:  # warm-up
            await service.semantic_experiment_search(text, n_results=10)
        latencies, recalls = [], []
        for text, expected in zip(queries, truth, strict=True):
            started = time.perf_counter()
            result = await service.semantic_experiment_search(text, n_results=10)
            latencies.append((time.perf_counter() - started) * 1000)
            recalls.append(len({int(hit.id.split("-")[1]) for hit in result.hits} & expected) / 10)
        hnsw_only, hnsw_recalls = [], []
        for vector, expected in zip(query_vectors, truth, strict=True):
            started = time.perf_counter()
            ids = collection.query(query_embeddings=[vector], n_results=10, include=[])["ids"][0]
            hnsw_only.append((time.perf_counter() - started) * 1000)
            hnsw_recalls.append(len({int(i.split("-")[1]) for i in ids} & expected) / 10)

        # last, so the new records do not take places in the top 10 compared above
        new_records = [{"key": f"new-{i}", "name": experiment_sentence(rng), "type": "ui"} for i in range(200)]
        started = time.perf_counter()
        report = await service.sync_from_registry(new_records)
        store_seconds = time.perf_counter() - started
        assert report.created == 200, report
    shutil.rmtree(path, ignore_errors=True)
    return {
        "n": n, "real": r, "add_per_s": n / add_seconds, "store_per_s": 200 / store_seconds,
        "p50": statistics.median(latencies), "p99": percentile(latencies, 99),
        "hnsw_p50": statistics.median(hnsw_only), "recall": float(np.mean(recalls)),
        "hnsw_recall": float(np.mean(hnsw_recalls)),
    }


def bench_stress(n: int, hnsw: dict, workdir: Path, label: str, n_queries: int) -> dict[str, float]:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    rng = np.random.default_rng(7)
    vectors, queries = random_unit_vectors(n, rng), random_unit_vectors(n_queries, rng)
    path = workdir / f"stress_{label}"
    client = chromadb.PersistentClient(str(path), settings=ChromaSettings(anonymized_telemetry=False))
    collection = client.create_collection("stress", configuration={"hnsw": hnsw}, embedding_function=None)
    add_seconds = add_vectors(collection, vectors, [""] * n, rng)
    truth = exact_top10(queries, vectors)
    latencies, recalls = [], []
    for vector, expected in zip(queries, truth, strict=True):
        started = time.perf_counter()
        ids = collection.query(query_embeddings=[vector], n_results=10, include=[])["ids"][0]
        latencies.append((time.perf_counter() - started) * 1000)
        recalls.append(len({int(i.split("-")[1]) for i in ids} & expected) / 10)
    client.close()
    shutil.rmtree(path, ignore_errors=True)
    return {"n": n, "label": label, "add_per_s": n / add_seconds, "hnsw_p50": statistics.median(latencies),
            "hnsw_p99": percentile(latencies, 99), "recall": float(np.mean(recalls))}


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    load_before = os.getloadavg()[0]
    bench_started = time.perf_counter()
    rng = np.random.default_rng(42)
    started = time.perf_counter()
    load_sentence_model()
    load_seconds = time.perf_counter() - started
    n_real = min(max(sizes), args.real_docs)
    real_docs = [experiment_sentence(rng) for _ in range(n_real)]
    queries = [query_sentence(rng) for _ in range(args.queries)]
    print(f"embedding {n_real} real documents and {len(queries)} queries…", file=sys.stderr, flush=True)
    started = time.perf_counter()
    real_vectors = embed_texts(real_docs)
    embed_per_s = n_real / (time.perf_counter() - started)
    query_vectors = embed_texts(queries)
    single = []
    for text in queries[:50]:
        t0 = time.perf_counter()
        embed_texts([text])
        single.append((time.perf_counter() - t0) * 1000)

    workdir = Path(tempfile.mkdtemp(prefix="bench_chroma_"))
    rows = []
    try:
        for n in sizes:
            print(f"size {n}…", file=sys.stderr, flush=True)
            rows.append(await bench_size(n, real_vectors, real_docs, queries, query_vectors, args, workdir))
        stress = []
        if args.stress_size:
            print(f"stress: {args.stress_size} random unit vectors…", file=sys.stderr, flush=True)
            defaults = {"space": "cosine", "max_neighbors": 16, "ef_construction": 100, "ef_search": 100}
            stress.append(bench_stress(args.stress_size, defaults, workdir, "chroma defaults", args.queries))
            stress.append(bench_stress(args.stress_size, dict(DEFAULT_HNSW), workdir, "neonblue", args.queries))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    hnsw = ", ".join(f"{k}={v}" for k, v in DEFAULT_HNSW.items())
    print(f"\nChroma semantic memory — all-MiniLM-L6-v2 on CPU ({os.cpu_count()} cores), HNSW {hnsw}")
    print(f"machine load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"(timings slow down when it exceeds the core count); bench ran {time.perf_counter() - bench_started:.0f} s")
    print(f"model load {load_seconds:.1f} s; batch embedding {embed_per_s:.0f} docs/s; "
          f"one query embedding p50 {statistics.median(single):.1f} ms")
    print(f"\n{'docs':>8} {'real':>6} {'add docs/s':>11} {'store docs/s':>13} {'query p50':>10} {'query p99':>10} "
          f"{'hnsw p50':>9} {'recall@10':>10} {'hnsw recall':>12}")
    for row in rows:
        print(f"{row['n']:>8} {row['real']:>6} {row['add_per_s']:>11.0f} {row['store_per_s']:>13.0f} "
              f"{row['p50']:>8.1f}ms {row['p99']:>8.1f}ms {row['hnsw_p50']:>7.2f}ms {row['recall']:>10.3f} "
              f"{row['hnsw_recall']:>12.3f}")
    print("  add = index only (precomputed vectors); store = sync_from_registry incl. embedding;"
          " query = semantic_experiment_search incl. the query embedding")
    if stress:
        print(f"\nstress: isotropic random unit vectors (worst case), {args.stress_size} docs, index only")
        print(f"{'settings':>16} {'add docs/s':>11} {'hnsw p50':>9} {'hnsw p99':>9} {'recall@10':>10}")
        for row in stress:
            print(f"{row['label']:>16} {row['add_per_s']:>11.0f} {row['hnsw_p50']:>7.2f}ms {row['hnsw_p99']:>7.2f}ms "
                  f"{row['recall']:>10.3f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Chroma semantic memory benchmark (see the module docstring).")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes (default 10000,100000)")
    parser.add_argument("--real-docs", type=int, default=3000, help="documents embedded by the real model (default 3000)")
    parser.add_argument("--queries", type=int, default=200, help="held-out query sentences (default 200)")
    parser.add_argument("--stress-size", type=int, default=10000, help="random-vector stress corpus; 0 skips it")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse_args())
