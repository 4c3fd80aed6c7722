"""AutoForgeNexus data platform: prompts on libSQL, semantic search, a Redis cache, operations."""

__version__ = "0.1.0"
