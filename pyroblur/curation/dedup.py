"""Exact and near-duplicate detection over content digests and 64-bit perceptual hashes.

Pure numpy (no FiftyOne here). The perceptual hash is the DCT hash of ``imagehash.phash``
(8x8 lowest frequencies of the DCT of a 32x32 grayscale thumbnail, thresholded at their
median), computed for a whole batch of thumbnails at once. Near-duplicate search avoids the
O(n²) all-pairs comparison with multi-index hashing: split the 64 bits into ``d + 1`` bands;
by the pigeonhole principle two hashes within Hamming distance ``d`` agree exactly on at least
one band, so only hashes that share a band value are compared.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

log = logging.getLogger(__name__)

#: Side of the grayscale thumbnail the hash is computed from, pixels.
THUMB = 32
#: Side of the block of low DCT frequencies kept (8 x 8 = 64 bits).
HASH_SIDE = 8
#: Above this distance the bands get too narrow to prune anything: compare all pairs.
MAX_BANDED_DISTANCE = 11


@functools.cache
def _dct_rows() -> np.ndarray:
    """The first ``HASH_SIDE`` rows of the unnormalized DCT-II matrix (scipy.fftpack's)."""
    k = np.arange(HASH_SIDE)[:, None]
    n = np.arange(THUMB)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * THUMB))


def thumbnail(image) -> np.ndarray:  # noqa: ANN001 - a PIL image
    """The ``32 x 32`` grayscale thumbnail the hash is computed from (as imagehash makes it)."""
    from PIL import Image

    return np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.LANCZOS), dtype=np.uint8)


def phash_batch(thumbs: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes of ``thumbs`` (shape ``(n, 32, 32)``, gray levels 0-255).

    Bit order matches ``int(str(imagehash.phash(img)), 16)``: row-major over the 8 x 8 block,
    most significant bit first. Returns ``uint64`` of shape ``(n,)``.
    """
    thumbs = np.asarray(thumbs, dtype=np.float64).reshape(-1, THUMB, THUMB)
    if len(thumbs) == 0:
        return np.zeros(0, np.uint64)
    c = _dct_rows()
    low = c @ thumbs @ c.T  # (n, 8, 8): the DCT of each thumbnail, lowest frequencies only
    flat = low.reshape(len(thumbs), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).reshape(-1)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between 64-bit hashes (broadcasting)."""
    return np.bitwise_count(np.asarray(a, np.uint64) ^ np.asarray(b, np.uint64))


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """``(shift, width)`` of ``max_distance + 1`` contiguous bit bands covering 64 bits."""
    m = max_distance + 1
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _pairs_banded(h: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, of distinct hashes within ``max_distance`` (band search)."""
    found = []
    for shift, width in _bands(max_distance):
        band = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(band, kind="stable")
        sb = band[order]
        # Hashes sharing a band value are adjacent after sorting: compare each with the next
        # 1, 2, ... positions until no run is that long.
        offset = 1
        while offset < len(h):
            same = sb[:-offset] == sb[offset:]
            if not same.any():
                break
            i, j = order[:-offset][same], order[offset:][same]
            close = hamming(h[i], h[j]) <= max_distance
            found.append(np.stack([np.minimum(i, j)[close], np.maximum(i, j)[close]], axis=1))
            offset += 1
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _pairs_bruteforce(h: np.ndarray, max_distance: int, budget: int = 1 << 23) -> np.ndarray:
    """All pairs within ``max_distance``, blockwise (``budget`` distances per block)."""
    n = len(h)
    chunk = max(1, budget // max(n, 1))
    found = []
    for start in range(0, n, chunk):
        block = h[start : start + chunk]
        dist = hamming(block[:, None], h[None, :])
        ii, jj = np.nonzero(dist <= max_distance)
        ii = ii + start
        keep = jj > ii
        found.append(np.stack([ii[keep], jj[keep]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``max_distance`` bits.

    Identical hashes are paired too. Returns an ``(k, 2)`` int64 array sorted by ``(i, j)``.
    """
    h = np.asarray(hashes, np.uint64).reshape(-1)
    if len(h) < 2:
        return np.zeros((0, 2), np.int64)
    uniq, inverse = np.unique(h, return_inverse=True)
    # Identical hashes: pair every member with the first of its value (enough for grouping,
    # and O(n) where a flat image repeated many times would be O(n²)).
    order = np.argsort(inverse, kind="stable")
    first = order[np.searchsorted(inverse[order], inverse)]
    same = np.nonzero(first != np.arange(len(h)))[0]
    pairs = [np.stack([first[same], same], axis=1)]
    if max_distance > 0 and len(uniq) > 1:
        finder = _pairs_banded if max_distance <= MAX_BANDED_DISTANCE else _pairs_bruteforce
        up = finder(uniq, max_distance)
        # Map pairs of distinct values back to one representative image each.
        rep = order[np.searchsorted(inverse[order], np.arange(len(uniq)))]  # first image of each value
        pairs.append(np.stack([rep[up[:, 0]], rep[up[:, 1]]], axis=1))
    out = np.concatenate(pairs).astype(np.int64)
    out = np.sort(out, axis=1)
    return np.unique(out, axis=0) if len(out) else out.reshape(0, 2)


def connected_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` items linked by ``pairs``: the smallest member index."""
    if n == 0:
        return np.zeros(0, np.int64)
    if len(pairs) == 0:
        return np.arange(n)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # Relabel each component by its smallest member, so labels do not depend on scipy's order.
    smallest = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return smallest[labels]


def near_duplicate_groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Group label per hash: hashes linked by chains of pairs within ``max_distance`` share one."""
    h = np.asarray(hashes, np.uint64).reshape(-1)
    return connected_groups(len(h), near_duplicate_pairs(h, max_distance))


def exact_duplicate_keepers(digests: list[str | None], order_keys: list[tuple]) -> list[int | None]:
    """For each item, the index of the item it duplicates (same digest), or None.

    The kept copy of each digest is the one with the smallest ``order_keys`` entry, so the
    choice does not depend on input order. ``None`` digests (unreadable files) never match.
    """
    best: dict[str, int] = {}
    for i, d in enumerate(digests):
        if d is not None and (d not in best or order_keys[i] < order_keys[best[d]]):
            best[d] = i
    return [None if d is None or best[d] == i else best[d] for i, d in enumerate(digests)]
