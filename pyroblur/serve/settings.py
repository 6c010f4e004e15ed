"""Service settings: every limit in one pydantic model, read from ``PYROBLUR_SERVE_*``
environment variables (and a ``.env`` file when present)."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServeSettings", "hash_key"]


def hash_key(key: str) -> str:
    """sha256 hex of an API key: what the service stores and compares (keys are long random
    tokens, so a fast hash is enough; a leaked settings file reveals no key)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ServeSettings(BaseSettings):
    """How ``pyroblur serve`` runs. Sizes in bytes, times in seconds unless named ``_ms``."""

    model_config = SettingsConfigDict(env_prefix="PYROBLUR_SERVE_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="bind address; anything but loopback requires API keys")
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path | None = Field(None, description="state (jobs, temp files); default <PYROBLUR_DATA_DIR>/serve")
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="sha256 hex of each accepted API key (`pyroblur serve --hash-key KEY` prints one); "
        "empty = no keys (loopback only)",
    )
    max_upload_bytes: int = Field(50_000_000, ge=1, description="largest image upload")
    max_video_bytes: int = Field(2_000_000_000, ge=1, description="largest video upload")
    max_pixels: int = Field(40_000_000, ge=1, description="largest image (width x height), from its header")
    max_video_seconds: float = Field(600.0, gt=0, description="longest video a job accepts")
    max_jobs_per_key: int = Field(4, ge=1, description="queued + running jobs per API key (or per client without keys)")
    max_batch: int = Field(16, ge=1, le=256, description="most frames per detector call")
    max_wait_ms: float = Field(10.0, ge=0, description="longest a request waits for others to join its batch")
    max_queue: int = Field(64, ge=1, description="image requests in flight; past it 503 + Retry-After")
    retry_after_s: int = Field(1, ge=1, description="Retry-After of a 503")
    job_workers: int = Field(1, ge=1, le=16, description="video jobs run at once")
    reload_s: float = Field(5.0, gt=0, description="how often the champion is checked for a promotion")
    device: str = Field("auto", description="detector device: auto, cpu, cuda:0")
    callback_timeout_s: float = Field(10.0, gt=0)

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # the environment gives "h1,h2"; a list passes through
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            bad = [v for v in value if not (len(v) == 64 and all(c in "0123456789abcdef" for c in v.lower()))]
            if bad:
                raise ValueError(
                    "PYROBLUR_SERVE_API_KEY_HASHES holds sha256 hex digests (64 hex digits), not keys; "
                    "make one with `pyroblur serve --hash-key KEY`"
                )
            return [v.lower() for v in value]
        return value

    @property
    def exposed(self) -> bool:
        """True when the bind address is not loopback."""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host != "localhost"

    def state_dir(self) -> Path:
        """Where jobs and temporary uploads live (created)."""
        if self.data_dir is not None:
            path = self.data_dir
        else:
            from pyroblur.core.settings import get_paths

            path = get_paths().root / "serve"
        path.mkdir(parents=True, exist_ok=True)
        return path
