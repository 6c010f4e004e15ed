"""Folder anonymization: tree mirrored under OUTPUT, a corrupt image skipped with its reason
while the rest is written, outputs never overwriting inputs, atomic writes, and the
``anonymize`` typer command's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from flows.cli.anonymize import EXIT_ERROR, EXIT_OK, EXIT_SKIPPED, anonymize_command
from pyroblur.anonymize import api
from pyroblur.anonymize.api import AnonymizeOptions, FileResult, UnsafeOutputError, anonymize_path, plan_outputs
from pyroblur.core.detections import Detections

H, W = 96, 128
#: Ground truth per file name: one face and one plate box, pixels.
BOXES = {
    "a.png": [(10, 10, 40, 44, 0), (70, 60, 120, 80, 1)],
    "b.png": [(80, 8, 120, 50, 0)],
    "c.jpg": [(30, 30, 70, 70, 0), (0, 70, 40, 96, 1)],
}


def textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # 8 px blocks: aligned with JPEG's 8x8 grid, so re-encoding barely touches them.
    return np.kron(rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))


class Oracle:
    """Detector that recognises each test image by its texture and returns its ground truth."""

    def __init__(self) -> None:
        self.known = {name: textured(i).astype(np.int16) for i, name in enumerate(BOXES)}

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        out = []
        for f in frames:
            rows = next(
                (BOXES[n] for n, ref in self.known.items() if ref.shape == f.shape and np.abs(ref - f).mean() < 30),
                [],
            )
            xyxy = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
            out.append(Detections(xyxy, np.array([r[4] for r in rows], np.int64)))
        return out


@pytest.fixture
def tree(tmp_path) -> Path:
    """in/a.png, in/sub/b.png, in/sub/deeper/c.jpg, in/sub/broken.jpg, in/notes.txt, in/.hidden.png"""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    paths = {"a.png": root / "a.png", "b.png": root / "sub" / "b.png", "c.jpg": root / "sub" / "deeper" / "c.jpg"}
    for i, (name, path) in enumerate(paths.items()):
        params = [cv2.IMWRITE_JPEG_QUALITY, 100] if name.endswith(".jpg") else []
        cv2.imwrite(str(path), textured(i), params)
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    cv2.imwrite(str(root / ".hidden.png"), textured(9))
    return root


def _opts(**kw) -> AnonymizeOptions:
    return AnonymizeOptions(**({"enlarge": 1.0, "progress": False} | kw))


def _check_hidden(src: np.ndarray, dst: np.ndarray, rows, exact: bool) -> None:
    mask = np.zeros((H, W), bool)
    for x1, y1, x2, y2, _ in rows:
        box_diff = np.abs(src[y1:y2, x1:x2].astype(int) - dst[y1:y2, x1:x2].astype(int)).mean()
        assert box_diff > 20, f"box {(x1, y1, x2, y2)} not hidden ({box_diff:.1f})"
        mask[max(0, y1 - 8) : y2 + 8, max(0, x1 - 8) : x2 + 8] = True
    far = np.abs(src.astype(int) - dst.astype(int))[~mask]
    if exact:
        assert far.max() == 0, "pixels far from boxes changed"
    else:  # JPEG re-encoding (4:2:0 chroma on random colour blocks) costs a few levels
        assert far.mean() < 8


def test_folder_with_corrupt_file(tree, tmp_path) -> None:
    out = tmp_path / "out"
    report = anonymize_path(tree, out, _opts(sidecar=True), detector=Oracle())

    written = sorted(r.output.relative_to(out).as_posix() for r in report.processed)
    assert written == ["a.png", "sub/b.png", "sub/deeper/c.jpg"]
    skipped = {s.input.relative_to(tree).as_posix(): s.reason for s in report.skipped}
    assert set(skipped) == {"sub/broken.jpg", "notes.txt"}
    assert "not a readable image" in skipped["sub/broken.jpg"]
    assert "unsupported file type" in skipped["notes.txt"]
    assert not report.ok
    for rel, name in [("a.png", "a.png"), ("sub/b.png", "b.png"), ("sub/deeper/c.jpg", "c.jpg")]:
        src = cv2.imread(str(tree / rel))
        dst = cv2.imread(str(out / rel))
        assert dst.shape == src.shape
        _check_hidden(src, dst, BOXES[name], exact=rel.endswith(".png"))
        sidecar = json.loads((out / (rel + ".json")).read_text())
        assert [d["xyxy"] for d in sidecar["detections"]] == [list(map(float, r[:4])) for r in BOXES[name]]
    assert not (out / "sub" / "broken.jpg").exists() and not (out / ".hidden.png").exists()
    leftovers = [p for p in out.rglob(".*")]
    assert not leftovers, f"temporary files left: {leftovers}"


def test_single_image_to_file_and_to_folder(tree, tmp_path) -> None:
    report = anonymize_path(tree / "a.png", tmp_path / "x" / "anon.png", _opts(), detector=Oracle())
    assert report.ok and report.processed[0].output == tmp_path / "x" / "anon.png"
    folder = tmp_path / "y"
    folder.mkdir()
    report = anonymize_path(tree / "a.png", folder, _opts(), detector=Oracle())
    assert report.processed[0].output == folder / "a.png"
    _check_hidden(cv2.imread(str(tree / "a.png")), cv2.imread(str(folder / "a.png")), BOXES["a.png"], exact=True)


def test_alpha_and_gray_layout_kept(tmp_path) -> None:
    rgba = np.dstack([textured(0), np.full((H, W), 128, np.uint8)])
    gray = cv2.cvtColor(textured(1), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = tmp_path.parent / (tmp_path.name + "-out")
    box = [Detections(np.array([[10, 10, 60, 60]]), np.array([0]))]
    report = anonymize_path(tmp_path, out, _opts(), detector=lambda fs: box * len(fs))
    assert report.ok
    a = cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)
    g = cv2.imread(str(out / "gray.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (H, W, 4) and (a[..., 3] == 128).all()
    assert g.shape == (H, W)
    assert np.abs(g[10:60, 10:60].astype(int) - gray[10:60, 10:60]).mean() > 20


# --- outputs never overwrite inputs ------------------------------------------------------


def test_refuses_output_equal_to_input(tree) -> None:
    with pytest.raises(UnsafeOutputError, match="is INPUT"):
        anonymize_path(tree, tree, _opts(), detector=Oracle())
    with pytest.raises(UnsafeOutputError):
        anonymize_path(tree / "a.png", tree / "a.png", _opts(), detector=Oracle())
    with pytest.raises(UnsafeOutputError):
        anonymize_path(tree / "sub" / ".." / "a.png", tree / "a.png", _opts(), detector=Oracle())


def test_refuses_output_folder_that_would_replace_the_input(tree) -> None:
    # INPUT a file, OUTPUT its own folder: the output would be the input itself.
    with pytest.raises(UnsafeOutputError, match="would overwrite input"):
        anonymize_path(tree / "a.png", tree, _opts(), detector=Oracle())


def test_refuses_symlinked_output_onto_input(tree, tmp_path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tree, target_is_directory=True)
    with pytest.raises(UnsafeOutputError):
        anonymize_path(tree, link, _opts(), detector=Oracle())


def test_output_inside_input_is_not_read_back(tree) -> None:
    out = tree / "anonymized"
    report = anonymize_path(tree, out, _opts(), detector=Oracle())
    assert len(report.processed) == 3
    again = anonymize_path(tree, out, _opts(), detector=Oracle())  # second run: same plan
    assert sorted(r.input for r in again.processed) == sorted(r.input for r in report.processed)


def test_nothing_written_when_refused(tree, tmp_path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in tree.rglob("*") if p.is_file())
    with pytest.raises(UnsafeOutputError):
        anonymize_path(tree, tree, _opts(), detector=Oracle())
    assert sorted(p.stat().st_mtime_ns for p in tree.rglob("*") if p.is_file()) == before


def test_plan_maps_odd_video_containers_to_mkv(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    for name in ("v.webm", "w.mp4", "x.MPG"):
        (tmp_path / "in" / name).write_bytes(b"")
    plan = plan_outputs(tmp_path / "in", tmp_path / "out")
    assert sorted(d.name for _, d in plan.items) == ["v.mkv", "w.mp4", "x.mkv"]


def test_failed_write_leaves_no_partial_file(tree, tmp_path, monkeypatch) -> None:
    def boom(data):
        raise OSError("disk full")

    real = Path.write_bytes
    monkeypatch.setattr(
        Path, "write_bytes", lambda self, data: boom(data) if ".partial-" in self.name else real(self, data)
    )
    out = tmp_path / "out"
    report = anonymize_path(tree / "a.png", out / "a.png", _opts(), detector=Oracle())
    assert "disk full" in report.skipped[0].reason
    assert not out.exists() or not any(out.iterdir())


# --- the one folder loop (anonymize_path's and every shard of the flow's) ----------------


def _items(n: int) -> list[tuple[Path, Path]]:
    return [(Path(f"in/{i}.png"), Path(f"out/{i}.png")) for i in range(n)]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_the_folder_loop_skips_a_failing_file_and_keeps_the_order(concurrency) -> None:
    import contextvars

    job = contextvars.ContextVar("job", default=None)
    job.set("job-1")
    seen: list[str | None] = []

    def step(src: Path, dst: Path) -> FileResult:
        seen.append(job.get())  # a Prefect task reads its flow run from the caller's context
        if src.name == "2.png":
            raise ValueError("broken input")
        return FileResult(input=src, output=dst, kind="image")

    report = api.anonymize_items(_items(6), step, concurrency=concurrency)
    assert [r.input.name for r in report.processed] == ["0.png", "1.png", "3.png", "4.png", "5.png"]
    assert [(s.input.name, s.reason) for s in report.skipped] == [("2.png", "ValueError: broken input")]
    assert seen == ["job-1"] * 6


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_full_disk_stops_the_folder_loop(concurrency) -> None:
    import errno

    started: list[str] = []

    def step(src: Path, dst: Path) -> FileResult:
        started.append(src.name)
        if src.name == "1.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return FileResult(input=src, output=dst, kind="image")

    with pytest.raises(api.OutputSpaceError, match="out/1.png"):
        api.anonymize_items(_items(40), step, concurrency=concurrency)
    if concurrency == 1:  # in order: nothing after the full disk was started
        assert started == ["0.png", "1.png"]


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("anonymize")(anonymize_command)

    @app.callback()
    def _root() -> None:  # keeps "anonymize" as a sub-command, as in the main app
        pass

    return app


@pytest.fixture
def oracle_cli(monkeypatch) -> None:
    monkeypatch.setattr(api, "with_resolved_weights", lambda options: options)  # no model file: none to resolve
    monkeypatch.setattr(api, "build_detector", lambda options: Oracle())


def test_cli_exit_code_3_when_something_was_skipped(cli_app, oracle_cli, tree, tmp_path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["anonymize", str(tree), str(out), "--mode", "mosaic"], env={"COLUMNS": "300"})
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert "broken.jpg" in result.output and "3 file(s) anonymized" in result.output
    assert (out / "sub" / "deeper" / "c.jpg").is_file()


def test_cli_exit_code_0_when_all_written(cli_app, oracle_cli, tree, tmp_path) -> None:
    result = CliRunner().invoke(
        cli_app, ["anonymize", str(tree / "a.png"), str(tmp_path / "a.png"), "--classes", "face", "--sidecar"]
    )
    assert result.exit_code == EXIT_OK, result.output
    doc = json.loads((tmp_path / "a.png.json").read_text())
    assert [d["class"] for d in doc["detections"]] == ["face"]  # --classes face drops the plate


def test_cli_without_model_names_the_registry(cli_app, tree, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYROBLUR_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli_app, ["anonymize", str(tree), str(tmp_path / "out")])
    assert result.exit_code == EXIT_ERROR, result.output
    text = " ".join(result.output.split())
    assert "registry" in text and "--model" in text
    assert not (tmp_path / "out").exists()


def test_default_model_is_the_registry_champion(tmp_path) -> None:
    from pyroblur.registry.store import Candidate, promote_if_better

    registry = tmp_path / "registry.json"
    with pytest.raises(api.NoModelError, match="registry"):
        api.resolve_weights(None, registry)
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"not really a model")
    promote_if_better(registry, Candidate(weights=weights, metrics={"map": 0.5}), "map")
    champion = api.resolve_weights(None, registry)
    assert champion.is_file() and champion.read_bytes() == weights.read_bytes()
    champion.write_bytes(b"altered after promotion")
    # The registry's own error passes through: it names the file and says what to do.
    from pyroblur.registry.store import RegistryError

    with pytest.raises(RegistryError, match="altered since registration") as err:
        api.resolve_weights(None, registry)
    assert str(champion) in str(err.value) and "--model" in str(err.value)


def test_cli_reports_a_model_that_does_not_load(cli_app, tree, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(cli_app, ["anonymize", str(tree), str(tmp_path / "out"), "--model", str(bad)])
    assert result.exit_code == EXIT_ERROR
    assert "Could not load the model" in " ".join(result.output.split())


def test_cli_refuses_overwriting_input(cli_app, oracle_cli, tree) -> None:
    result = CliRunner().invoke(cli_app, ["anonymize", str(tree), str(tree)])
    assert result.exit_code == EXIT_ERROR
    assert "refusing" in " ".join(result.output.split())


def test_cli_rejects_unknown_class(cli_app, oracle_cli, tree, tmp_path) -> None:
    result = CliRunner().invoke(cli_app, ["anonymize", str(tree), str(tmp_path / "o"), "--classes", "car"])
    assert result.exit_code == 2


def test_cli_help_lists_options_and_exit_codes(cli_app) -> None:
    result = CliRunner().invoke(cli_app, ["anonymize", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for word in ("--model", "--mode", "--conf-face", "--conf-plate", "--classes", "--enlarge", "--memory-frames"):
        assert word in result.output
    for word in ("--batch-size", "--device", "--sidecar", "Exit codes"):
        assert word in result.output
    for word in ("--face-detector", "--tiles", "--ellipse", "--blur-strength", "--mosaic-cells", "--color"):
        assert word in result.output
    for word in ("--crf", "--jpeg-quality", "--audit", "--verify", "--strict", "--resume"):
        assert word in result.output
    # rich reads "[default: ...]" as markup unless escaped: the text must survive.
    assert "[default: the model's training size]" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("value", "bgr"),
    [("0,0,0", (0, 0, 0)), ("255,128,0", (0, 128, 255)), (" 1, 2 ,3", (3, 2, 1))],
)
def test_color_option_is_rgb_and_becomes_bgr(value, bgr) -> None:
    from flows.cli.anonymize import _parse_color

    assert _parse_color(value) == bgr


@pytest.mark.parametrize("value", ["", "red", "1,2", "1,2,3,4", "0,0,256", "-1,0,0"])
def test_color_option_rejects_bad_values(value) -> None:
    from flows.cli.anonymize import _parse_color

    with pytest.raises(typer.BadParameter):
        _parse_color(value)


# --- Prefect flow ------------------------------------------------------------------------


_FLOW_SCRIPT = """
import json, os, sys
from pathlib import Path
from ultralytics import YOLO
from flows.anonymize import AnonymizeFolderParams, anonymize_folder
from pyroblur.anonymize import AnonymizeOptions

