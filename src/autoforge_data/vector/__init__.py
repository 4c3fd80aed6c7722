"""Semantic search: embedders, the model registry and vector indexes."""
