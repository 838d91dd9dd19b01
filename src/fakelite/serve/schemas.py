"""Response schemas of the HTTP API (pydantic models), as published in the OpenAPI document at /openapi.json."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["ERRORS_DOC", "DetectResult", "ErrorBody", "ErrorDetail", "Face", "Frame"]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Face(BaseModel):
    box: list[float]
    score: float | None = None
    confidence: float | None = None


class Frame(BaseModel):
    index: int
    time: float | None = None
    score: float | None = None
    faces: list[Face] = []


class DetectResult(BaseModel):
    filename: str
    kind: str
    format: str
    score: float | None = None
    label: str | None = None
    threshold: float
    note: str | None = None
    input: str | None = None
    faces: list[Face] = []
    frames: list[Frame] = []
    aggregate: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    frames_with_face: int | None = None
    truncated: bool | None = None
    frames_total: int | None = None
    frames_requested: int | None = None
    frames_decoded: int | None = None
    frames_unreadable: int | None = None
    header_frames: int | None = None
    rotation: int | None = None
    model_id: str
    latency_ms: float



#: The error answers POST /v1/detect documents, by HTTP status.
ERRORS_DOC = {s: {"model": ErrorBody} for s in (400, 401, 408, 413, 415, 422, 503, 504)}
