"""Video in, video out, through PyAV (FFmpeg's libraries in process).

Frames are decoded one packet at a time (memory stays bounded whatever the clip's length),
converted to upright BGR (the display matrix of phone videos is applied), detected in batches,
anonymized and encoded to H.264 (libx264, ``crf``) with **each frame's own source timestamp**,
so a variable frame rate and a video that starts after its audio come out as they went in.
Every audio stream is copied packet for packet (no re-encode) and interleaved with the video by
time. Container metadata (creation time, GPS location tags) is deliberately not copied.
The output is written under a temporary name next to the final one and renamed only when the
muxer has finished cleanly, so a crash never leaves a half-written file under the final name.
A decode that ends well short of the frames the container announces is reported
(:class:`VideoOutcome`).

PyAV is imported when a video is first touched, so images work without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from pyroblur.anonymize.detector import Detector, detect_in_video
from pyroblur.anonymize.temporal import FilledFrame, TrackFiller
from pyroblur.core.detections import Detections
from pyroblur.core.io import temp_path

if TYPE_CHECKING:
    import av.container

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_SUFFIXES",
    "DecodedFrame",
    "FrameRecord",
    "FramesPlan",
    "VideoOutcome",
    "VideoError",
    "VideoInfo",
    "anonymize_video",
    "decode_frames",
    "ffmpeg_exe",
    "output_suffix",
    "plan_frames",
    "probe_video",
    "read_frames",
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
#: AV_TIME_BASE: the unit of a container's start time and duration.
_AV_TIME_BASE = 1_000_000
#: Decode errors tolerated (corrupt packets skipped, as ffmpeg does) before giving up.
_MAX_DECODE_ERRORS = 100


class VideoError(RuntimeError):
    """The video could not be read or written (the message names the file and FFmpeg's words)."""


def _av() -> Any:
    """The ``av`` module, or a :class:`VideoError` saying how to get it."""
    try:
        import av
    except ImportError as exc:  # a declared dependency; missing only on a hand-made install
        raise VideoError("video needs PyAV: pip install 'av>=14'") from exc
    return av


class _Converter:
    """Pixel format conversion (and rotation) through FFmpeg's filters, as the ffmpeg CLI
    does it: ``scale`` honours the frames' chroma siting and colour tags and rounds
    accurately (without ``accurate_rnd`` every decode/encode round trip shifts the picture by
    about a level; a plain ``VideoFrame.reformat`` misplaces 4:2:0 chroma by half a pixel each
    way), and a display rotation is applied before it, as ffmpeg's autorotation does. Every
    frame comes out ``width`` x ``height`` (a stream that changes size mid-way is scaled back
    to its first size)."""

    #: Filters that turn a frame upright, by display rotation (degrees counter-clockwise).
    _UPRIGHT = {90: ["transpose=cclock"], 180: ["hflip", "vflip"], 270: ["transpose=clock"]}

    def __init__(self, width: int, height: int, dst_format: str, time_base: Fraction, rotation: int = 0) -> None:
        self.size, self.dst_format, self.time_base = (width, height), dst_format, time_base
        self.rotation = rotation
        self.graph: Any = None
        self.src: tuple[int, int, str] | None = None

    def __call__(self, frame: Any) -> Any:
        src = (frame.width, frame.height, frame.format.name)
        if src != self.src:
            av = _av()
            graph = av.filter.Graph()
            chain = [graph.add_buffer(width=src[0], height=src[1], format=src[2], time_base=self.time_base)]
            for spec in self._UPRIGHT.get(self.rotation, []):
                name, _, args = spec.partition("=")
                chain.append(graph.add(name, args or None))
            chain += [
                graph.add("scale", f"w={self.size[0]}:h={self.size[1]}:flags=accurate_rnd"),
                graph.add("format", self.dst_format),
                graph.add("buffersink"),
            ]
            for a, b in zip(chain, chain[1:], strict=False):
                a.link_to(b)
            graph.configure()
            self.graph, self.src = graph, src
        self.graph.push(frame)
        return self.graph.pull()


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg`` (or ``IMAGEIO_FFMPEG_EXE``).

    The anonymizer itself does not run it (PyAV does the work in process); tests and
    benchmarks build their clips with it."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def output_suffix(suffix: str) -> str:
    """The container suffix written for an input suffix: the same one when it can hold
    H.264, else ``.mkv`` (e.g. ``.webm`` or ``.mpg`` inputs)."""
    s = suffix.lower()
    return suffix if s in _H264_CONTAINERS else ".mkv"


@dataclass(frozen=True)
class VideoInfo:
    """What the container and the first decoded frame say about a file.

    ``width``/``height`` are the displayed frame size in pixels (after rotation),
    ``fps`` the average frame rate, ``duration`` seconds (the longest stream's; 0 when
    unknown), ``audio_codecs`` the codec names of the audio streams (empty when silent),
    ``video_offset`` seconds from the file's start to the video stream's first frame (audio
    may start first), ``rotation`` the display rotation in degrees counter-clockwise (0, 90,
    180 or 270; frames are decoded upright), ``time_base`` the video stream's timestamp unit,
    ``frame_count`` the frames the container announces (0 when it does not say) and
    ``video_duration`` the video stream's own duration in seconds (0 when unknown).
    """

    width: int
    height: int
    fps: float
    duration: float
    audio_codecs: tuple[str, ...] = ()
    video_offset: float = 0.0
    rotation: int = 0
    time_base: Fraction = Fraction(1, 90_000)
    frame_count: int = 0
    video_duration: float = 0.0
    sample_aspect_ratio: Fraction | None = None

    @property
    def has_audio(self) -> bool:
        """True when the file has at least one audio stream."""
        return bool(self.audio_codecs)

    @property
    def frame_count_estimate(self) -> int | None:
        """Frames the file should decode to, ``None`` when it does not say.

        The container's frame count when it announces one, capped by the video stream's
        duration x rate (an MP4 cut with an edit list counts samples it never shows); else
        (duration - video offset) x rate, where the duration is the longest stream's, so a
        file whose audio runs on after the video overestimates."""
        by_time = None
        if self.fps > 0:
            if self.video_duration > 0:
                by_time = round(self.video_duration * self.fps)
            elif self.duration > 0:
                by_time = round((self.duration - self.video_offset) * self.fps)
        if self.frame_count > 0:
            return min(self.frame_count, by_time) if by_time else self.frame_count
        return by_time

    @property
    def fps_fraction(self) -> Fraction:
        """The frame rate as a fraction; 29.97-style NTSC rates become ``N*1000/1001``."""
        ntsc = round(self.fps * 1.001)
        if ntsc > 0 and abs(self.fps - ntsc / 1.001) < 0.006 and abs(self.fps - round(self.fps)) > 0.006:
            return Fraction(ntsc * 1000, 1001)
        return Fraction(self.fps).limit_denominator(1001)


def _open(path: Path) -> av.container.InputContainer:
    """Open ``path`` for reading.

    Raises:
        VideoError: the file is missing or FFmpeg cannot read its header.
    """
    av = _av()
    try:
        return av.open(str(path), "r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"cannot open video {path}: {exc}") from exc


def _video_stream(container: Any, path: Path) -> Any:
    """The first video stream that is not a cover picture."""
    _av()
    from av.stream import Disposition

    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise VideoError(f"no video stream in {path}")


def _rotation(frame: Any, stream: Any, path: Path) -> int:
    """Display rotation in degrees counter-clockwise, a multiple of 90: the frame's display
    matrix (FFmpeg attaches the container's to every decoded frame), else a ``rotate`` tag."""
    degrees = float(frame.rotation or 0)
    if not degrees:
        with contextlib.suppress(KeyError, ValueError):
            degrees = -float(stream.metadata["rotate"])  # the tag is clockwise
    quarter = round(degrees / 90)
    if abs(degrees - 90 * quarter) > 1:
        logger.warning("%s: rotation of %.1f degrees is not a multiple of 90; ignored", path, degrees)
        return 0
    return 90 * (quarter % 4)


def probe_video(path: Path) -> VideoInfo:
    """Read ``path``'s header with PyAV and decode its first frame (for the rotation).

    Raises:
        VideoError: no video stream, an unreadable header, or not one decodable frame.
    """
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        _refuse_what_would_be_reduced(container, stream, path)
        first = next((f for _, f in _decode_packets(container, stream, path)), None)
        if first is None:
            raise VideoError(f"cannot decode video {path}: no frame could be decoded")
        _refuse_hdr(int(getattr(first, "color_trc", 0) or 0), path)  # frames may say what the header does not
        rotation = _rotation(first, stream, path)
        ctx = stream.codec_context
        width, height = ctx.width, ctx.height
        if rotation % 180:
            width, height = height, width
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not width or not height or not rate:
            raise VideoError(f"could not read the size or frame rate of {path}")
        tb = stream.time_base or Fraction(1, 90_000)
        start = (container.start_time or 0) / _AV_TIME_BASE
        video_start = float(stream.start_time * tb) if stream.start_time is not None else start
        return VideoInfo(
            width=width,
            height=height,
            fps=float(rate),
            duration=(container.duration or 0) / _AV_TIME_BASE,
            audio_codecs=tuple(s.codec_context.codec.canonical_name for s in container.streams.audio),
            video_offset=max(0.0, video_start - start),
            rotation=rotation,
            time_base=Fraction(tb),
            frame_count=stream.frames or 0,
            video_duration=float(stream.duration * tb) if stream.duration else 0.0,
            sample_aspect_ratio=_sar(ctx.sample_aspect_ratio, rotation),
        )
    finally:
        container.close()


def _sar(sar: Any, rotation: int) -> Fraction | None:
    """The sample aspect ratio to write (``None`` for square pixels); a quarter turn swaps it."""
    if not sar or sar.numerator <= 0 or sar.denominator <= 0 or sar == 1:
        return None
    sar = Fraction(sar.numerator, sar.denominator)
    return 1 / sar if rotation % 180 else sar


#: Transfer characteristics of HDR video (FFmpeg's AVColorTransferCharacteristic): PQ, HLG.
_HDR_TRC = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}


def _refuse_what_would_be_reduced(container: Any, stream: Any, path: Path) -> None:
    """Refuse by name, before any frame is decoded, what the output would silently reduce or
    what is over the pixel limit: a second video stream (two-camera dashcams), HDR (written as
    8-bit SDR it would look washed out), a frame size over ``PYROBLUR_MAX_IMAGE_PIXELS``."""
    from av.stream import Disposition

    from pyroblur.core.images import MAX_PIXELS_ENV, max_image_pixels

    videos = [v for v in container.streams.video if not v.disposition & Disposition.attached_pic]
    if len(videos) > 1:
        raise VideoError(
            f"{path} has {len(videos)} video streams (e.g. a two-camera dashcam file); only one would be "
            "anonymized and the others dropped: split it first, e.g. ffmpeg -i in -map 0:v:1 -c copy cam2.mkv"
        )
    ctx = stream.codec_context
    cap = max_image_pixels()
    if ctx.width * ctx.height > cap:
        raise VideoError(
            f"{path}: video frames of {ctx.width}x{ctx.height} px ({ctx.width * ctx.height / 1e6:.3g} MP) are over "
            f"the pixel limit of {cap / 1e6:.3g} MP (raise {MAX_PIXELS_ENV} if genuine)"
        )
    _refuse_hdr(int(getattr(ctx, "color_trc", 0) or 0), path)


def _refuse_hdr(trc: int, path: Path) -> None:
    if trc in _HDR_TRC:
        raise VideoError(
            f"{path}: HDR video ({_HDR_TRC[trc]} transfer): the anonymizer writes 8-bit SDR H.264 and would "
            "change how it looks; tone-map it to SDR first (e.g. ffmpeg's zscale/tonemap filters)"
        )


def _decode_packets(container: Any, stream: Any, path: Path) -> Iterator[tuple[Any, Any]]:
    """Yield ``(packet, frame)`` for every frame of ``stream``, decoding packet by packet.

    A read error after the first frame ends the stream (a truncated file: what decoded so
    far is kept and the caller compares counts); a corrupt packet is skipped, as ffmpeg does.

    Raises:
        VideoError: a read error before any frame, or too many corrupt packets.
    """
    from pyroblur.core.images import max_image_pixels

    av = _av()
    cap = max_image_pixels()
    packets = container.demux(stream)
    frames = errors = 0
    packet = None
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            packet = None
        except av.FFmpegError as exc:
            if not frames:
                raise VideoError(f"cannot decode video {path}: {exc}") from exc
            logger.warning("%s: reading stopped after %d frames: %s", path, frames, exc)
            packet = None
        if packet is not None and not packet.size:
            continue  # the demuxer's end-of-stream marker: the decoder is drained below
        try:
            decoded = stream.decode(packet)  # None drains the decoder
        except av.FFmpegError as exc:
            errors += 1
            if errors > _MAX_DECODE_ERRORS:
                raise VideoError(f"cannot decode video {path}: {errors} corrupt packets, last: {exc}") from exc
            logger.debug("%s: skipped a corrupt packet: %s", path, exc)
            decoded = []
        for frame in decoded:
            if frame.width * frame.height > cap:  # on what is decoded, not only on the header
                raise VideoError(
                    f"{path}: frame {frames} of {frame.width}x{frame.height} px is over the pixel limit of "
                    f"{cap / 1e6:.3g} MP (raise PYROBLUR_MAX_IMAGE_PIXELS if genuine)"
                )
            frames += 1
            yield packet, frame
        if packet is None:
            return


class DecodedFrame(NamedTuple):
    """One decoded frame: ``image`` upright ``(H, W, 3)`` BGR uint8, ``pts`` its presentation
    timestamp in units of :attr:`VideoInfo.time_base` (as in the source file)."""

    image: np.ndarray
    pts: int


def decode_frames(path: Path, info: VideoInfo | None = None, *, frame_threads: bool = True) -> Iterator[DecodedFrame]:
    """Yield the frames of ``path``'s video stream in presentation order, each once, with its
    source timestamp; one packet is decoded at a time, so memory does not grow with length.

    Frames are turned upright (``info.rotation``). A frame without a timestamp, or one not
    after its predecessor's, is placed one frame interval (or one tick) after it.

    Raises:
        VideoError: the file cannot be opened or not one frame decodes.
    """
    info = info or probe_video(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        # frame threads hold one decoded frame per thread; slice threads hold none extra
        stream.thread_type = "AUTO" if frame_threads else "SLICE"
        step = max(1, round(1 / (info.fps * info.time_base))) if info.fps > 0 else 1
        to_bgr = _Converter(info.width, info.height, "bgr24", info.time_base, info.rotation)
        last: int | None = None
        shift = 0  # added to every later timestamp after a jump back (concatenated MPEG-TS)
        for _, frame in _decode_packets(container, stream, path):
            pts = frame.pts if frame.pts is None else frame.pts + shift
            image = to_bgr(frame).to_ndarray()
            if last is not None and pts is not None and last - pts > step:
                # the timeline starts again (files joined with cat): continue it one frame on
                shift += last + step - pts
                pts = last + step
            if last is not None and (pts is None or pts <= last):
                pts = last + (step if pts is None else 1)
            elif pts is None:
                pts = 0
            last = pts
            yield DecodedFrame(image, pts)
    finally:
        container.close()


def read_frames(path: Path, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of ``path`` as upright ``(H, W, 3)`` BGR uint8 arrays, in order, each
    once (:func:`decode_frames` without the timestamps).

    Raises:
        VideoError: the file cannot be opened or not one frame decodes.
    """
    for decoded in decode_frames(path, info):
        yield decoded.image


class _Writer:
    """``dst`` opened for writing: an H.264 stream fed frame by frame and ``src``'s audio
    streams copied packet by packet, interleaved by time.

    Timestamps keep the source's timeline, moved so that the file starts at 0 (as ffmpeg
    does): video and audio keep their offsets to each other."""

    def __init__(
        self,
        dst: Path,
        info: VideoInfo,
        src: Path,
        crf: int,
        *,
        final_suffix: str,
        final: Path | None = None,
        encoder: dict[str, str] | None = None,
    ) -> None:
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        av = _av()
        self.av, self.dst, self.info = av, dst, info
        self.named = final or dst  # errors name the output the user asked for, not the temporary file
        self.src = src
        self.pix_fmt = "yuv420p" if info.width % 2 == 0 and info.height % 2 == 0 else "yuv444p"
        self.to_yuv = _Converter(info.width, info.height, self.pix_fmt, info.time_base)
        self.audio_in = _open(src)
        self.out: Any = None
        try:
            start = Fraction(self.audio_in.start_time or 0, _AV_TIME_BASE)  # the file's origin
            self.video_origin = int(start / info.time_base)
            options = {"movflags": "+faststart"} if final_suffix.lower() in _MP4_FAMILY else {}
            self.out = av.open(str(dst), "w", options=options)
            self.video = self.out.add_stream("libx264", rate=info.fps_fraction)
            self.video.width, self.video.height, self.video.pix_fmt = info.width, info.height, self.pix_fmt
            self.video.codec_context.time_base = info.time_base
            self.video.time_base = info.time_base
            self.video.options = {"crf": str(crf), "preset": "veryfast", **(encoder or {})}
            if info.sample_aspect_ratio is not None:  # anamorphic video keeps its display shape
                self.video.codec_context.sample_aspect_ratio = info.sample_aspect_ratio
            self.audio: dict[int, Any] = {}
            self.audio_origin: dict[int, int] = {}
            for stream in self.audio_in.streams.audio:
                try:
                    copy = self.out.add_stream_from_template(stream)
                except ValueError as exc:
                    raise VideoError(
                        f"cannot copy the {stream.codec_context.codec.canonical_name} audio of {src} into {final_suffix} "
                        f"(write .mkv instead): {exc}"
                    ) from exc
                if stream.language:
                    copy.metadata["language"] = stream.language
                self.audio[stream.index] = copy
                self.audio_origin[stream.index] = int(start / stream.time_base)
            from av.stream import Discard

            for stream in self.audio_in.streams:
                if stream.index not in self.audio:
                    stream.discard = Discard.all  # the demuxer skips these packets
            self.packets = self.audio_in.demux(*self.audio_in.streams.audio) if self.audio else iter(())
            self.pending: Any = None
            # per audio stream: shift after a jump back of the timeline, last dts written
            self.audio_shift: dict[int, int] = dict.fromkeys(self.audio, 0)
            self.audio_last: dict[int, int] = {}
        except BaseException:
            self.abort()
            raise

    def _mux(self, packets: Any) -> None:
        try:
            self.out.mux(packets)
        except self.av.FFmpegError as exc:
            raise VideoError(f"cannot write video {self.named} from {self.src}: {exc}") from exc

    def _copy_audio(self, until: float | None) -> None:
        """Mux the source's audio packets up to ``until`` seconds (all when ``None``)."""
        while True:
            if self.pending is None:
                try:
                    self.pending = next(self.packets)
                except StopIteration:
                    return
                except self.av.FFmpegError as exc:  # a truncated file: copy what was there
                    logger.warning("%s: audio stops early: %s", self.src, exc)
                    self.packets = iter(())
                    return
            packet, index = self.pending, self.pending.stream.index
            if packet.dts is None and packet.pts is None:
                self.pending = None  # the demuxer's end-of-stream marker
                continue
            origin = self.audio_origin[index] - self.audio_shift[index]
            ts = packet.dts if packet.dts is not None else packet.pts
            last = self.audio_last.get(index)
            if last is not None and ts - origin <= last:
                # the timeline starts again (concatenated MPEG-TS): continue it after the last packet
                self.audio_shift[index] += last + max(1, packet.duration or 1) - (ts - origin)
                origin = self.audio_origin[index] - self.audio_shift[index]
            if until is not None and float((ts - origin) * packet.time_base) > until:
                return
            if packet.pts is not None:
                packet.pts -= origin
            if packet.dts is not None:
                packet.dts -= origin
            self.audio_last[index] = ts - origin
            packet.stream = self.audio[index]
            self.pending = None
            self._mux(packet)

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one BGR frame presented at ``pts`` (source time base)."""
        frame = self.to_yuv(self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24"))
        frame.pts = pts - self.video_origin
        frame.time_base = self.info.time_base
        self._copy_audio(float(frame.pts * self.info.time_base))
        try:
            packets = self.video.encode(frame)
        except self.av.FFmpegError as exc:
            raise VideoError(f"cannot encode video {self.named} from {self.src}: {exc}") from exc
        self._mux(packets)

    def finish(self) -> None:
        """Flush the encoder, copy the rest of the audio, write the trailer and close."""
        try:
            self._mux(self.video.encode(None))
            self._copy_audio(None)
            self.out.close()
        except self.av.FFmpegError as exc:
            raise VideoError(f"cannot write video {self.named} from {self.src}: {exc}") from exc
        finally:
            self.out = None
            self.abort()

    def abort(self) -> None:
        """Close both files without finishing the output (the caller removes it)."""
        for container in (self.out, self.audio_in):
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
        self.out = None


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
    """What :func:`anonymize_video` wrote: ``frames`` written and ``expected`` (see
    :attr:`VideoInfo.frame_count_estimate`; ``None`` when the file does not say).
    ``complete`` is false when clearly fewer frames could be decoded than announced."""

    info: VideoInfo
    frames: int
    expected: int | None

    @property
    def complete(self) -> bool:
        """False when more than 2 frames (or 2 %) fewer were written than expected."""
        if self.expected is None:
            return True
        # An estimate (rounding, a last frame's duration, an audio stream a little longer):
        # a shortfall of more than 2 frames or 2 % is a truncated input.
        return self.frames >= self.expected - max(2, round(0.02 * self.expected))


def _batches(frames: Iterator[DecodedFrame], size: int, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: decode ahead so decoding overlaps inference and encoding. At most
    the queue's size in batches is held."""
    batch: list[DecodedFrame] = []
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
            close()  # closes the input file when we end early


class _EncodeThread:
    """Encodes in a thread of its own, so encoding overlaps decoding, detection and masking
    (PyAV releases the GIL while it encodes); at most ``depth`` frames wait in its queue. An
    encoding error is kept and raised by the next :meth:`put` or by :meth:`close`."""

    def __init__(self, writer: _Writer, depth: int) -> None:
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pyroblur-encode", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:  # after a failure, only drain: put() must never block
                try:
                    self.writer.write(*item)
                except BaseException as exc:  # noqa: BLE001 - raised in the main thread
                    self.error = exc

    def put(self, image: np.ndarray, pts: int) -> None:
        """Queue one frame for encoding (blocks while ``depth`` frames wait)."""
        if self.error is not None:
            raise self.error
        self.q.put((image, pts))

    def close(self) -> None:
        """Encode what is queued and stop; raises the thread's error, if any."""
        self.stop()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop after what is queued (idempotent, never raises)."""
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join()


@dataclass(frozen=True)
class FramesPlan:
    """How many decoded frames one video may hold at once: ``batch`` frames per detector call,
    ``queued`` batches decoded ahead, frame-threaded decoding or not."""

    batch: int
    queued: int
    frame_threads: bool
    frames_in_flight: int
    #: libx264 options that bound the frames the encoder holds (lookahead, frame threads)
    encoder: dict[str, str] = field(default_factory=dict)


def plan_frames(info: VideoInfo, batch_size: int, held: int = 0, imgsz: int | None = None) -> FramesPlan:
    """Fit the frames a video holds at once (reader batch + ``queued`` batches + the batch being
    detected + ``held`` frames of gap-filling look-ahead + a batch being encoded + decoder
    threads) into ``PYROBLUR_MAX_FRAME_BYTES_IN_FLIGHT``, and the pixels of one detector call
    (``batch`` x ``imgsz`` squared) into ``PYROBLUR_MAX_DETECTOR_PIXELS``, by lowering the batch
    size, then the read-ahead and the decoder's frame threads.

    Raises:
        VideoError: not even one frame per batch fits (names the limit and what to change).
    """
    from pyroblur.core.limits import LIMITS, limit

    frame_bytes = max(1, info.width * info.height * 3)
    fits = limit("frame_bytes_in_flight") // frame_bytes
    side = imgsz or 640  # the detector letterboxes each frame to about imgsz x imgsz
    batch = max(1, min(batch_size, limit("detector_pixels") // (side * side)))
    threads = os.cpu_count() or 1
    # libx264 holds its lookahead and one frame per thread, each about 1.5 BGR frames (YUV 4:2:0
    # plus half-pel planes); veryfast's defaults: lookahead 10, 1.5 threads per core
    x264_default = 10 + (3 * threads + 1) // 2 + 3
    x264_min = 6  # lookahead 1, one thread: 4 frames
    for queued, frame_threads in ((2, True), (1, False)):
        t = threads if frame_threads else 1
        per_batch = 3 + queued  # reader, queue, detection, encoder
        b = min(batch, (fits - held - t - x264_min) // per_batch)
        if b >= 1:
            used = per_batch * b + held + t
            enc_frames = (fits - used) * 2 // 3
            encoder: dict[str, str] = {}
            if enc_frames < x264_default:
                enc_threads = max(1, min((3 * threads + 1) // 2, enc_frames // 3))
                encoder = {
                    "threads": str(enc_threads),
                    "rc-lookahead": str(max(1, min(10, enc_frames - enc_threads - 3))),
                }
            return FramesPlan(b, queued, frame_threads, used + min(enc_frames, x264_default) * 3 // 2, encoder)
    need = 4 + held + 1 + x264_min
    env = LIMITS["frame_bytes_in_flight"].env
    raise VideoError(
        f"a {info.width}x{info.height} video holds at least {need} decoded frames at once "
        f"({need * frame_bytes / 2**20:,.0f} MiB with --memory-frames {held}), over the limit of "
        f"{limit('frame_bytes_in_flight') / 2**20:,.0f} MiB: lower --memory-frames or raise {env}"
    )


def anonymize_video(
    src: Path,
    dst: Path,
    detector: Detector,
    hide: Callable[[np.ndarray, Detections], np.ndarray],
    *,
    batch_size: int = 8,
    filler: TrackFiller | None = None,
    progress: bool = True,
    on_frame: Callable[[FrameRecord], None] | None = None,
    crf: int = 18,
    verify: Detector | None = None,
    imgsz: int | None = None,
) -> VideoOutcome:
    """Anonymize ``src`` into ``dst`` (written atomically): every frame keeps its source
    timestamp, every audio stream is copied.

    Args:
        src: input video.
        dst: output path; its suffix picks the container (see :func:`output_suffix`).
        detector: batched :class:`Detector`.
        hide: ``hide(frame, detections) -> frame`` applies the anonymization to one frame.
        batch_size: frames per detector call.
        filler: track-based gap filling (``None`` = none), fresh per video: it holds
            ``filler.max_gap`` frames back (memory: that many decoded frames).
        progress: show a tqdm bar (frames/s).
        on_frame: called with each frame's :class:`FrameRecord` (e.g. for the audit record).
        crf: H.264 quality, 0 (lossless) to 51; 18 is visually lossless.
        verify: residual check: this detector runs on every anonymized frame and what it
            still finds lands in :attr:`FrameRecord.residual`.
        imgsz: the detector's input size (``None``: 640), to bound one call's pixels.

    ``batch_size`` is lowered when the frames held at once would pass
    ``PYROBLUR_MAX_FRAME_BYTES_IN_FLIGHT`` or one detector call ``PYROBLUR_MAX_DETECTOR_PIXELS``
    (see :func:`plan_frames`).

    Returns:
        A :class:`VideoOutcome`; a truncated input gives a shorter output with
        ``complete`` false (the caller decides what that means).

    Raises:
        VideoError: ``src`` cannot be decoded (not one frame) or ``dst`` cannot be written;
            nothing is left at ``dst`` then.
        ValueError: ``crf`` out of range or a detector returning the wrong number of results.
    """
    from tqdm.auto import tqdm

    info = probe_video(src)
    plan = plan_frames(info, max(1, batch_size), filler.max_gap if filler is not None else 0, imgsz)
    if plan.batch < batch_size or not plan.frame_threads or plan.encoder:
        logger.info(
            "%s: %dx%d frames: batch %d (asked %d), %d batch(es) read ahead, %s decoding, encoder %s: "
            "about %d frames held",
            src,
            info.width,
            info.height,
            plan.batch,
            batch_size,
            plan.queued,
            "frame-threaded" if plan.frame_threads else "slice-threaded",
            plan.encoder or "default",
            plan.frames_in_flight,
        )
    batch_size = plan.batch
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    q: queue.Queue = queue.Queue(maxsize=plan.queued)
    stop = threading.Event()
    reader = threading.Thread(
        target=_batches,
        args=(decode_frames(src, info, frame_threads=plan.frame_threads), batch_size, q, stop),
        daemon=True,
    )
    writer: _Writer | None = None
    encoder: _EncodeThread | None = None
    held: dict[int, DecodedFrame] = {}  # frames waiting for the filler's look-ahead
    n_in = n_out = 0
    first_pts: int | None = None
    last_pts = 0
    bar = tqdm(
        total=info.frame_count_estimate,
        unit="frame",
        desc=src.name,
        disable=not progress,
        dynamic_ncols=True,
    )

    def emit(ready: list[FilledFrame]) -> None:
        nonlocal n_out, first_pts, last_pts
        if not ready:
            return
        assert encoder is not None
        sources = [held.pop(f.index) for f in ready]
        out_frames = [hide(s.image, f.detections) for s, f in zip(sources, ready, strict=True)]
        residual = verify(out_frames) if verify is not None else [None] * len(out_frames)
        for f, s, frame, res in zip(ready, sources, out_frames, residual, strict=True):
            encoder.put(frame, s.pts)
            first_pts = s.pts if first_pts is None else first_pts
            last_pts = s.pts
            if on_frame is not None:
                on_frame(FrameRecord(f.index, f.detections, f.filled, res, f.track_id))
            n_out += 1
            bar.update(1)

    try:
        writer = _Writer(tmp, info, src, crf, final_suffix=dst.suffix, final=dst, encoder=plan.encoder)
        encoder = _EncodeThread(writer, depth=max(1, batch_size))
        reader.start()
        while (batch := q.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            dets = detect_in_video(detector, [d.image for d in batch], n_in)
            if len(dets) != len(batch):
                raise ValueError(f"detector returned {len(dets)} results for {len(batch)} frames")
            ready: list[FilledFrame] = []
            for decoded, d in zip(batch, dets, strict=True):
                held[n_in] = decoded
                if filler is not None:
                    ready += filler.push(d, decoded.image.shape[:2])
                else:
                    ready.append(FilledFrame(n_in, d, np.zeros(len(d), bool), np.full(len(d), -1), len(d)))
                n_in += 1
            emit(ready)
        if filler is not None:
            emit(filler.flush())
        if n_out == 0:
            raise VideoError(f"cannot decode video {src}: no frames decoded")
        encoder.close()
        writer.finish()
        writer = None
        os.replace(tmp, dst)
    finally:
        stop.set()
        bar.close()
        if encoder is not None:
            encoder.stop()  # before closing the file it writes into
        if writer is not None:
            writer.abort()
        # Unblock and end the reader if we stopped early.
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.1)
        tmp.unlink(missing_ok=True)
    expected = info.frame_count_estimate
    if not info.frame_count and n_out > 1 and info.duration > 0 and first_pts is not None:
        # No frame count in the header (Matroska): the header's rate of a variable-rate file
        # is a nominal one (25 for a 17 fps clip), so count at the decoded frames' mean
        # interval. (A file cut mid-data loses the reordered neighbours of its last frames,
        # which lengthens that interval a little: a shortfall is then slightly understated.)
        mean_step = float((last_pts - first_pts) * info.time_base) / (n_out - 1)
        if mean_step > 0:
            expected = round((info.duration - info.video_offset) / mean_step)
    outcome = VideoOutcome(info, n_out, expected)
    if not outcome.complete:
        logger.warning("%s: only %d of %d expected frames could be decoded", src, n_out, outcome.expected)
    logger.info("Wrote %s: %d frames at %.3f fps", dst, n_out, info.fps)
    return outcome
