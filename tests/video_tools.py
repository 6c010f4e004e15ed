"""What the video tests share: building clips with the ffmpeg binary, a detector that finds
nothing, and reading a file's frame times from its packets (to check that timestamps survive)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import av
import numpy as np

from pyroblur.anonymize.video import ffmpeg_exe
from pyroblur.core.detections import Detections

logger = logging.getLogger(__name__)


def run_ffmpeg(*args: str) -> None:
    """Run the ffmpeg binary quietly, overwriting outputs; fail on a non-zero exit."""
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def nothing(frames: list[np.ndarray]) -> list[Detections]:
    """A detector that finds nothing."""
    return [Detections.empty() for _ in frames]


def frame_times(path: Path) -> list[float] | None:
    """Presentation times (seconds from the file's start) of the first video stream's
    frames, in order, read from the container's packets (no decoding); ``None`` when the
    container does not say or cannot be read."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tb = stream.time_base
            start = (container.start_time or 0) / 1_000_000
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    except (av.FFmpegError, IndexError, OSError) as exc:
        logger.info("could not read frame times of %s: %s", path, exc)
        return None
    if not pts or tb is None:
        return None
    return [float(p * tb) - start for p in pts]


def is_variable_rate(times: list[float] | None, tolerance: float = 0.02) -> bool:
    """True when frame intervals differ from their median by more than ``tolerance`` of it
    (a constant-rate file's intervals differ only by timestamp rounding). The last four
    intervals are not looked at (see below)."""
    if not times or len(times) < 3:
        return False
    steps = np.diff(np.asarray(times, np.float64))
    if len(steps) > 8:
        # The last packets of a file cut mid-data miss their reordered (B-frame) neighbours;
        # those gaps say "truncated", not "variable rate".
        steps = steps[:-4]
    median = float(np.median(steps))
    return median > 0 and bool((np.abs(steps - median) > tolerance * median + 1e-4).any())
