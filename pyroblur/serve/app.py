"""The FastAPI application: images (synchronous), video jobs (durable), the champion, health,
metrics and a web page, all in one process.

Every pixel comes from the library: a request's upload is written to a temporary file and
anonymized by :func:`pyroblur.anonymize.files.anonymize_file`, the function the CLI runs,
with a detector that hands its frames to the :class:`~pyroblur.serve.batcher.Batcher`.
So the output equals ``pyroblur anonymize``'s for the same file and options.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import mimetypes
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pyroblur.anonymize.detector import Detector
from pyroblur.anonymize.options import AnonymizeOptions
from pyroblur.serve.batcher import Batcher
from pyroblur.serve.champion import ModelHolder, ServedModel, resolve_served_model
from pyroblur.serve.errors import ApiError, ErrorResponse
from pyroblur.serve.jobs import FINAL, Job, JobStore, JobWorkers, remove_job_files
from pyroblur.serve.metrics import Metrics
from pyroblur.serve.params import detector_key, options_dependency
from pyroblur.serve.settings import ServeSettings, hash_key

logger = logging.getLogger("pyroblur.serve")

__all__ = ["create_app"]

_CHUNK = 1 << 20
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file


# ---------------------------------------------------------------- response models
class Detection(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float
    class_name: str = Field(alias="class")
    confidence: float


class ImageResult(BaseModel):
    """``format=json``: the anonymized image (base64) with its detections and audit record."""

    filename: str
    media_type: str
    image_base64: str
    boxes: int
    detections: list[dict[str, Any]] | None = Field(None, description="boxes hidden, pixels (from the audit record)")
    audit: dict[str, Any] | None = Field(None, description="the audit record, as `pyroblur anonymize` writes it")
    model_version: str


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "completed", "failed", "cancelled"]
    filename: str
    frames_done: int
    frames_total: int | None = Field(None, description="frames the container announces")
    progress: float | None = Field(None, description="frames_done / frames_total, 0-1")
    eta_seconds: float | None = None
    created: str
    updated: str
    error: str | None = None
    result: dict[str, Any] | None = Field(None, description="frames written, fps, audio, boxes (completed jobs)")
    result_url: str | None = None
    cancel_requested: bool = False


class ModelInfo(BaseModel):
    version: str = Field(description="registry id of the champion (first 16 hex of its weights' sha256)")
    weights: str
    sha256: str
    gates_passed: bool | None
    gates: list[dict[str, Any]]
    device: str
    reloads: int = Field(description="times a promotion was picked up since start")


class Health(BaseModel):
    status: str
    detail: str | None = None


def _job_status(job: Job) -> JobStatus:
    total = job.frames_total
    progress = min(1.0, job.frames_done / total) if total else None
    if job.state == "completed":
        progress = 1.0
    eta = None
    if job.state == "running" and job.started and total and job.frames_done:
        elapsed = time.time() - job.started
        eta = round(elapsed / job.frames_done * max(0, total - job.frames_done), 1)
    return JobStatus(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        filename=job.filename,
        frames_done=job.frames_done,
        frames_total=total,
        progress=progress,
        eta_seconds=eta,
        created=job.created,
        updated=job.updated,
        error=job.error,
        result=job.result,
        result_url=f"/v1/jobs/{job.id}/result" if job.state == "completed" else None,
        cancel_requested=job.cancel,
    )


# ---------------------------------------------------------------- the service
class Service:
    """Everything one process holds: settings, model, batcher, jobs, metrics."""

    def __init__(self, settings: ServeSettings, resolve: Any = resolve_served_model) -> None:
        self.settings = settings
        self.root = settings.state_dir()
        self.tmp = self.root / "tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)  # uploads of a process that died
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.inflight = 0
        self._lock = threading.Lock()
        self.holder = ModelHolder(settings.device, self._build, resolve=resolve)
        self.batcher = Batcher(
            self._detector_for,
            max_batch=settings.max_batch,
            max_wait=settings.max_wait_ms / 1000,
            others_waiting=lambda: self.inflight - self.batcher.blocked,
            on_batch=self.metrics.batch_frames.observe,
        )
        self.store = JobStore(self.root)
        self.workers: JobWorkers | None = None
        self.metrics.bind(self)

    # -- model
    def base_options(self) -> AnonymizeOptions:
        return AnonymizeOptions(device=self.settings.device, progress=False)

    def _build(self, weights: Path, options: AnonymizeOptions) -> Detector:
        from pyroblur.anonymize.models import build_detector, with_resolved_weights

        return build_detector(with_resolved_weights(options, champion=weights))

    def _detector_for(self, key: str, options: AnonymizeOptions) -> Detector:
        return self.holder.detector(key, options)[0]

    def model(self) -> ServedModel:
        if self.holder.model is None:
            raise ApiError(503, "no_model", self.holder.error or "no model loaded yet", headers={"Retry-After": "5"})
        return self.holder.model

    def start(self) -> None:
        default = self.base_options()
        warm = (detector_key(default), default)
        self.holder.load(warm)
        self.holder.start_polling(self.settings.reload_s, warm)
        self.workers = JobWorkers(self.store, self._run_job, workers=self.settings.job_workers, on_final=self._notify)

    def stop(self) -> None:
        self.holder.stop()
        if self.workers is not None:
            self.workers.stop()
        self.batcher.stop()

    # -- anonymizing
    def detector(self, options: AnonymizeOptions, on_frames: Any = None) -> Detector:
        key = detector_key(options)

        def detect(frames: list) -> list:
            dets = self.batcher.detect(key, options, frames)
            if on_frames is not None:
                on_frames(len(frames))
            return dets

        return detect

    def anonymize(self, src: Path, dst: Path, options: AnonymizeOptions, on_frames: Any = None) -> Any:
        from pyroblur.anonymize.files import anonymize_file
        from pyroblur.anonymize.models import with_resolved_weights

        options = with_resolved_weights(options, champion=self.model().weights)
        return anonymize_file(src, dst, options, self.detector(options, on_frames))

    def _run_job(self, job: Job, progress: Any) -> dict[str, Any]:
        from pyroblur.anonymize.video import probe_video

        options = AnonymizeOptions.model_validate(
            {**job.options, **self.base_options().model_dump(include={"device", "progress"})}
        )
        for stale in job.folder.glob(".*"):  # a temporary output of a run that died mid-job
            stale.unlink(missing_ok=True)
        done = [0]

        def on_frames(n: int) -> None:
            done[0] += n
            progress(min(done[0], job.frames_total or done[0]))

        result = self.anonymize(job.input, job.output, options, on_frames)
        info = probe_video(job.output)
        return {
            "frames": result.frames,
            "expected_frames": result.expected_frames,
            "complete": result.complete,
            "boxes": result.boxes,
            "remembered": result.remembered,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "audio_codecs": list(info.audio_codecs),
            "seconds": result.seconds,
            "model_version": self.model().version,
        }

    def _notify(self, job: Job) -> None:
        self.metrics.jobs_finished.labels(job.state).inc()
        if not job.callback_url:
            return
        import httpx

        try:
            httpx.post(
                job.callback_url,
                json=_job_status(job).model_dump(mode="json"),
                timeout=self.settings.callback_timeout_s,
            )
        except httpx.HTTPError as exc:
            logger.warning("job %s: callback %s failed: %s", job.id, job.callback_url, exc)

    # -- admission
    @contextlib.contextmanager
    def admitted(self) -> Any:
        with self._lock:
            if self.inflight >= self.settings.max_queue:
                self.metrics.rejected.inc()
                raise ApiError(
                    503,
                    "queue_full",
                    f"{self.inflight} requests in flight, the limit is {self.settings.max_queue}; retry shortly",
                    headers={"Retry-After": str(self.settings.retry_after_s)},
                )
            self.inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self.inflight -= 1


# ---------------------------------------------------------------- uploads
def _suffix_for(filename: str | None, content_type: str | None) -> str:
    if filename and Path(filename).suffix:
        return Path(filename).suffix.lower()
    ct = (content_type or "").split(";")[0].strip().lower()
    if not ct.startswith(("image/", "video/")):  # octet-stream, text...: the type is unknown
        return ""
    guessed = {"image/jpeg": ".jpg", "video/quicktime": ".mov"}.get(ct) or mimetypes.guess_extension(ct) or ""
    return guessed.lower()


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError(413, "upload_too_large", f"the upload is over the limit of {limit} bytes")
        yield chunk


async def receive_upload(request: Request, folder: Path, limit: int, filename: str | None) -> tuple[Path, str]:
    """Write the request's file (multipart field ``file``, or the raw body) to ``folder``
    within ``limit`` bytes; returns ``(path, original name)``. Memory stays bounded: the body
    is streamed, a declared Content-Length over the limit is refused before reading."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    declared = request.headers.get("content-length")
    allowed = limit + (_MULTIPART_SLACK if multipart else 0)
    if declared and declared.isdigit() and int(declared) > allowed:
        raise ApiError(413, "upload_too_large", f"the upload of {declared} bytes is over the limit of {limit} bytes")
    if multipart:
        from starlette.formparsers import MultiPartException, MultiPartParser

        parser = MultiPartParser(request.headers, _limited(request, allowed), max_files=1, max_fields=20)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(400, "bad_multipart", f"the multipart body does not parse: {exc.message}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "missing_file", "multipart upload without a file field named 'file'", field="file")
        name = filename or upload.filename or "upload"
        suffix = _suffix_for(name, upload.content_type)
        path = folder / f"input{suffix}"
        try:
            size = await anyio.to_thread.run_sync(_copy, upload.file, path)
        finally:
            await upload.close()
        if size > limit:
            raise ApiError(413, "upload_too_large", f"the file of {size} bytes is over the limit of {limit} bytes")
    else:
        name = filename or "upload"
        suffix = _suffix_for(filename, content_type)
        path = folder / f"input{suffix}"
        with path.open("wb") as f:
            async for chunk in _limited(request, limit):
                f.write(chunk)
        size = path.stat().st_size
    if size == 0:
        raise ApiError(400, "empty_upload", "the upload is empty")
    if not suffix:
        raise ApiError(
            415,
            "unknown_type",
            "cannot tell the file type: send a filename with an extension (multipart, or ?filename=x.jpg) "
            "or a Content-Type such as image/jpeg",
        )
    return path, name if Path(name).suffix else f"{name}{suffix}"


def _copy(src: Any, dst: Path) -> int:
    src.seek(0)
    with dst.open("wb") as f:
        shutil.copyfileobj(src, f, _CHUNK)
    return dst.stat().st_size


def _check_image_header(path: Path, max_pixels: int, name: str) -> None:
    from pyroblur.core.errors import InputError
    from pyroblur.core.images import check_pixels, image_size

    try:
        width, height = image_size(path.read_bytes(), subject=name)
    except InputError as exc:
        raise ApiError(415, "not_an_image", f"{name}: {exc.message}") from None
    try:
        check_pixels(width, height, max_pixels=max_pixels, subject=name)
    except InputError as exc:
        raise ApiError(422, "too_many_pixels", f"{name}: {exc.message}") from None


# ---------------------------------------------------------------- the app
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "API key missing",
        403: "API key wrong",
        413: "upload over the size limit",
        415: "not an image / not a video / unknown type",
        422: "invalid option, too many pixels, video too long",
        429: "too many active jobs for this key",
        503: "queue full or no model (Retry-After)",
    }.items()
}


