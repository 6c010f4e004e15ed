"""Benchmark reports: the markdown tables (report.md, the Prefect artifact, the CLI summary)
and the flat metric dict that registries and logs use."""

from __future__ import annotations

from pyroblur.manifests import BenchmarkManifest


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def to_markdown(m: BenchmarkManifest, title: str = "PyroBlur benchmark") -> str:
    """The report as markdown tables: accuracy, privacy (coverage, leaks), WIDER E/M/H, speed."""
    rows = [
        f"# {title}",
        "",
        f"Weights: `{m.weights}` ({m.parameters / 1e6:.2f} M parameters, {m.size_mb:.1f} MB); device `{m.device}`.",
        "",
        "| class | images | instances | mAP50 | mAP50-95 | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in m.per_class.items():
        rows.append(
            f"| {name} | {c.images} | {c.instances} | {c.map50:.3f} | {c.map50_95:.3f} | "
            f"{c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} |"
        )
    o = m.overall
    rows.append(
        f"| **all** | | | {o['map50']:.3f} | {o['map50_95']:.3f} | {o['precision']:.3f} | {o['recall']:.3f} | |"
    )
    if m.privacy and m.operating_point:
        op = m.operating_point
        rows += [
            "",
            f"Privacy at anonymization's operating point (conf {op.conf}, enlarge {op.enlarge}, "
            f"memory {op.memory_frames} frames; a box is covered when ≥ {op.covered_fraction:.0%} of its "
            "pixels are hidden). Leaks: (object, frame) pairs left visible on a clip of moving test images.",
            "",
            "| class | boxes | coverage | mean hidden area | clip objects | clip pairs | leaks | longest leak (frames) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, p in m.privacy.items():
            rows.append(
                f"| {name} | {p.boxes} | {_f(p.coverage)} | {_f(p.mean_hidden_area)} | {p.clip_objects} | "
                f"{p.clip_pairs} | {p.leaks} | {p.longest_leak} |"
            )
    if m.background_damage:
        rows += [
            "",
            "Background damage at the same operating point: share of the far background (outside every "
            "ground-truth box grown 2x; the whole picture on the real negatives) that anonymization hides.",
            "",
            "| set | images | mean | worst | worst image |",
            "|---|---:|---:|---:|---|",
        ]
        rows += [
            f"| {name} | {d.images} | {_f(d.mean)} | {_f(d.worst)} | {d.worst_image or '-'} |"
            for name, d in m.background_damage.items()
        ]
    if m.wider is not None:
        w = m.wider
        kind = "fabricated suite in WIDER's layout (not WIDER's images)" if w.fabricated else "official files"
        rows += [
            "",
            f"WIDER FACE protocol on `{w.name}` ({w.images} images, {w.faces} faces; {kind}):",
            "",
            "| Easy | Medium | Hard |",
            "|---:|---:|---:|",
            f"| {w.easy:.3f} | {w.medium:.3f} | {w.hard:.3f} |",
        ]
        if w.in_training:
            rows += ["", f"**Not independent**: {w.in_training} suite images were training/validation images."]
    for suite in m.suites:
        rows += [
            "",
            f"Held-out suite `{suite.name}` ({suite.images} images, never in training):",
            "",
            "| class | images | instances | mAP50 | mAP50-95 | precision | recall |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        rows += [
            f"| {name} | {c.images} | {c.instances} | {c.map50:.3f} | {c.map50_95:.3f} | {c.precision:.3f} | "
            f"{c.recall:.3f} |"
            for name, c in suite.per_class.items()
            if c.instances
        ]
    if m.face_by_size:
        rows += [
            "",
            "Faces by ground-truth height (WIDER-like difficulty: small ≈ Hard, large ≈ Easy):",
            "",
            "| bucket | faces | AP50 | AP50-95 |",
            "|---|---:|---:|---:|",
        ]
        for bucket, v in m.face_by_size.items():
            if v["faces"]:
                rows.append(f"| {bucket} | {int(v['faces'])} | {v['ap50']:.3f} | {v['ap50_95']:.3f} |")
            else:  # no ground truth of that size: AP is undefined, not zero
                rows.append(f"| {bucket} | 0 | n/a | n/a |")
    rows += [
        "",
        f"Speed ({m.device}{', FP16' if m.device != 'cpu' else ''}): **{m.ms_per_image:.1f} ms/image** at batch 1, "
        f"**{o.get('images_per_s_batch32', float('nan')):.1f} images/s** at batch 32 (end to end).",
        f"Ultralytics' validator mAP50 on the same split: {o.get('ultralytics_map50', float('nan')):.3f}.",
    ]
    if m.onnx:
        rows.append(
            f"ONNX: `{m.onnx['path']}` ({m.onnx['size_mb']:.1f} MB), boxes reproduced: {m.onnx['box_parity']:.1%}."
        )
    if m.pr_curve:
        rows.append(f"PR curve: `{m.pr_curve}`.")
    if m.error_report:
        rows.append(f"Error analysis (worst cases as pictures, errors by class, size, attribute): `{m.error_report}`.")
    if m.test_digest:
        rows.append(f"Test set digest: `{m.test_digest}`.")
    return "\n".join(rows) + "\n"


def flat_metrics(m: BenchmarkManifest) -> dict[str, float]:
    """``{"map50": .., "face/map50": .., "face/coverage": .., "wider/hard": ..}`` for registries and logs."""
    out = {k: float(v) for k, v in m.overall.items()}
    for name, c in m.per_class.items():
        for key in ("map50", "map50_95", "precision", "recall", "f1"):
            out[f"{name}/{key}"] = float(getattr(c, key))
    for name, p in m.privacy.items():
        if p.coverage is not None:
            out[f"{name}/coverage"] = float(p.coverage)
        out[f"{name}/leaks"] = float(p.leaks)
        out[f"{name}/longest_leak"] = float(p.longest_leak)
    if m.wider is not None:
        out.update({"wider/easy": m.wider.easy, "wider/medium": m.wider.medium, "wider/hard": m.wider.hard})
    for suite in m.suites:
        for name, c in suite.per_class.items():
            if c.instances:
                out[f"{suite.name}/{name}/map50"] = float(c.map50)
    out["ms_per_image"] = float(m.ms_per_image)
    return out
