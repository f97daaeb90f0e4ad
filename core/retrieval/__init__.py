"""Retrieval: ingestion and the embedded keyword index."""
