"""Detectors: anything that turns a batch of frames into :class:`Detections`.

The anonymizer only needs the :class:`Detector` protocol, so tests inject an oracle that
returns ground-truth boxes and the real path wraps an ultralytics model (``.pt`` or an
exported ``.onnx``) behind :class:`UltralyticsDetector`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pyroblur import CLASSES
from pyroblur.core.detections import Detections
from pyroblur.core.devices import resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "Detector",
    "detect_in_video",
    "UltralyticsDetector",
    "UnionDetector",
    "filter_detections",
    "merge_overlapping",
    "resolve_device",
    "supported_by",
    "tile_origins",
]


@runtime_checkable
class Detector(Protocol):
    """Callable that detects faces and plates.

    ``__call__(frames)`` takes a list of ``(H, W, 3)`` BGR uint8 images and returns one
    :class:`Detections` per frame, boxes in **pixels** of that frame, class ids from
    :data:`pyroblur.CLASSES`.
    """

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]: ...


def detect_in_video(detector: Detector, frames: list[np.ndarray], first_index: int) -> list[Detections]:
    """``detector`` on consecutive video frames numbered from ``first_index``: detectors that
    know about sequences (``detect_sequence``, e.g. tiled ones that tile every n-th frame) get
    the frame numbers; any other is called as usual."""
    sequence = getattr(detector, "detect_sequence", None)
    return sequence(frames, first_index) if sequence is not None else detector(frames)


def filter_detections(
    dets: Detections,
    conf: Mapping[int, float],
    classes: Iterable[int] | None = None,
) -> Detections:
    """Keep boxes whose class is in ``classes`` (all when ``None``) and whose confidence
    reaches that class's threshold in ``conf`` (0 when a class has no entry)."""
    if len(dets) == 0:
        return dets
    keep = np.ones(len(dets), bool)
    if classes is not None:
        keep &= np.isin(dets.class_id, np.fromiter(classes, np.int64))
    thresholds = np.array([conf.get(int(c), 0.0) for c in dets.class_id], np.float32)
    keep &= dets.confidence >= thresholds
    return dets.filter(keep)


def tile_origins(width: int, height: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int]]:
    """Top-left corners (pixels) of ``tile`` x ``tile`` windows covering a frame, neighbours
    overlapping by ``overlap`` of a tile so an object cut by one edge is whole in the next
    (up to ``overlap * tile`` pixels). Empty when the frame fits in one tile."""
    if max(width, height) <= tile:
        return []
    step = max(1, int(tile * (1 - overlap)))

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        out = list(range(0, size - tile, step))
        return out + [size - tile]  # the last window ends at the edge

    return [(x, y) for y in starts(height) for x in starts(width)]


def merge_overlapping(dets: Detections, iou: float = 0.5, contained: float = 0.8) -> Detections:
    """Merge same-class boxes into their union (pixels) when they overlap by ``iou`` or
    more, or when ``contained`` of the smaller one lies inside the other.

    Used after tiled detection, where the full frame and up to four tiles report one
    object, a tile often only the part of it inside the tile: the union covers every report
    of it (fail closed), where NMS would keep one box and drop the others.
    """
    if len(dets) < 2:
        return dets
    from pyroblur.core.boxes import box_iou

    order = np.argsort(-dets.confidence)
    boxes, classes, scores = dets.xyxy[order].copy(), dets.class_id[order], dets.confidence[order]
    used = np.zeros(len(boxes), bool)
    out_boxes, out_cls, out_conf = [], [], []
    overlaps = box_iou(boxes, boxes)
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    inside = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    for i in range(len(boxes)):
        if used[i]:
            continue
        group = (~used) & (classes == classes[i]) & ((overlaps[i] >= iou) | (inside[i] >= contained))
        group[i] = True
        used |= group
        members = boxes[group]
        merged = np.concatenate([members[:, :2].min(0), members[:, 2:].max(0)])
        out_boxes.append(merged)
        out_cls.append(classes[i])
        out_conf.append(_extent_confidence(area[group], scores[group], float(np.prod(merged[2:] - merged[:2]))))
    return Detections(np.array(out_boxes, np.float32), np.array(out_cls), np.array(out_conf, np.float32))


