"""Video in, video out, through the ffmpeg binary that ``imageio-ffmpeg`` ships.

Frames are decoded to raw BGR through a pipe, detected in batches, anonymized, and piped
into a second ffmpeg that encodes H.264 at the source's frame rate and size and muxes the
source's audio streams back in (copied when the container takes them, AAC otherwise).
Container metadata (creation time, GPS location tags) is deliberately not copied.
The output is written under a temporary name next to the final one and renamed only when
the encoder has finished cleanly, so a crash never leaves a half-written file under the
final name.

Timing: a video stream that starts after its audio is delayed by the same amount in the
output (``-itsoffset``); a variable-frame-rate input (frame times read with PyAV) is encoded
without B-frames and then retimed frame by frame (:func:`retime`). A decode that ends well
short of the frames the container announces is reported (:class:`VideoOutcome`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from pyroblur.anonymize.detector import Detector
from pyroblur.anonymize.temporal import FilledFrame, TrackFiller
from pyroblur.core.detections import Detections
from pyroblur.core.io import temp_path

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_SUFFIXES",
    "FrameRecord",
    "VideoOutcome",
    "VideoError",
    "VideoInfo",
    "anonymize_video",
    "ffmpeg_exe",
    "output_suffix",
    "probe_video",
    "frame_times",
    "is_variable_rate",
    "read_frames",
    "retime",
    "temp_path",
]

#: Suffixes treated as video (lower case).
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".avi",
        ".webm",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
    }
    | {".mts", ".m2ts", ".3gp"}
)
#: Containers that take H.264 as written; others are written as ``.mkv`` (see output_suffix).
_H264_CONTAINERS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".flv", ".ts", ".mts", ".m2ts", ".3gp"})
_MP4_FAMILY = frozenset({".mp4", ".m4v", ".mov", ".3gp"})
_MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})


class VideoError(RuntimeError):
    """The video could not be read or written (message carries ffmpeg's own words)."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg`` (or ``IMAGEIO_FFMPEG_EXE``)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def output_suffix(suffix: str) -> str:
    """The container suffix written for an input suffix: the same one when it can hold
    H.264, else ``.mkv`` (e.g. ``.webm`` or ``.mpg`` inputs)."""
    s = suffix.lower()
    return suffix if s in _H264_CONTAINERS else ".mkv"


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder reports about a file.

    ``width``/``height`` are the displayed frame size in pixels (after rotation metadata),
    ``fps`` frames per second, ``duration`` seconds (0 when unknown), ``audio_codecs`` the
    codec names of the audio streams (empty when silent).
    """

    width: int
    height: int
    fps: float
    duration: float
    audio_codecs: tuple[str, ...] = ()
    #: seconds from the file's start to the video stream's first frame (audio may start first)
    video_offset: float = 0.0

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codecs)

    @property
    def frame_count_estimate(self) -> int | None:
        """Frames the container announces: (duration - video offset) x rate. The duration is
        the longest stream's, so a file whose audio runs on after the video overestimates."""
        if self.duration <= 0 or self.fps <= 0:
            return None
        return round((self.duration - self.video_offset) * self.fps)

    @property
    def fps_fraction(self) -> Fraction:
        """The frame rate as a fraction; 29.97-style NTSC rates become ``N*1000/1001``."""
        ntsc = round(self.fps * 1.001)
        if ntsc > 0 and abs(self.fps - ntsc / 1.001) < 0.006 and abs(self.fps - round(self.fps)) > 0.006:
            return Fraction(ntsc * 1000, 1001)
        return Fraction(self.fps).limit_denominator(1001)


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"\b(\d{1,5})x(\d{1,5})\b")
_FPS = re.compile(r"([\d.]+)\s*(?:fps|tbr)\b")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_FILE_START = re.compile(r"Duration:.*?start:\s*(-?[\d.]+)")
_STREAM_START = re.compile(r"\bstart (-?[\d.]+)")