tree, out = Path(sys.argv[1]), Path(sys.argv[2])
weights = out.parent / "yolo11n-random.pt"
YOLO("yolo11n.yaml").save(weights)
for failure in ("anonymize:transient", "anonymize:permanent", ""):
    os.environ["PYROBLUR_INJECT_FAILURE"] = failure
    opts = AnonymizeOptions(weights=weights, device="cpu", imgsz=128)
    # The last run repeats the first one's job (two files in flight): everything is resumed.
    params = AnonymizeFolderParams(
        input_dir=tree, output_dir=out / (failure[10:] or "transient"), options=opts, concurrency=2
    )
    result = anonymize_folder(params)
    print("RESULT", result.model_dump_json())
"""


@pytest.mark.integration
def test_anonymize_folder_flow(prefect_server, tree, tmp_path) -> None:
    """One task per file against a real Prefect server, with a real (random-init) YOLO11n:
    the corrupt file is skipped, a transient failure is retried away, a permanent one is
    reported per file, each run publishes a markdown artifact, and the same job run again
    resumes every finished file instead of redoing it."""
    from conftest import API, run_flow_script

    _, (transient, permanent, again) = run_flow_script(_FLOW_SCRIPT, [str(tree), str(tmp_path / "out")], prefect_server)
    assert transient["written"] == 3 and transient["resumed"] == 0
    assert again["written"] == 3 and again["resumed"] == 3, "an unchanged job was redone"
    assert {Path(s["input"]).name for s in transient["report"]["skipped"]} == {"broken.jpg", "notes.txt"}
    assert (tmp_path / "out" / "transient" / "sub" / "deeper" / "c.jpg").is_file()
    assert permanent["written"] == 0
    reasons = {Path(s["input"]).name: s["reason"] for s in permanent["report"]["skipped"]}
    assert all("injected permanent failure" in reasons[n] for n in ("a.png", "b.png", "c.jpg"))
    artifacts = API.post(
        f"{prefect_server}/artifacts/filter", json={"artifacts": {"key": {"any_": ["anonymize-report"]}}}, timeout=10
    ).json()
    assert len(artifacts) >= 2 and any("broken.jpg" in (a.get("data") or "") for a in artifacts)
