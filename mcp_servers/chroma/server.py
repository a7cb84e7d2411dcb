"""The Chroma MCP server: each tool a thin typed adapter over one ChromaService method."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcp_servers.annotations import OVERWRITE, READ_ONLY
from mcp_servers.tool_server import ToolServer
from schemas.vocabulary import limit

from .models import (
    CollectionStats,
    ExperimentAnalysis,
    ExperimentRecord,
    JourneyRecord,
    PatternRecord,
    SearchResult,
    StoredDocument,
    SyncReport,
)
from .service import MAX_QUERY_CHARS, MAX_RESULTS, ChromaService, Registry

INSTRUCTIONS = """\
NeonBlue's semantic memory (ChromaDB + a local sentence-embedding model): past experiments,
user journeys and optimization patterns, searchable by meaning rather than keywords. Use
semantic_experiment_search before designing an experiment ("have we tested shorter checkout on
mobile?"), search_optimization_patterns for lessons that worked or failed, find_similar_user_journeys
for sessions like a given path. Filters (`where`) use Chroma operators on the metadata fields listed
in each tool. Results carry similarity = 1 - cosine distance (higher is closer)."""

Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for, in plain words.")]
Limit = Annotated[int, limit(MAX_RESULTS, "At most this many results (most similar first).")]
Where = Annotated[
    dict[str, Any] | None,
    Field(
        default=None,
        description=(
            "Metadata filter with Chroma operators: $eq $ne $gt $gte $lt $lte $in $nin, $contains/$not_contains "
            "on list fields, $and/$or to combine; {'field': value} means $eq; several fields in one object are "
            "ANDed; timestamps accept ISO dates. Example: {'outcome': 'success', 'lift': {'$gte': 0.05}}"
        ),
    ),
]

# Upserts are OVERWRITE: storing the same record again is a no-op (idempotent), but a changed
# record replaces the stored document with the same id (an overwrite, so not purely additive).


def build_server(service: ChromaService, *, registry: Registry | None = None) -> MCPServer:
    """The MCP server over `service` (tools only; the service's lifetime is the caller's).

    `registry`: a callable returning the registry's experiments (list, iterable or async
    iterable, or an awaitable of a list); sync_from_registry pulls from it when called
    without records.
    """
    if registry is not None:
        service.registry = registry
    mcp = ToolServer("neonblue-chroma", instructions=INSTRUCTIONS)

    @mcp.tool(annotations=OVERWRITE)
    async def store_experiment_context(experiment: ExperimentRecord,
                                       analysis: ExperimentAnalysis | None = None) -> StoredDocument:
        """Store (upsert) an experiment and its result as a searchable document, keyed by the experiment key.

        Call it when an experiment is created or concluded so later searches find it. The
        record becomes a descriptive text (name, description, hypothesis, variants, metrics,
        winner, lift, p-value, confidence, sample size, outcome) and filterable metadata.
        Storing the same record again changes nothing (status 'unchanged'); a changed record
        replaces the previous document (status 'updated'). Outcome (success/failure/neutral)
        is derived from lift and p-value when not given. Returns the stored text and metadata.

        Example: {"experiment": {"key": "checkout-1step", "name": "1-step vs 2-step checkout",
        "hypothesis": "Fewer steps raise mobile conversion", "type": "ui", "industry": "ecommerce",
        "segment": "mobile users", "primary_metric": "checkout_conversion",
        "variants": [{"key": "two_step", "is_control": true}, {"key": "one_step"}]},
        "analysis": {"winner": "one_step", "lift": 0.15, "p_value": 0.003, "sample_size": 12000}}
        """
        return await service.store_experiment_context(experiment, analysis)

    @mcp.tool(annotations=READ_ONLY)
    async def semantic_experiment_search(query: Query, where: Where = None, limit: Limit = 10) -> SearchResult:
        """Find past experiments by meaning, most similar first, with their metadata and similarity.

        Use it to check what was already tried before designing a test, or to gather
        evidence for a recommendation. Wording need not match: "reduce checkout steps on
        mobile" finds "2-step vs 1-step checkout". Filterable fields: experiment_key, name,
        experiment_type, status, industry, user_segment, platform, primary_metric, winner,
        outcome (success|failure|neutral), lift (fraction), p_value, statistical_significance,
        conversion_rate, sample_size, variant_count, tags (list), created_at, concluded_at.

        Example: {"query": "shorter checkout on phones", "where": {"outcome": "success",
        "sample_size": {"$gte": 1000}}, "limit": 5}
        """
        return await service.semantic_experiment_search(query, where, limit)

    @mcp.tool(annotations=OVERWRITE)
    async def store_user_journey(journey: JourneyRecord) -> StoredDocument:
        """Store (upsert) a user journey: the ordered steps of a session plus device, duration, outcome.

        It is stored as text like "User journey: landing page → product detail → add to cart →
        purchase. Mobile, 15-minute session, premium segment." Without journey_id the id is a
        hash of the content, so storing the same journey twice keeps one copy.

        Example: {"journey": {"steps": ["landing_page", "product_detail", "add_to_cart", "purchase"],
        "device_type": "mobile", "session_duration_s": 900, "user_segment": "premium",
        "conversion_outcome": "purchased", "value": 99.99}}
        """
        return await service.store_user_journey(journey)

    @mcp.tool(annotations=READ_ONLY)
    async def find_similar_user_journeys(
        query: Annotated[str | None, Field(default=None, max_length=MAX_QUERY_CHARS,
                                           description="A description, e.g. 'mobile users who abandon at payment'.")] = None,
        journey: Annotated[JourneyRecord | None, Field(default=None, description="Or a journey to match (steps and context).")] = None,
        where: Where = None,
        limit: Limit = 10,
    ) -> SearchResult:
        """Find stored user journeys similar to a description or to a given journey.

        Give exactly one of query or journey. Filterable fields: journey_id, user_id,
        user_segment, device_type, traffic_source, conversion_outcome, journey_length,
        session_duration (seconds), value, experiment_key, variant, first_step, last_step,
        steps (list: {"steps": {"$contains": "add_to_cart"}}), started_at.

        Example: {"journey": {"steps": ["home", "search", "product", "cart"], "device_type": "mobile"},
        "where": {"conversion_outcome": "purchased"}, "limit": 5}
        """
        return await service.find_similar_user_journeys(query, journey=journey, where=where, n_results=limit)

    @mcp.tool(annotations=OVERWRITE)
    async def store_optimization_pattern(pattern: PatternRecord) -> StoredDocument:
        """Store (upsert) an optimization pattern: what was changed, and whether it worked.

        Record lessons worth reusing, successes and failures alike. Without pattern_id the id
        is a hash of the type and text, so storing the same lesson twice keeps one copy.

        Example: {"pattern": {"optimization_type": "checkout_flow", "description": "Reduced checkout
        steps from 4 to 2, added a progress indicator and autofill", "outcome": "success",
        "improvement": 0.35, "metric": "conversion", "applied_to_segments": ["mobile", "desktop"],
        "industry": "ecommerce", "implementation_effort": "medium"}}
        """
        return await service.store_optimization_pattern(pattern)

    @mcp.tool(annotations=READ_ONLY)
    async def search_optimization_patterns(query: Query, where: Where = None,
                                           limit: Limit = 10) -> SearchResult:
        """Find optimization patterns (lessons from past experiments) by meaning.

        Use it when proposing an optimization: what worked, what failed, by how much.
        Filterable fields: pattern_id, optimization_type, outcome (success|failure|neutral),
        improvement (fraction: 0.35 = +35%), metric, applied_to_segments (list), industry,
        implementation_effort (low|medium|high), source_experiments (list), created_at.

        Example: {"query": "simplify checkout", "where": {"outcome": "success",
        "applied_to_segments": {"$contains": "mobile"}}}
        """
        return await service.search_optimization_patterns(query, where, limit)

    @mcp.tool(annotations=OVERWRITE)
    async def sync_from_registry(
        experiments: Annotated[list[dict[str, Any]] | None, Field(
            default=None, max_length=5000,
            description="Experiment records to store (registry shape); omit to pull every experiment from the connected registry.",
        )] = None,
    ) -> SyncReport:
        """Backfill the experiments collection from the experiment registry (PostgreSQL).

        Without arguments it pulls every experiment from the registry this server is
        connected to; or pass the records. Each is upserted like store_experiment_context;
        unchanged ones are skipped without re-embedding, invalid ones are listed in
        `failed` with the reason. Safe to re-run. Returns counts of created, updated,
        unchanged and failed records.

        Example: {} or {"experiments": [{"key": "checkout-1step", "name": "1-step checkout", "type": "ui"}]}
        """
        return await service.sync_from_registry(experiments)

    @mcp.tool(annotations=READ_ONLY)
    async def collection_stats() -> CollectionStats:
        """Describe the semantic store: each collection's document count, embedding function and HNSW index settings.

        Use it to check that memory is populated (e.g. before relying on an empty search)
        and which model embedded it. Example: {}
        """
        return await service.collection_stats()

    return mcp