def probe_video(path: Path) -> VideoInfo:
    """Read a file's stream header with ``ffmpeg -i`` (imageio-ffmpeg ships no ffprobe)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        check=False,  # ffmpeg -i without an output always exits 1
        capture_output=True,
        text=True,
        errors="replace",
    )
    text = proc.stderr
    video_line = next(
        (ln for ln in text.splitlines() if "Stream #" in ln and "Video:" in ln and "attached pic" not in ln),
        None,
    )
    if video_line is None:
        raise VideoError(f"no video stream in {path}: {_tail(text)}")
    after = video_line.split("Video:", 1)[1]
    size = _SIZE.search(re.sub(r"\b0x[0-9a-fA-F]+", "", after))
    fps = _FPS.search(after)
    if not size or not fps:
        raise VideoError(f"could not read size/frame rate of {path}: {video_line.strip()}")
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _ROTATION.search(text)
    if rotation and round(abs(float(rotation.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg autorotates while decoding
    d = _DURATION.search(text)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    audio = tuple(
        ln.split("Audio:", 1)[1].split()[0].strip(",")
        for ln in text.splitlines()
        if "Stream #" in ln and "Audio:" in ln
    )
    # ffmpeg (>= 7) names each stream's start; the output's video must start as late as the
    # input's relative to its audio, or the audio drifts out of sync by that much.
    file_start = _FILE_START.search(text)
    video_start = _STREAM_START.search(after)
    offset = 0.0
    if file_start and video_start:
        offset = max(0.0, float(video_start.group(1)) - float(file_start.group(1)))
    return VideoInfo(width, height, float(fps.group(1)), duration, audio, offset)


def _tail(text: str, n: int = 600) -> str:
    text = text.strip()
    return text[-n:] if text else "(no message)"


def read_frames(path: Path, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` as ``(H, W, 3)`` BGR uint8 arrays, in order, each once.

    Raises:
        VideoError: when ffmpeg fails before the end of the stream.
    """
    info = info or probe_video(path)
    frame_bytes = info.width * info.height * 3
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        # One output frame per decoded frame: no duplication or dropping to a constant rate.
        "-fps_mode",
        "passthrough",
        # Accurate rounding in the YUV->BGR conversion: without it every decode/encode
        # round trip darkens the picture by ~2 levels.
        "-sws_flags",
        "accurate_rnd",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-",
    ]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, bufsize=frame_bytes)
        assert proc.stdout is not None
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                yield np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.terminate()
            code = proc.wait()
        if code not in (0, -15):
            err.seek(0)
            raise VideoError(f"ffmpeg could not decode {path}: {_tail(err.read().decode(errors='replace'))}")


