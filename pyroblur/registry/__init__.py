"""The model registry: champion/challenger entries, promotion policy and data lineage."""
