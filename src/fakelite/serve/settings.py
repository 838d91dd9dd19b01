"""Settings of `fakelite serve`: every limit the service enforces, in one dataclass.

The defaults are safe for a public-facing CPU box: uploads capped at 25 MB, images at 40 MP, videos at 10 minutes,
one request at most 30 s, two detections at a time with eight more waiting; anything beyond that is refused
at once (413/503) instead of piling up. `to_json`/`from_json` carry the settings to uvicorn worker processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fakelite.data.preprocess import Preprocess

ENV_VAR = "FAKELITE_SERVE_SETTINGS"


@dataclass
class ServeSettings:
    """Limits and options of the HTTP service (see docs/serve.md for each one)."""

    model: str | None = None               # path to the .fakelite file (None when a detector is injected)
    backend: str = "auto"                  # Detector.load backend
    threads: int | None = None             # inference threads per detector (None: the runtime's choice)
    max_upload_mb: float = 25.0            # request body limit; streamed, aborted past it -> 413
    max_pixels: int = 40_000_000           # image/video frame pixel limit, checked from the header -> 413
    max_video_seconds: float = 600.0       # video duration limit -> 413
    max_video_frames: int = 64             # most frames a client may ask to be analysed per video
    default_video_frames: int = 32         # frames sampled from a video when the client does not say
    request_timeout_s: float = 30.0        # whole request (upload + queue + detection) -> 504
    max_concurrency: int = 2               # detections running at once
    max_queue: int = 8                     # requests admitted and waiting for a detection slot; more -> 503
    retry_after_s: int = 1                 # Retry-After sent with 503
    api_key: str | None = None             # when set, /v1/* needs X-API-Key or Authorization: Bearer
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    tmp_dir: str | None = None             # parent of the private upload folder (default: system temp)
    faces: str = "auto"                    # face handling passed to detect_file: auto|off|...
    docs: bool = True                      # serve /docs and /openapi.json
    policy: str | None = None              # override the model's scoring policy (center|resize256|tiles)
    aggregate: str | None = None           # override the tile aggregation (mean|max|topk)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def validate(self) -> ServeSettings:
        """Raise ValueError with one line when a limit is out of range."""
        positive = ("max_upload_mb", "max_pixels", "max_video_seconds", "max_video_frames",
                    "default_video_frames", "request_timeout_s", "max_concurrency")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)!r})")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0 (got {self.max_queue})")
        if self.default_video_frames > self.max_video_frames:
            self.default_video_frames = self.max_video_frames
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.policy is not None or self.aggregate is not None:
            Preprocess().with_scoring(self.policy, self.aggregate)  # ValueError names the bad value
        if self.tmp_dir and not Path(self.tmp_dir).is_dir():
            raise ValueError(f"{self.tmp_dir}: tmp_dir is not a folder")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        d = json.loads(text)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}).validate()

    @classmethod
    def from_env(cls) -> ServeSettings:
        """Settings handed to uvicorn worker processes through $FAKELITE_SERVE_SETTINGS."""
        text = os.environ.get(ENV_VAR)
        if not text:
            raise RuntimeError(f"${ENV_VAR} is not set (start the service with `fakelite serve`)")
        return cls.from_json(text)
