import numpy as np

from pyroblur.core.records import load_records
from pyroblur.data.sources.models import SyntheticSource
from pyroblur.data.sources.synthetic import fetch, render_image


def test_render_is_deterministic_and_boxes_inside():
    for i in range(20):
        a, boxes_a = render_image(5, i, 128, 0.1)
        b, boxes_b = render_image(5, i, 128, 0.1)
        assert np.array_equal(a, b) and boxes_a == boxes_b
        assert a.shape == (128, 128, 3)
        for bx in boxes_a:
            assert 0 <= bx.x1 < bx.x2 <= 128 and 0 <= bx.y1 < bx.y2 <= 128
    assert not np.array_equal(render_image(5, 0, 128, 0.1)[0], render_image(6, 0, 128, 0.1)[0])


def test_set_has_both_classes_and_negatives():
    classes = [sorted({b.class_id for b in render_image(0, i, 128, 0.2)[1]}) for i in range(100)]
    assert sum(1 for c in classes if 0 in c) > 20
    assert sum(1 for c in classes if 1 in c) > 20
    assert sum(1 for c in classes if not c) > 5


def test_fetch_writes_index_and_reuses(tmp_path):
    cfg = SyntheticSource(num_images=12, image_size=96, seed=1)
    recs = fetch(cfg, tmp_path)
    assert len(recs) == 12
    index = next(tmp_path.glob("*/index.jsonl"))
    assert load_records(index) == recs
    mtime = index.stat().st_mtime_ns
    assert fetch(cfg, tmp_path) == recs and index.stat().st_mtime_ns == mtime
    other = fetch(cfg.model_copy(update={"seed": 2}), tmp_path)
    assert other[0].filepath != recs[0].filepath  # a new seed never overwrites the old set
