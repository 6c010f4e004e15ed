"""Device selection shared by training, benchmarking and anonymization."""

from __future__ import annotations

import os
import sys
from pathlib import Path


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


#: Torch threads for training on the CPU: a number, or ``auto`` (the default).
ENV_CPU_THREADS = "PYROBLUR_CPU_THREADS"


def cpu_training_threads() -> int | None:
    """How many torch threads a CPU training should use, or ``None`` for ultralytics' choice.

    ``PYROBLUR_CPU_THREADS`` set to a number: that many (at least 1). ``auto`` (default): one per
    core this process may use while nothing else keeps the machine busy (1-minute load average,
    less this process's own core, under 0.5), else ``None``: ultralytics' ``cores - 1``. Measured
    on 2 cores: idle, 2 threads train 1.5x faster than 1; beside another busy process, 2 threads
    were 4x slower than 1 (OpenMP threads wait on each other when one is descheduled), so more
    threads only where the cores are free.

    Raises:
        ValueError: ``PYROBLUR_CPU_THREADS`` is neither a number nor ``auto`` (names the value).
    """
    value = os.environ.get(ENV_CPU_THREADS, "").strip().lower() or "auto"
    if value != "auto":
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"{ENV_CPU_THREADS}={value!r}: expected a number of threads or 'auto'") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        others = os.getloadavg()[0] - 1.0
    except OSError:
        return None
    return cores if others < 0.5 else None


def cpu_without_torch(device: str | None) -> bool:
    """True when ``device`` certainly means the CPU, decided without importing torch.

    ``cpu`` (or ``-1``) always; ``auto`` (or empty) on a Linux host with no GPU driver
    (neither NVIDIA's ``/proc/driver/nvidia`` and ``/dev/nvidia*`` nor ROCm's ``/dev/kfd``),
    or where ``CUDA_VISIBLE_DEVICES`` hides every GPU. False wherever torch must be asked
    (a GPU driver present, macOS with its MPS, other systems), and for any other device.
    """
    spec = (device or "auto").strip().lower()
    if spec in ("cpu", "-1"):
        return True
    if spec != "auto" or not sys.platform.startswith("linux"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return True
    dev = Path("/dev")
    driver = Path("/proc/driver/nvidia").exists() or (dev / "kfd").exists() or any(dev.glob("nvidia[0-9]*"))
    return not driver


def device_problem(device: str) -> str | None:
    """Why ``device`` (``cpu``, ``auto``, ``0``, ``0,1``, ``cuda:1``, ``mps``) cannot be used
    on this machine, or ``None`` when it can."""
    spec = str(device).strip().lower()
    if spec in ("", "auto", "cpu", "-1"):
        return None
    import torch

    if spec == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "device 'mps' is not available on this machine"
    indices = []
    for part in spec.replace("cuda:", "").replace("cuda", "0").split(","):
        part = part.strip()
        if not part.isdigit():
            return f"device '{device}' is not one of auto, cpu, mps, a GPU index (0, 0,1) or cuda:N"
        indices.append(int(part))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in indices if i >= count]
    if missing:
        have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU"
        return f"device '{device}' asks for GPU {missing[0]} but this machine has {have} (use 'cpu' or 'auto')"
    return None
