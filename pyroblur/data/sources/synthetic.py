"""Embedded, offline, deterministic generator of street-like photos with faces and plates.

Each image is drawn from ``numpy.random.default_rng([seed, index])`` so any image can be
regenerated on its own and the whole set is identical for the same config. Ingredients:

* backgrounds: random crops of the real photos scikit-image ships (no faces among them), or
  gradients with noise and "building" rectangles;
* faces (class 0): the 100 real face crops of ``skimage.data.lfw_subset()`` tinted to a skin tone
  and blended through an elliptical mask, or a drawn cartoon face;
* license plates (class 1): light rectangles with a dark border and dark random registration text,
  some rotated or perspective-skewed (the label is the box around the warped corners);
* unlabeled distractors (hard negatives): the 100 *non-face* crops of ``lfw_subset``, dark signs
  with light text, discs, skin-coloured round objects (shaded ovals with no eyes or mouth), light
  cards with several lines of small text, fabric (stripes and checks) and bare patches of brick,
  grass or gravel, so that "any light rectangle with text", "any skin-coloured blob" or "any
  texture" is not enough;
* a fraction of images with neither class (hard negatives).

Boxes are written in pixels of the generated image.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import string
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pyroblur import FACE, LICENSE_PLATE
from pyroblur.core.records import BoxRecord, SampleRecord, load_records, save_records
from pyroblur.data.sources.models import SyntheticSource

log = logging.getLogger(__name__)

_PHOTOS = ("coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "stereo_motorcycle")
_TEXTURES = ("brick", "grass", "gravel", "camera")
_PLATE_CHARS = string.ascii_uppercase + string.digits
#: Bump when the drawing code changes so generated sets land in a new folder.
GENERATOR_VERSION = 2


@functools.cache
def _backgrounds() -> tuple[np.ndarray, ...]:
    import skimage.data as data

    out = []
    for name in _PHOTOS:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img
        out.append(cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR))
    for name in _TEXTURES:
        gray = getattr(data, name)()
        out.append(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    return tuple(out)


@functools.cache
def _lfw() -> tuple[np.ndarray, np.ndarray]:
    import skimage.data as data

    crops = (data.lfw_subset() * 255).astype(np.uint8)
    return crops[:100], crops[100:]  # faces, non-faces (documented order of the data set)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    if rng.random() < 0.7:
        src = _backgrounds()[rng.integers(len(_backgrounds()))]
        h, w = src.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        img = cv2.resize(src[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        tint = rng.uniform(0.7, 1.2, size=3)
        img = np.clip(img.astype(np.float32) * tint, 0, 255).astype(np.uint8)
    else:
        top, bottom = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
        ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        img = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1).astype(np.float32)
        img += rng.normal(0, 12, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(2, 7))):  # "buildings" and "cars"
            x1, y1 = rng.integers(0, size, size=2)
            w, h = rng.integers(size // 10, size // 2, size=2)
            color = tuple(int(c) for c in rng.integers(0, 256, size=3))
            cv2.rectangle(img, (int(x1), int(y1)), (int(x1 + w), int(y1 + h)), color, -1)
    return np.ascontiguousarray(img)


def _free(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in taken:
        if min(x2, a2) > max(x1, a1) and min(y2, b2) > max(y1, b1):
            return False
    return True


def _place(rng: np.random.Generator, w: int, h: int, size: int, taken: list) -> tuple[int, int] | None:
    for _ in range(30):
        x, y = int(rng.integers(0, max(1, size - w))), int(rng.integers(0, max(1, size - h)))
        if _free((x - 2, y - 2, x + w + 2, y + h + 2), taken):
            return x, y
    return None


def _blend(img: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    h, w = patch.shape[:2]
    roi = img[y : y + h, x : x + w].astype(np.float32)
    a = alpha[..., None].astype(np.float32)
    img[y : y + h, x : x + w] = (roi * (1 - a) + patch.astype(np.float32) * a).astype(np.uint8)


def _face_patch(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A face of ``side`` x ``side`` pixels (BGR) and its alpha mask in [0, 1]."""
    skin = np.array(rng.choice([(80, 110, 170), (120, 160, 210), (60, 90, 140), (150, 190, 230)]), np.float32)
    skin *= rng.uniform(0.85, 1.15)
    if rng.random() < 0.75:
        faces, _ = _lfw()
        gray = cv2.resize(faces[rng.integers(len(faces))], (side, side), interpolation=cv2.INTER_CUBIC)
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
        patch = np.clip(gray[..., None].astype(np.float32) / 160.0 * skin, 0, 255).astype(np.uint8)
    else:  # drawn face: skin oval, eyes, brows, mouth, hair
        patch = np.zeros((side, side, 3), np.uint8)
        patch[:] = tuple(int(c) for c in rng.integers(20, 90, size=3))  # hair/background
        c = side // 2
        cv2.ellipse(
            patch,
            (c, c + side // 12),
            (int(side * 0.4), int(side * 0.46)),
            0,
            0,
            360,
            tuple(int(v) for v in np.clip(skin, 0, 255)),
            -1,
        )
        eye_y, dx, r = int(side * 0.42), int(side * 0.17), max(1, side // 14)
        for ex in (c - dx, c + dx):
            cv2.circle(patch, (ex, eye_y), r + 1, (250, 250, 250), -1)
            cv2.circle(patch, (ex, eye_y), r, (30, 20, 10), -1)
            cv2.line(patch, (ex - r * 2, eye_y - r * 3), (ex + r * 2, eye_y - r * 3), (30, 30, 40), max(1, r // 2))
        cv2.ellipse(
            patch,
            (c, int(side * 0.72)),
            (int(side * 0.14), max(1, side // 16)),
            0,
            0,
            180,
            (40, 40, 140),
            max(1, side // 20),
        )
        cv2.line(patch, (c, int(side * 0.5)), (c - max(1, side // 20), int(side * 0.6)), (40, 60, 110), 1)
    alpha = np.zeros((side, side), np.float32)
    cv2.ellipse(alpha, (side // 2, side // 2), (int(side * 0.48), int(side * 0.5)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, side / 30))
    return patch, alpha


def _hard_negative(rng: np.random.Generator, img: np.ndarray, x: int, y: int, side: int) -> None:
    """One unlabelled look-alike in the ``2 side`` x ``side`` pixels at (x, y): a skin-coloured
    shaded oval (a face's colour and shape, no eyes), a light card with lines of small text (a
    plate's colours, not its layout), fabric, or a bare patch of a real texture."""
    kind = int(rng.integers(4))
    region = img[y : y + side, x : x + side * 2]
    h, w = region.shape[:2]
    if kind == 0:
        skin = np.array(rng.choice([(80, 110, 170), (120, 160, 210), (60, 90, 140), (150, 190, 230)]), np.float32)
        alpha = np.zeros((h, w), np.float32)
        axes = (max(2, int(w * rng.uniform(0.15, 0.4))), max(2, int(h * rng.uniform(0.3, 0.48))))
        cv2.ellipse(alpha, (w // 2, h // 2), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        shade = np.linspace(1.15, 0.75, h, dtype=np.float32)[:, None, None]
        patch = np.clip(np.broadcast_to(skin, (h, w, 3)) * shade, 0, 255).astype(np.uint8)
        _blend(img, patch, cv2.GaussianBlur(alpha, (0, 0), max(0.5, h / 20)), x, y)
    elif kind == 1:
        card = np.full((h, w, 3), int(rng.integers(215, 256)), np.uint8)
        lines = int(rng.integers(3, 6))
        for k in range(lines):
            words = "".join(rng.choice(list(_PLATE_CHARS + "   "), size=int(rng.integers(8, 16))))
            org = (max(1, w // 12), int((k + 1) * h / (lines + 1)))
            cv2.putText(card, words, org, cv2.FONT_HERSHEY_PLAIN, max(0.3, h / (lines * 16)), (40, 40, 40), 1)
        img[y : y + h, x : x + w] = card
    elif kind == 2:
        a, b = (tuple(int(v) for v in rng.integers(0, 256, size=3)) for _ in range(2))
        period = max(2, int(rng.integers(3, 10)))
        yy, xx = np.mgrid[0:h, 0:w]
        checks = ((xx // period) + (yy // period if rng.random() < 0.5 else 0)) % 2 == 0
        img[y : y + h, x : x + w] = np.where(checks[..., None], np.array(a, np.uint8), np.array(b, np.uint8))
    else:
        src = _backgrounds()[len(_PHOTOS) + int(rng.integers(len(_TEXTURES) - 1))]  # brick, grass, gravel
        sy, sx = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
        img[y : y + h, x : x + w] = src[sy : sy + h, sx : sx + w]


def _text_patch(rng: np.random.Generator, w: int, h: int, light_bg: bool) -> np.ndarray:
    if light_bg:
        bg = (int(rng.integers(215, 256)),) * 3 if rng.random() < 0.7 else (30, int(rng.integers(190, 230)), 240)
        fg = tuple(int(v) for v in rng.integers(0, 50, size=3))
    else:
        bg = tuple(int(v) for v in rng.integers(20, 120, size=3))
        fg = (int(rng.integers(200, 256)),) * 3
    patch = np.zeros((h, w, 3), np.uint8)
    patch[:] = bg
    cv2.rectangle(patch, (0, 0), (w - 1, h - 1), fg, max(1, h // 12))
    n = int(rng.integers(5, 8))
    text = "".join(rng.choice(list(_PLATE_CHARS), size=n))
    if n > 5 and rng.random() < 0.5:
        text = text[:3] + " " + text[3:]
    scale = 1.0
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    scale = min((w * 0.86) / tw, (h * 0.62) / th)
    thick = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    org = ((w - tw) // 2, (h + th) // 2)
    cv2.putText(patch, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, fg, thick, cv2.LINE_AA)
    return patch


def _warp_onto(
    rng: np.random.Generator, img: np.ndarray, patch: np.ndarray, x: int, y: int, skew: float
) -> tuple[float, float, float, float]:
    """Warp ``patch`` with a random rotation/perspective and paste at (x, y); return its pixel box."""
    h, w = patch.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    angle = np.deg2rad(rng.uniform(-skew, skew))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    dst = (src - [w / 2, h / 2]) @ rot.T + [w / 2, h / 2]
    dst += rng.uniform(-0.08, 0.08, size=(4, 2)).astype(np.float32) * [w, h] * (skew > 0)
    dst -= dst.min(axis=0)
    out_w, out_h = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    size = img.shape[0]
    x, y = min(x, size - out_w), min(y, size - out_h)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(patch, m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((h, w), np.float32), m, (out_w, out_h), flags=cv2.INTER_LINEAR)
    _blend(img, warped, mask, x, y)
    return (
        float(x + dst[:, 0].min()),
        float(y + dst[:, 1].min()),
        float(x + dst[:, 0].max()),
        float(y + dst[:, 1].max()),
    )


def render_image(seed: int, index: int, size: int, negative_fraction: float) -> tuple[np.ndarray, list[BoxRecord]]:
    """Draw image ``index`` of the set with ``seed``: a BGR ``size`` x ``size`` image and its boxes."""
    rng = np.random.default_rng([seed, index])
    img = _background(rng, size)
    taken: list[tuple[int, int, int, int]] = []
    boxes: list[BoxRecord] = []

    # Distractors first, so labelled objects can sit on top of them.
    _, non_faces = _lfw()
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.random()
        side = int(size * rng.uniform(0.1, 0.25))
        pos = _place(rng, side * 2, side, size, taken)
        if pos is None:
            continue
        x, y = pos
        if kind < 0.3:
            gray = cv2.resize(non_faces[rng.integers(len(non_faces))], (side, side))
            _blend(img, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), np.ones((side, side), np.float32), x, y)
            taken.append((x, y, x + side, y + side))
        elif kind < 0.55:
            sign = _text_patch(rng, side * 2, max(8, side // 2), light_bg=False)
            _warp_onto(rng, img, sign, x, y, skew=5)
            taken.append((x, y, x + side * 2, y + side // 2 + 4))
        elif kind < 0.65:
            color = tuple(int(v) for v in rng.integers(0, 256, size=3))
            cv2.circle(img, (x + side // 2, y + side // 2), side // 2, color, -1)
        else:
            _hard_negative(rng, img, x, y, side)
            taken.append((x, y, x + side * 2, y + side))

    if rng.random() >= negative_fraction:
        n_faces, n_plates = 0, 0
        while n_faces + n_plates == 0:
            n_faces, n_plates = int(rng.integers(0, 4)), int(rng.integers(0, 3))
        for _ in range(n_faces):
            side = int(size * rng.uniform(0.1, 0.3))
            pos = _place(rng, side, side, size, taken)
            if pos is None:
                continue
            patch, alpha = _face_patch(rng, side)
            _blend(img, patch, alpha, *pos)
            x, y = pos
            taken.append((x, y, x + side, y + side))
            boxes.append(BoxRecord(class_id=FACE, x1=x, y1=y, x2=x + side, y2=y + side))
        for _ in range(n_plates):
            w = int(size * rng.uniform(0.18, 0.42))
            h = max(8, int(w / rng.uniform(2.2, 4.6)))
            pos = _place(rng, int(w * 1.15), int(h * 1.6), size, taken)
            if pos is None:
                continue
            patch = _text_patch(rng, w, h, light_bg=True)
            skew = 0.0 if rng.random() < 0.5 else 15.0
            x1, y1, x2, y2 = _warp_onto(rng, img, patch, pos[0], pos[1], skew)
            taken.append((int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))))
            boxes.append(BoxRecord(class_id=LICENSE_PLATE, x1=x1, y1=y1, x2=x2, y2=y2))

    # Photographic nuisances: global blur and brightness.
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    img = np.clip(img.astype(np.float32) * rng.uniform(0.75, 1.2), 0, 255).astype(np.uint8)
    return img, boxes


def config_digest(cfg: SyntheticSource) -> str:
    payload = json.dumps({"cfg": cfg.model_dump(mode="json"), "v": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def fetch(cfg: SyntheticSource, dest: Path) -> list[SampleRecord]:
    """Generate the set under ``dest/<config digest>/`` (reused when already complete)."""
    out = dest / config_digest(cfg)[:16]
    index = out / "index.jsonl"
    if index.exists():
        log.info("synthetic set already generated at %s", out)
        return load_records(index)
    tmp = out.with_name(out.name + ".part")
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in tqdm(range(cfg.num_images), desc=f"generate {cfg.name}", unit="img", mininterval=1.0):
        img, boxes = render_image(cfg.seed, i, cfg.image_size, cfg.negative_fraction)
        name = f"{i:06d}.jpg"
        quality = int(np.random.default_rng([cfg.seed, i, 7]).integers(80, 96))
        if not cv2.imwrite(str(tmp / "images" / name), img, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write {tmp / 'images' / name}")
        records.append(
            SampleRecord(
                filepath=str(out / "images" / name),
                source=cfg.name,
                source_split=None,
                width=cfg.image_size,
                height=cfg.image_size,
                boxes=boxes,
            )
        )
    save_records(records, tmp / "index.jsonl")
    if out.exists():  # an older incomplete copy without index: replace it
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return records


def plan(cfg: SyntheticSource, dest: Path) -> list:
    """The synthetic source downloads nothing."""
    return []
