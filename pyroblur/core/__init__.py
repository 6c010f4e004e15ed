"""Shared building blocks every stage uses: detections, records, hashing, atomic I/O, paths."""
