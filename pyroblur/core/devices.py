"""Device selection shared by training, benchmarking and anonymization."""

from __future__ import annotations


def resolve_device(device: str | None = None) -> str:
    """Resolve ``auto`` (or ``None``/empty) to a concrete torch device string.

    ``auto`` -> ``"cuda:0"`` when a CUDA GPU is present, else Apple ``"mps"``, else ``"cpu"``.
    Anything else is normalised: a bare index ``"0"``/``"1"`` becomes ``"cuda:0"``/``"cuda:1"``;
    ``"cpu"``, ``"cuda:1"``, ``"mps"`` pass through. Ultralytics and torch accept all of these.
    """
    if device in (None, "", "auto"):
        import torch

        if torch.cuda.is_available():
            return "cuda:0"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    device = str(device).strip()
    if device.isdigit():
        return f"cuda:{device}"
    return device