def create_app(settings: ServeSettings | None = None, *, resolve: Any = resolve_served_model) -> FastAPI:
    """The application for ``settings`` (default: from the environment)."""
    from pyroblur.core.errors import ConfigurationError
    from pyroblur.serve.page import PAGE

    settings = settings or ServeSettings()
    if settings.exposed and not settings.api_key_hashes:
        raise ConfigurationError(
            f"refusing to bind {settings.host} without API keys",
            subject="PYROBLUR_SERVE_API_KEY_HASHES",
            hint="set PYROBLUR_SERVE_API_KEY_HASHES (from `pyroblur serve --hash-key KEY`) or bind 127.0.0.1",
        )
    service = Service(settings, resolve)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(service.start)
        yield
        await anyio.to_thread.run_sync(service.stop)

    app = FastAPI(
        title="PyroBlur",
        version="1",
        summary="Hide faces and license plates in images (synchronous) and videos (durable jobs).",
        lifespan=lifespan,
    )
    app.state.service = service
    # Depends objects as variables: these dependencies are closures of this app, and string
    # annotations (Annotated[..., Depends(local)]) cannot be resolved from the module
    api_key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="required when the service is exposed"
    )

    key_dep = Depends(api_key_header)

    def owner(key: str | None = key_dep) -> str:
        if not settings.api_key_hashes:
            return "local"
        if not key:
            raise ApiError(401, "missing_api_key", "this service needs an API key in the X-API-Key header")
        digest = hash_key(key)
        import hmac

        if not any(hmac.compare_digest(digest, h) for h in settings.api_key_hashes):
            raise ApiError(403, "invalid_api_key", "the API key in X-API-Key is not accepted")
        return digest[:16]

    owner_dep = Depends(owner)
    options_dep = Depends(options_dependency(service.base_options))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or None
        return JSONResponse(
            ApiError(422, "invalid_request", f"{field or 'request'}: {first['msg']}", field=field).body(),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        body = ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}").body()
        return JSONResponse(body, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(ApiError(exc.status_code, code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.middleware("http")
    async def _log(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - start
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            service.metrics.requests.labels(request.method, path, str(status)).inc()
            service.metrics.latency.labels(path).observe(seconds)
            logger.info("%s %s %d %.1f ms", request.method, request.url.path, status, seconds * 1000)

    # -- health, model, metrics, page
    @app.get("/healthz", response_model=Health, tags=["health"], summary="The process answers")
    def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        summary="A model is loaded and requests are served",
        responses={503: {"model": ErrorResponse}},
    )
    def readyz() -> Health:
        service.model()
        return Health(status="ready", detail=service.holder.model.version if service.holder.model else None)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "exposition format"}
        },
    )
    def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.get(
        "/v1/model",
        response_model=ModelInfo,
        tags=["model"],
        summary="The model that serves",
        responses={503: _ERRORS[503]},
    )
    def model_info() -> ModelInfo:
        model = service.model()
        registry = model.record.get("registry") or {}
        return ModelInfo(
            version=model.version,
            weights=str(model.weights),
            sha256=model.sha256,
            gates_passed=registry.get("gates_passed"),
            gates=registry.get("gates") or [],
            device=settings.device,
            reloads=service.holder.reloads,
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    # -- images
    @app.post(
        "/v1/images",
        tags=["images"],
        summary="Anonymize one image",
        description="Send the image as multipart (field `file`) or as the raw body (Content-Type image/*, or "
        "`?filename=`). The answer is the anonymized image in the input's format, or with `format=json` the "
        "image (base64), its detections and its audit record. Same pixels as `pyroblur anonymize`.",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": ImageResult.model_json_schema(by_alias=True)},
                },
                "description": "the anonymized image (headers X-Pyroblur-Boxes, X-Pyroblur-Model), or JSON",
            },
            **{k: v for k, v in _ERRORS.items() if k != 429},
        },
        openapi_extra={"requestBody": _upload_body("image")},
    )
    async def images(
        request: Request,
        opts: AnonymizeOptions = options_dep,
        who: str = owner_dep,
        format: Literal["image", "json"] = Query("image", description="image bytes, or JSON with detections"),
        filename: str | None = Query(None, description="name of a raw-body upload (its extension gives the type)"),
    ) -> Response:
        from pyroblur.anonymize.errors import IncompleteOutputError, UnreadableInputError
        from pyroblur.anonymize.planning import file_kind

        with service.admitted():
            folder = service.tmp / uuid.uuid4().hex
            folder.mkdir()
            try:
                src, name = await receive_upload(request, folder, settings.max_upload_bytes, filename)
                kind = file_kind(src)
                if kind == "video":
                    raise ApiError(415, "video_not_accepted", f"{name} is a video: create a job with POST /v1/jobs")
                if kind is None:
                    raise ApiError(415, "unsupported_type", f"{name}: {src.suffix!r} is not an image type we read")
                _check_image_header(src, settings.max_pixels, name)
                dst = folder / f"output{src.suffix}"
                try:
                    result = await anyio.to_thread.run_sync(service.anonymize, src, dst, opts)
                except UnreadableInputError as exc:
                    raise ApiError(415, "not_an_image", f"{name}: {exc}") from None
                except IncompleteOutputError as exc:  # strict=true and the residual check found boxes
                    raise ApiError(422, "residual_detections", f"{name}: {exc}") from None
                data = dst.read_bytes()
                media = mimetypes.guess_type(f"x{src.suffix}")[0] or "application/octet-stream"
                version = service.model().version
                out_name = f"{Path(name).stem}.anonymized{src.suffix}"
                headers = {"X-Pyroblur-Boxes": str(result.boxes), "X-Pyroblur-Model": version}
                if format == "image":
                    headers["Content-Disposition"] = f'inline; filename="{out_name}"'
                    return Response(data, media_type=media, headers=headers)
                import json

                audit = json.loads(result.audit.read_text()) if result.audit else None
                detections = None
                if audit is not None:
                    cols = audit["box_columns"]
                    detections = [dict(zip(cols, row, strict=False)) for row in audit["frames"][0]["boxes"]]
                    audit["input"]["path"] = name  # not the server's temporary path
                    audit["output"]["path"] = out_name
                return JSONResponse(
                    ImageResult(
                        filename=out_name,
                        media_type=media,
                        image_base64=base64.b64encode(data).decode(),
                        boxes=result.boxes,
                        detections=detections,
                        audit=audit,
                        model_version=version,
                    ).model_dump(mode="json"),
                    headers=headers,
                )
            finally:
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))

    # -- jobs
    @app.post(
        "/v1/jobs",
        tags=["jobs"],
        summary="Create a video job",
        description="Upload a video (multipart field `file` or raw body); the job id comes back at once (202). "
        "Poll `GET /v1/jobs/{id}`; `callback_url` receives the final status as a JSON POST.",
        status_code=202,
        response_model=JobStatus,
        responses=_ERRORS,
        openapi_extra={"requestBody": _upload_body("video")},
    )
    async def create_job(
        request: Request,
        opts: AnonymizeOptions = options_dep,
        who: str = owner_dep,
        callback_url: str | None = Query(None, description="http(s) URL notified (POST, JSON status) at the end"),
        filename: str | None = Query(None, description="name of a raw-body upload (its extension gives the type)"),
    ) -> JSONResponse:
        from pyroblur.anonymize.planning import file_kind
        from pyroblur.anonymize.video import VideoError, output_suffix, probe_video

        if callback_url is not None and not callback_url.startswith(("http://", "https://")):
            raise ApiError(422, "invalid_callback_url", "callback_url must be an http(s) URL", field="callback_url")
        service.model()
        job_id, folder = service.store.new_folder()
        keep = False
        try:
            src, name = await receive_upload(request, folder, settings.max_video_bytes, filename)
            kind = file_kind(src)
            if kind == "image":
                raise ApiError(415, "image_not_accepted", f"{name} is an image: POST it to /v1/images")
            if kind is None:
                raise ApiError(415, "unsupported_type", f"{name}: {src.suffix!r} is not a video type we read")
            try:
                info = await anyio.to_thread.run_sync(probe_video, src)
            except VideoError as exc:
                raise ApiError(415, "not_a_video", f"{name}: {exc}") from None
            seconds = max(info.duration, info.video_duration)
            if seconds > settings.max_video_seconds:
                raise ApiError(
                    422,
                    "video_too_long",
                    f"{name} lasts {seconds:.1f} s, over the limit of {settings.max_video_seconds:g} s",
                )
            dst = folder / f"output{output_suffix(src.suffix)}"
            job = service.store.create(
                job_id,
                who,
                name,
                src,
                dst,
                opts.model_dump(mode="json", exclude={"weights", "device", "progress"}),
                callback_url,
                info.frame_count_estimate,
                settings.max_jobs_per_key,
            )
            if job is None:
                raise ApiError(
                    429,
                    "too_many_jobs",
                    f"this key already has {settings.max_jobs_per_key} queued or running jobs; wait for one to end",
                    headers={"Retry-After": "10"},
                )
            keep = True
        finally:
            if not keep:
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
        assert service.workers is not None
        service.workers.wake()
        return JSONResponse(
            _job_status(job).model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
        )

    def _owned(job_id: str, who: str) -> Job:
        job = service.store.get(job_id)
        if job is None or job.owner != who:
            raise ApiError(404, "job_not_found", f"no job {job_id}")
        return job

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        tags=["jobs"],
        summary="A job's state and progress",
        responses={404: {"model": ErrorResponse}, 401: _ERRORS[401], 403: _ERRORS[403]},
    )
    def get_job(job_id: str, who: str = owner_dep) -> JobStatus:
        return _job_status(_owned(job_id, who))

    @app.get(
        "/v1/jobs/{job_id}/result",
        tags=["jobs"],
        summary="Download a completed job's video",
        response_class=FileResponse,
        responses={
            200: {"content": {"video/*": {"schema": {"type": "string", "format": "binary"}}}},
            404: {"model": ErrorResponse},
            409: {"model": ErrorResponse, "description": "the job is not completed"},
        },
    )
    def job_result(job_id: str, who: str = owner_dep) -> FileResponse:
        job = _owned(job_id, who)
        if job.state != "completed" or not job.output.is_file():
            raise ApiError(409, "job_not_completed", f"job {job_id} is {job.state}; its result is not available")
        name = f"{Path(job.filename).stem}.anonymized{job.output.suffix}"
        return FileResponse(job.output, filename=name, media_type=mimetypes.guess_type(name)[0] or "video/mp4")

    @app.delete(
        "/v1/jobs/{job_id}",
        response_model=JobStatus,
        status_code=202,
        tags=["jobs"],
        summary="Cancel a job (a finished one: delete its files)",
        responses={404: {"model": ErrorResponse}},
    )
    def cancel_job(job_id: str, who: str = owner_dep) -> JobStatus:
        job = _owned(job_id, who)
        if job.state in FINAL:
            remove_job_files(job)
            return _job_status(job)
        updated = service.store.request_cancel(job_id)
        assert updated is not None
        if updated.state == "cancelled":
            remove_job_files(updated)
        return _job_status(updated)

    return app


def _upload_body(kind: str) -> dict[str, Any]:
    media = "image/*" if kind == "image" else "video/*"
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": f"the {kind}"}},
                }
            },
            media: {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