class _Encoder:
    """An ffmpeg process that encodes raw BGR frames from stdin and muxes ``audio_from``'s
    audio streams into ``dst``."""

    def __init__(
        self,
        dst: Path,
        info: VideoInfo,
        audio_from: Path,
        crf: int = 18,
        *,
        final_suffix: str | None = None,
        no_reorder: bool = False,
    ) -> None:
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        pix_fmt = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
        final = (final_suffix or dst.suffix).lower()  # the container the audio must suit
        if final in _MP4_FAMILY and not set(info.audio_codecs) <= _MP4_AUDIO:
            audio = ["-c:a", "aac", "-b:a", "192k"]
        else:
            audio = ["-c:a", "copy"]
        fps = info.fps_fraction
        self.cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{info.width}x{info.height}",
            "-framerate",
            f"{fps.numerator}/{fps.denominator}",
            *(["-itsoffset", f"{info.video_offset:.6f}"] if info.video_offset > 0 else []),
            "-i",
            "-",
            "-i",
            str(audio_from),
            "-map",
            "0:v:0",
            "-map",
            "1:a?",
            # Container metadata (phone videos carry GPS location tags) is not copied: an
            # anonymized file should not say where it was shot.
            "-map_metadata",
            "-1",
            "-sws_flags",
            "accurate_rnd",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            str(crf),
            "-pix_fmt",
            pix_fmt,
            # Without B-frames decode order is presentation order: packet k is frame k, so
            # retime() can give each packet its source frame's timestamp.
            *(["-bf", "0"] if no_reorder else []),
            *audio,
        ]
        if dst.suffix.lower() in _MP4_FAMILY:
            self.cmd += ["-movflags", "+faststart"]
        self.cmd.append(str(dst))
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish/abort
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stderr=self._err)

    def write(self, frame: np.ndarray) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError as exc:
            self.proc.wait()
            raise VideoError(f"ffmpeg encoder stopped: {self._stderr()}") from exc

    def _stderr(self) -> str:
        self._err.seek(0)
        return _tail(self._err.read().decode(errors="replace"))

    def finish(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        code = self.proc.wait()
        msg = self._stderr()
        self._err.close()
        if code != 0:
            raise VideoError(f"ffmpeg encoder failed ({code}): {msg}")

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._err.close()


def frame_times(path: Path) -> list[float] | None:
    """Presentation times (seconds from the file's start) of the first video stream's
    frames, in order, read from the container's packets (no decoding) with PyAV; ``None``
    when PyAV is missing or the container does not say."""
    try:
        import av
    except ImportError:
        logger.info("PyAV not installed: variable frame rates are written at their average rate")
        return None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tb = stream.time_base
            start = (container.start_time or 0) / 1_000_000  # AV_TIME_BASE units
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


def retime(src: Path, dst: Path, times: list[float]) -> None:
    """Copy ``src`` (our encoder's output, no B-frames) into ``dst`` with video packet k
    presented at ``times[k]`` seconds; audio packets are copied unchanged. Frames beyond
    ``times`` continue at its last interval."""
    import av

    tb = Fraction(1, 90_000)  # MPEG's clock: fine enough for any source's timestamps
    step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1 / 25
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        audio = {s.index: out.add_stream_from_template(s) for s in inp.streams.audio}
        k = 0
        for packet in inp.demux(vin, *inp.streams.audio):
            if packet.dts is None and packet.pts is None:
                continue  # demuxer flush packet
            if packet.stream.index == vin.index:
                t = times[k] if k < len(times) else times[-1] + (k - len(times) + 1) * step
                nxt = times[k + 1] if k + 1 < len(times) else t + step
                packet.pts = packet.dts = round(t / tb)
                packet.duration = max(1, round((nxt - t) / tb))
                packet.time_base = tb
                packet.stream = vout
                k += 1
            else:
                packet.stream = audio[packet.stream.index]
            out.mux(packet)


@dataclass
class FrameRecord:
    """Boxes hidden in one frame: ``detections`` in pixels, ``remembered`` true for rows
    filled from a track rather than detected in this frame; ``residual`` what the residual
    check still found in the anonymized frame (``None`` when not checked)."""

    index: int
    detections: Detections
    remembered: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    residual: Detections | None = None
    track_id: np.ndarray | None = None


@dataclass(frozen=True)
class VideoOutcome:
    """What :func:`anonymize_video` wrote: ``frames`` written and ``expected`` (from the
    container's duration and rate; ``None`` when it does not say). ``complete`` is false
    when clearly fewer frames could be decoded than the container announced."""

    info: VideoInfo
    frames: int
    expected: int | None

    @property
    def complete(self) -> bool:
        if self.expected is None:
            return True
        # Duration x rate is an estimate (rounding, a last frame's duration, an audio stream
        # a little longer): a shortfall of more than 2 frames or 2 % is a truncated input.
        return self.frames >= self.expected - max(2, round(0.02 * self.expected))


def _batches(frames: Iterator[np.ndarray], size: int, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: decode ahead so ffmpeg decoding overlaps inference and encoding."""
    batch: list[np.ndarray] = []
    try:
        for frame in frames:
            if stop.is_set():
                return
            batch.append(frame)
            if len(batch) == size:
                out.put(batch)
                batch = []
        if batch:
            out.put(batch)
        out.put(None)
    except BaseException as exc:  # noqa: BLE001 - the main thread re-raises it
        out.put(exc)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # stops the decoder process when we end early


def anonymize_video(
    src: Path,
    dst: Path,
    detector: Detector,
    hide: Callable[[np.ndarray, Detections], np.ndarray],
    *,
    batch_size: int = 8,
    filler: TrackFiller | None = None,
    drop_frame: int | None = None,
    progress: bool = True,
    on_frame: Callable[[FrameRecord], None] | None = None,
    crf: int = 18,
    verify: Detector | None = None,
) -> VideoOutcome:
    """Anonymize ``src`` into ``dst`` (written atomically).

    Args:
        src: input video.
        dst: output path; its suffix picks the container (see :func:`output_suffix`).
        detector: batched :class:`Detector`.
        hide: ``hide(frame, detections) -> frame`` applies the anonymization to one frame.
        batch_size: frames per detector call.
        filler: track-based gap filling (``None`` = none), fresh per video: it holds
            ``filler.max_gap`` frames back (memory: that many decoded frames).
        drop_frame: test switch: the detections of this frame index are discarded before
            gap filling, to prove that filling covers a missed frame.
        progress: show a tqdm bar (frames/s).
        on_frame: called with each frame's :class:`FrameRecord` (e.g. for the audit record).
        crf: H.264 quality, 0 (lossless) to 51; 18 is visually lossless.
        verify: residual check: this detector runs on every anonymized frame and what it
            still finds lands in :attr:`FrameRecord.residual`.

    Returns:
        A :class:`VideoOutcome`; a truncated input gives a shorter output with
        ``complete`` false (the caller decides what that means).
    """
    from tqdm.auto import tqdm

    info = probe_video(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    # Variable frame rate: encode without B-frames into Matroska (takes any audio), then give
    # every frame its source timestamp (retime). Constant rate: one encoder pass, as before.
    times = frame_times(src)
    vfr = is_variable_rate(times)
    encoded = tmp.with_name(tmp.stem + ".vfr.mkv") if vfr else tmp
    if vfr:
        logger.info("%s: variable frame rate, timestamps kept", src)
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    reader = threading.Thread(
        target=_batches,
        args=(read_frames(src, info), max(1, batch_size), q, stop),
        daemon=True,
    )
    encoder: _Encoder | None = None
    held: dict[int, np.ndarray] = {}  # frames waiting for the filler's look-ahead
    n_in = n_out = 0
    bar = tqdm(
        total=info.frame_count_estimate,
        unit="frame",
        desc=src.name,
        disable=not progress,
        dynamic_ncols=True,
    )

    def emit(ready: list[FilledFrame]) -> None:
        nonlocal n_out
        if not ready:
            return
        assert encoder is not None
        out_frames = [hide(held.pop(f.index), f.detections) for f in ready]
        residual = verify(out_frames) if verify is not None else [None] * len(out_frames)
        for f, frame, res in zip(ready, out_frames, residual, strict=True):
            encoder.write(frame)
            if on_frame is not None:
                on_frame(FrameRecord(f.index, f.detections, f.filled, res, f.track_id))
            n_out += 1
            bar.update(1)

    try:
        encoder = _Encoder(encoded, info, src, crf=crf, final_suffix=dst.suffix, no_reorder=vfr)
        reader.start()
        while (batch := q.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            dets = detector(batch)
            if len(dets) != len(batch):
                raise ValueError(f"detector returned {len(dets)} results for {len(batch)} frames")
            ready: list[FilledFrame] = []
            for frame, d in zip(batch, dets, strict=True):
                if drop_frame is not None and n_in == drop_frame:
                    logger.warning("Test switch: dropping the detections of frame %d", n_in)
                    d = Detections.empty()
                held[n_in] = frame
                if filler is not None:
                    ready += filler.push(d, frame.shape[:2])
                else:
                    ready.append(FilledFrame(n_in, d, np.zeros(len(d), bool), np.full(len(d), -1), len(d)))
                n_in += 1
            emit(ready)
        if filler is not None:
            emit(filler.flush())
        if n_out == 0:
            raise VideoError(f"no frames decoded from {src}")
        encoder.finish()
        encoder = None
        if vfr:
            assert times is not None
            retime(encoded, tmp, times)
        os.replace(tmp, dst)
    finally:
        stop.set()
        bar.close()
        if encoder is not None:
            encoder.abort()
        # Unblock and end the reader if we stopped early.
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.1)
        tmp.unlink(missing_ok=True)
        encoded.unlink(missing_ok=True)
    expected = info.frame_count_estimate
    if vfr and times and len(times) > 1 and info.duration > 0:
        # The header's rate of a VFR file is a nominal one (Matroska says 25 for a 17 fps
        # clip): count frames at the clip's mean interval instead.
        mean_step = (times[-1] - times[0]) / (len(times) - 1)
        expected = round((info.duration - info.video_offset) / mean_step) if mean_step > 0 else expected
    outcome = VideoOutcome(info, n_out, expected)
    if not outcome.complete:
        logger.warning("%s: only %d of %d expected frames could be decoded", src, n_out, outcome.expected)
    logger.info("Wrote %s: %d frames at %.3f fps", dst, n_out, info.fps)
    return outcome