def _extent_confidence(areas: np.ndarray, scores: np.ndarray, merged_area: float) -> float:
    """The confidence of a merged box: the best score among the members that span at least
    half of it (the boxes that vouch for its extent), else the largest member's. A small
    confident box inside a large weak one (a tile's 0.8 "face" on a texture, within a full
    frame's 0.3 one) must not lend its score to the large box: the union of an unproven model
    keeps a face box alone only above a confidence, and a wrecked 200 px region once passed
    that way."""
    spanning = areas >= 0.5 * merged_area
    if spanning.any():
        return float(scores[spanning].max())
    return float(scores[int(np.argmax(areas))])


class UnionDetector:
    """Several detectors as one: every box of every member is kept. Where two members report
    a class in a frame, their boxes of that class are merged (:func:`merge_overlapping`: one
    object's boxes become their union, never dropped); a class only one member reports is
    passed on exactly as that member returned it, so e.g. the plates of ``yolo`` and
    ``union`` face modes are the same boxes.

    ``vetted`` (``{class_id: (member index, confidence)}``) asks more evidence of one member's
    boxes of a class: such a box is kept only at ``confidence`` or more, or where another
    member reports a box of that class on it (:func:`supported_by`) in the same frame or, in
    video, within ``window`` frames either side (the other member may run on every n-th frame
    only). The union of an unproven model with CenterFace vets the model's faces this way: the
    demo model's weak face boxes on real photos were textures (a cup, stains, a plume).
    """

    def __init__(
        self,
        members: Sequence[Detector],
        *,
        vetted: Mapping[int, tuple[int, float]] | None = None,
        window: int = 0,
    ) -> None:
        if not members:
            raise ValueError("UnionDetector needs at least one member")
        self.members = list(members)
        self.vetted = dict(vetted or {})
        for cls, (member, _) in self.vetted.items():
            if not 0 <= member < len(self.members):
                raise ValueError(f"vetted class {cls}: no member {member} among {len(self.members)}")
        self.window = max(0, window)
        # video: the frame number the next batch should start at, and per vetted class the
        # other members' boxes on the last ``window`` frames before it
        self._recent: tuple[int, dict[int, list[Detections]]] = (-1, {})
        self._pool: Any = None

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        return self._join(self._each(lambda m: m(frames)))

    def detect_sequence(self, frames: list[np.ndarray], first_index: int) -> list[Detections]:
        """:meth:`__call__` on consecutive video frames (see :func:`detect_in_video`)."""
        return self._join(self._each(lambda m: detect_in_video(m, frames, first_index)), first_index)

    def _each(self, run: Callable[[Detector], list[Detections]]) -> list[list[Detections]]:
        """``run`` on every member, the others in worker threads while the first runs here.

        The members are ONNX/torch sessions that release the GIL: one member's Python glue
        (letterboxing, NMS, tiling) and its small full-frame inferences leave a core idle that
        the other member's inference uses. On the 2-core benchmark machine the union's wall
        time fell while its CPU time stayed the same (docs/benchmarks.md, issue 28)."""
        if len(self.members) == 1:
            return [run(self.members[0])]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(len(self.members) - 1, thread_name_prefix="pyroblur-union")
        futures = [self._pool.submit(contextvars.copy_context().run, run, m) for m in self.members[1:]]
        first = run(self.members[0])
        return [first, *(f.result() for f in futures)]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # a thread pool does not pickle

    def _vet(self, results: list[list[Detections]], first_index: int | None) -> list[list[Detections]]:
        """``results`` with the vetted members' weak boxes that nothing supports dropped."""
        if not self.vetted or not results[0]:
            return results
        n = len(results[0])
        video = first_index is not None
        window = self.window if video else 0
        expected, history = self._recent
        if not video or first_index != expected:
            history = {}  # a still image, or another video: no earlier frames
        out = [list(r) for r in results]
        for cls, (member, conf) in self.vetted.items():
            others = [
                Detections.concat(
                    [r[j].filter(r[j].class_id == cls) for m, r in enumerate(results) if m != member and len(r[j])]
                )
                for j in range(n)
            ]
            seen = history.get(cls, []) + others  # frames first_index - len(earlier) ...
            offset = len(history.get(cls, []))
            for j in range(n):
                dets = out[member][j]
                weak = (dets.class_id == cls) & (dets.confidence < conf)
                if not weak.any():
                    continue
                ref = Detections.concat(seen[max(0, offset + j - window) : offset + j + window + 1])
                keep = ~weak
                # The other member's box must cover a good part of the weak box itself: a small
                # true face inside a 200 px box on a wall or a table does not vouch for the box.
                support = supported_by(dets.xyxy[weak], dets.class_id[weak], ref, of_box=True)
                keep[np.flatnonzero(weak)[support]] = True
                out[member][j] = dets.filter(keep)
            history[cls] = seen[-window:] if window else []
        if video:
            self._recent = (first_index + n, history)
        return out

    def _join(self, results: list[list[Detections]], first_index: int | None = None) -> list[Detections]:
        results = self._vet(results, first_index)
        out = []
        for per_frame in zip(*results, strict=True):
            rows = [d for d in per_frame if len(d)]
            parts = []
            for cls in sorted({int(c) for d in rows for c in d.class_id}):
                of_class = [d.filter(d.class_id == cls) for d in rows if (d.class_id == cls).any()]
                joined = Detections.concat(of_class)
                parts.append(merge_overlapping(joined) if len(of_class) > 1 else joined)
            out.append(Detections.concat(parts))
        return out


