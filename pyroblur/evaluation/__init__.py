"""Benchmarking: detection metrics, speed, size, ONNX parity and the report."""