#: A tile-only detection (no full-frame box of its class overlaps it) needs this much more
#: confidence than the class threshold: tiles show the model textures at a scale it sees
#: nowhere else (a wall, a table, a sleeve), and most false positives on real footage were
#: tile-only. Capped at :data:`TILE_ONLY_MAX_CONF`.
TILE_ONLY_MARGIN = 0.15
TILE_ONLY_MAX_CONF = 0.9
#: A tile-only box wider or taller than this share of the tile is dropped: an object that
#: large is seen by the full-frame pass (at a quarter of the resolution it is still tens of
#: pixels), so a tile alone "seeing" it is a texture, not a face or a plate.
TILE_ONLY_MAX_SIDE = 0.5
#: A box within this many pixels of a tile's inner edge is cut by it (see
#: :meth:`TiledDetector._cut_by_edge`).
TILE_EDGE_PX = 4


def supported_by(
    boxes: np.ndarray, classes: np.ndarray, ref: Detections, min_overlap: float = 0.3, *, of_box: bool = False
) -> np.ndarray:
    """Per box: whether a same-class box of ``ref`` covers at least ``min_overlap`` of it or of
    itself (pixels); with ``of_box``, at least ``min_overlap`` of the box (a small ``ref`` box
    inside a large box does not support it)."""
    out = np.zeros(len(boxes), bool)
    if not len(boxes) or not len(ref):
        return out
    lt = np.maximum(boxes[:, None, :2], ref.xyxy[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], ref.xyxy[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)[:, None]
    area_b = (ref.xyxy[:, 2:] - ref.xyxy[:, :2]).prod(axis=1)[None, :]
    share = inter / np.maximum(area_a if of_box else np.minimum(area_a, area_b), 1e-9)
    same = classes[:, None] == ref.class_id[None, :]
    return ((share >= min_overlap) & same).any(axis=1)


class TiledDetector:
    """Base of our model runners: :meth:`__call__` runs :meth:`_predict` on each full frame
    and, when ``self.tiles`` and the frame is at least ``tile_min_ratio`` times the input
    size, on overlapping ``imgsz`` tiles at full resolution, in batches of ``tile_batch``,
    and merges the boxes (:func:`merge_overlapping`). Subclasses set ``imgsz``, ``tiles``,
    ``tile_min_ratio``, ``tile_batch`` and ``_model_classes`` and implement ``_predict``.

    A tile-only detection needs more evidence than a full-frame one (:meth:`_tile_evidence`):
    the class threshold plus :data:`TILE_ONLY_MARGIN`, and a box no larger than
    :data:`TILE_ONLY_MAX_SIDE` of the tile, and, when cut by an inner edge of its tile, a box of
    its class from another tile on it (never when it would lie whole in the neighbouring tile).
    A tile box that a full-frame box of its class overlaps is kept at the class threshold (it
    completes an object the full frame saw)."""

    imgsz: int
    tiles: bool = False
    tile_min_ratio: float = 1.5
    tile_batch: int = 32
    #: video (:meth:`detect_sequence`): the tiles run on every ``tile_every``-th frame, the
    #: full frame on every frame; the tracker fills the frames between (``memory_frames``).
    tile_every: int = 1
    _model_classes: list[int]

    def _predict(self, images: list[np.ndarray]) -> list[Detections]:
        raise NotImplementedError

    def _configure(
        self,
        weights: str | Path,
        *,
        conf: Mapping[int, float] | None,
        classes: Sequence[int] | None,
        iou: float,
        tiles: bool,
        tile_min_ratio: float,
        tile_batch: int,
    ) -> None:
        """The settings every model runner shares (see :class:`UltralyticsDetector`'s Args).

        Raises:
            FileNotFoundError: ``weights`` is not a file.
        """
        self.weights = Path(weights)
        if not self.weights.is_file():
            raise FileNotFoundError(f"model weights not found: {self.weights}")
        self.conf = {i: 0.25 for i in range(len(CLASSES))} | dict(conf or {})
        self.classes = tuple(range(len(CLASSES)) if classes is None else classes)
        self.iou = iou
        self.tiles = tiles
        self.tile_min_ratio = tile_min_ratio
        self.tile_batch = max(1, tile_batch)

    def _map_classes(self, names: Mapping[int, str] | Sequence[str]) -> None:
        """Model class index -> ours (:meth:`UltralyticsDetector._class_map`), and the model
        classes to ask for: those that map to a class we anonymize."""
        self._to_ours = UltralyticsDetector._class_map(names)
        self._model_classes = sorted(m for m, ours in self._to_ours.items() if ours in self.classes)

    def _tiles_of(self, frame: np.ndarray) -> list[tuple[int, int]]:
        h, w = frame.shape[:2]
        if not self.tiles or max(h, w) < self.tile_min_ratio * self.imgsz:
            return []
        return tile_origins(w, h, self.imgsz)

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        return self._detect(frames, [True] * len(frames))

    def detect_sequence(self, frames: list[np.ndarray], first_index: int) -> list[Detections]:
        """Consecutive video frames numbered from ``first_index``: tiles on every
        ``tile_every``-th frame only (a tile-only object is then detected every few frames and
        the tracker's gap filling covers it between; most of the cost of a tiled pass is the
        tiles: 45 of them for a 1280x720 frame at 192 px)."""
        every = max(1, int(self.tile_every))
        return self._detect(frames, [(first_index + j) % every == 0 for j in range(len(frames))])

    def _detect(self, frames: list[np.ndarray], tile_these: list[bool]) -> list[Detections]:
        if not frames:
            return []
        if not self._model_classes:
            return [Detections.empty() for _ in frames]
        origins = [self._tiles_of(f) if tile else [] for f, tile in zip(frames, tile_these, strict=True)]
        whole = self._predict(list(frames))
        if not any(origins):
            return whole
        # Full frames in their own call, exactly as without tiles (a batch mixing shapes is
        # letterboxed differently and finds other boxes), then the tiles in bounded batches:
        # tiled detection is always a superset of the full-frame pass.
        jobs: list[tuple[int, int, int, np.ndarray]] = []  # (frame, x0, y0, tile)
        for i, (frame, tiles) in enumerate(zip(frames, origins, strict=True)):
            jobs += [(i, x, y, frame[y : y + self.imgsz, x : x + self.imgsz]) for x, y in tiles]
        per_tile: list[list[tuple[int, int, Detections]]] = [[] for _ in frames]
        for k in range(0, len(jobs), self.tile_batch):
            chunk = jobs[k : k + self.tile_batch]
            for (i, x, y, _), dets in zip(chunk, self._predict([j[3] for j in chunk]), strict=True):
                per_tile[i].append((x, y, dets))
        out = []
        for i, frame in enumerate(frames):
            parts = [whole[i]] if len(whole[i]) else []
            parts += self._tile_evidence(per_tile[i], whole[i], frame.shape[:2], origins[i])
            out.append(merge_overlapping(Detections.concat(parts)) if parts else whole[i])
        return out

    def _tile_evidence(
        self,
        tiles: list[tuple[int, int, Detections]],
        whole: Detections,
        shape: tuple[int, int],
        origins: list[tuple[int, int]],
    ) -> list[Detections]:
        """Each tile's boxes (tile pixels) in frame pixels, a tile-only one kept only with the
        extra evidence of :class:`TiledDetector`'s rule; a tile-only box cut by an inner edge
        of its tile (:meth:`_cut_by_edge`) is kept only where another tile's box of its class
        overlaps it, and never when the neighbouring tile sees that object whole."""
        conf = getattr(self, "conf", None) or {}
        placed = [
            (x, y, Detections(d.xyxy + np.array([x, y, x, y], np.float32), d.class_id, d.confidence), d)
            for x, y, d in tiles
            if len(d)
        ]
        out = []
        for k, (x, y, frame_dets, dets) in enumerate(placed):
            backed = supported_by(frame_dets.xyxy, dets.class_id, whole)
            need = np.array(
                [min(TILE_ONLY_MAX_CONF, conf.get(int(c), 0.25) + TILE_ONLY_MARGIN) for c in dets.class_id],
                np.float32,
            )
            side = (dets.xyxy[:, 2:] - dets.xyxy[:, :2]).max(axis=1)
            alone_ok = (dets.confidence >= need) & (side <= TILE_ONLY_MAX_SIDE * self.imgsz)
            cut, whole_next_door = self._cut_by_edge(frame_dets.xyxy, x, y, shape, origins)
            if cut.any():
                others = [d for j, (_, _, d, _) in enumerate(placed) if j != k]
                seen_elsewhere = supported_by(
                    frame_dets.xyxy, dets.class_id, Detections.concat(others) if others else Detections.empty()
                )
                alone_ok &= ~cut | (seen_elsewhere & ~whole_next_door)
            kept = frame_dets.filter(backed | alone_ok)
            if len(kept):
                out.append(kept)
        return out

    def _cut_by_edge(
        self, xyxy: np.ndarray, x: int, y: int, shape: tuple[int, int], origins: list[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per box (frame pixels) of the tile at ``(x, y)``: whether it touches an edge of the
        tile inside the frame (within :data:`TILE_EDGE_PX`), and whether, touching it, it is
        narrow enough across that edge to lie whole in the neighbouring tile's overlap.

        On real footage most tile-only false positives sat on a tile's inner edge (a texture
        cut by the crop, at 0.6-0.84 confidence): an object that small is whole, with its
        context, in the neighbouring tile, which finds it there if it is one; a larger object
        cut by every tile shows in two tiles at least."""
        h, w = shape
        size = self.imgsz
        xs = sorted({ox for ox, _ in origins})
        ys = sorted({oy for _, oy in origins})
        cut = np.zeros(len(xyxy), bool)
        fits = np.zeros(len(xyxy), bool)
        for axis, start, starts, limit in ((0, x, xs, w), (1, y, ys, h)):
            k = starts.index(start)
            end = min(start + size, limit)
            extent = xyxy[:, axis + 2] - xyxy[:, axis]
            if k > 0:  # the edge at ``start`` is inside the frame; the previous tile overlaps it
                overlap = starts[k - 1] + size - start
                touch = xyxy[:, axis] <= start + TILE_EDGE_PX
                cut |= touch
                fits |= touch & (extent <= overlap - TILE_EDGE_PX)
            if end < limit and k + 1 < len(starts):
                overlap = end - starts[k + 1]
                touch = xyxy[:, axis + 2] >= end - TILE_EDGE_PX
                cut |= touch
                fits |= touch & (extent <= overlap - TILE_EDGE_PX)
        return cut, fits


def trained_imgsz(model: Any, default: int = 640) -> int:
    """The input size (pixels) a YOLO model was trained or exported at, else ``default``."""
    size = (getattr(model, "overrides", None) or {}).get("imgsz")
    if size is None:
        size = ((getattr(model, "ckpt", None) or {}).get("train_args") or {}).get("imgsz")
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size) if size else default


class UltralyticsDetector(TiledDetector):
    """A YOLO model (``.pt`` weights or an exported ``.onnx``) as a :class:`Detector`.

    Args:
        weights: path of the ``.pt`` or ``.onnx`` file.
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda:0"``, ``"mps"``...
        half: FP16 inference; ``None`` means on when the device is CUDA (ignored elsewhere).
        conf: per-class confidence thresholds ``{class_id: threshold}``; missing classes use
            0.25.
        classes: class ids to return (default both faces and plates).
        imgsz: inference size in pixels (longest side), ultralytics' ``imgsz``; ``None`` uses
            the size the model was trained (or exported) at.
        iou: NMS IoU threshold.
        tiles: besides the full frame (downscaled to ``imgsz``), run the model on
            overlapping ``imgsz`` x ``imgsz`` tiles at the frame's own resolution when the
            frame is at least ``tile_min_ratio`` times larger, and merge. One input size
            cannot see both a 200 px face (needs the whole frame) and a 20 px one (needs
            full resolution); the cost grows with the number of tiles.
        tile_batch: images per ``predict`` call when tiling (bounds memory).

    Batched inference: the caller passes a list of frames and the whole list runs as one
    batch (callers chunk by their ``batch_size``).
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str | None = "auto",
        half: bool | None = None,
        conf: Mapping[int, float] | None = None,
        classes: Sequence[int] | None = None,
        imgsz: int | None = None,
        iou: float = 0.5,
        tiles: bool = False,
        tile_min_ratio: float = 1.5,
        tile_batch: int = 32,
    ) -> None:
        from ultralytics import YOLO

        self._configure(
            weights,
            conf=conf,
            classes=classes,
            iou=iou,
            tiles=tiles,
            tile_min_ratio=tile_min_ratio,
            tile_batch=tile_batch,
        )
        self.device = resolve_device(device)
        is_cuda = self.device.startswith("cuda") or self.device.isdigit()
        self.half = bool(is_cuda if half is None else half and is_cuda)
        task = "detect" if self.weights.suffix.lower() == ".onnx" else None
        self.model = YOLO(str(self.weights), task=task)
        # Objects look as large as in training only at the training size: a model trained at
        # 192 px and run at 640 px sees every face 3x too large and misses most of them.
        self.imgsz = imgsz or trained_imgsz(self.model)
        self._precision = self._precision_args(self.half)
        self._map_classes(getattr(self.model, "names", None) or {})
        logger.info(
            "Loaded %s on %s (imgsz=%d, tiles=%s, half=%s, classes=%s, conf=%s)",
            self.weights,
            self.device,
            self.imgsz,
            self.tiles,
            self.half,
            [CLASSES[c] for c in self.classes],
            self.conf,
        )

    @staticmethod
    def _precision_args(half: bool) -> dict[str, Any]:
        """FP16 request in the spelling of the installed ultralytics (``quantize=16`` since
        8.4, ``half=True`` before)."""
        if not half:
            return {}
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}

    @staticmethod
    def _class_map(names: Mapping[int, str] | Sequence[str]) -> dict[int, int]:
        """Model class index -> our class id, by name; falls back to the index itself when
        the model does not name our classes (e.g. a freshly built ``yolo11n.yaml``)."""
        if not isinstance(names, Mapping):
            names = dict(enumerate(names))
        by_name = {int(i): CLASSES.index(n) for i, n in names.items() if n in CLASSES}
        if by_name:
            return by_name
        logger.warning(
            "Model class names %s do not include %s; assuming class ids 0=face, 1=license_plate",
            list(names.values())[:5],
            CLASSES,
        )
        return {i: i for i in range(len(CLASSES))}

    def _predict(self, images: list[np.ndarray]) -> list[Detections]:
        """One ``predict`` over ``images``; boxes in pixels of each image, our class ids."""
        results: list[Any] = self.model.predict(
            list(images),
            conf=min(self.conf.get(c, 0.25) for c in self.classes),
            iou=self.iou,
            classes=self._model_classes,
            device=self.device,
            imgsz=self.imgsz,
            verbose=False,
            **self._precision,
        )
        out = []
        for result in results:
            dets = Detections.from_ultralytics(result)
            if len(dets):
                lut = np.full(int(dets.class_id.max()) + 1, -1, np.int64)
                for m, ours in self._to_ours.items():
                    if m < len(lut):
                        lut[m] = ours
                dets = Detections(dets.xyxy, lut[dets.class_id], dets.confidence)
                dets = filter_detections(dets, self.conf, self.classes)
            out.append(dets)
        return out
