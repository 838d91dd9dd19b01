"""Receiving an upload: the request body is streamed by hand into a private temp folder (mode 0700) and counted as
it arrives, so a huge upload is cut off at the limit (413) instead of being buffered; what the file *is* comes from
its magic bytes, never from its name or Content-Type; the file is always deleted, on errors and timeouts too."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from fakelite.serve.errors import ApiError
from fakelite.serve.settings import ServeSettings
from fakelite.serve.sniff import SNIFF_BYTES, Sniffed, sniff

__all__ = ["MAX_FIELD_BYTES", "MAX_PARTS", "MULTIPART_OVERHEAD", "Upload", "receive_upload"]

log = logging.getLogger("fakelite.serve")
MULTIPART_OVERHEAD = 64 * 1024  # room for boundaries, part headers and small form fields on top of the file
MAX_FIELD_BYTES = 1024
MAX_PARTS = 16


@dataclass
class Upload:
    """One received file in the private temp folder; `remove()` is idempotent and always called."""

    path: Path
    filename: str
    size: int
    sniffed: Sniffed
    fields: dict[str, str] = field(default_factory=dict)

    def remove(self) -> None:
        _unlink(self.path)


def _unlink(path: Path | str | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover - nothing a client can do about it
        log.warning("could not delete upload temp file: %s", e)


_SAFE_NAME = re.compile(r"[^\w.\- ()\[\]+,@]")


def _safe_filename(name: str | None) -> str:
    """The client's file name reduced to a short, printable base name (never used as a path)."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE_NAME.sub("_", base).strip(" .") or "upload"
    return base[:120]


def _parse_disposition(value: bytes) -> dict[str, str]:
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(value)
    return {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in params.items()}


async def receive_upload(request: Request, settings: ServeSettings, tmpdir: Path) -> Upload:
    """Stream the request body into a 0600 file in `tmpdir`, enforcing the size limit as bytes arrive.

    multipart/form-data: the part named "file" (or the first part with a filename) is the upload; small text
    fields ride along (frames, faces, aggregate). application/octet-stream: the whole body is the file.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    limit = settings.max_upload_bytes
    ctype_raw = request.headers.get("content-type", "")
    ctype, params = parse_options_header(ctype_raw)
    ctype = ctype.lower()
    if ctype == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
        body_limit = limit + MULTIPART_OVERHEAD
    elif ctype == b"application/octet-stream":
        boundary, body_limit = None, limit
    else:
        shown = ctype.decode("latin-1")[:60] or "none"
        raise ApiError(415, "unsupported_content_type",
                       f"send the file as multipart/form-data (field 'file') or application/octet-stream, not {shown}")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > body_limit:
                raise ApiError(413, "upload_too_large", f"upload larger than the limit of {settings.max_upload_mb:g} MB")
        except ValueError:
            raise ApiError(400, "bad_request", "invalid Content-Length") from None

    fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="up-")
    f = os.fdopen(fd, "wb")
    st: dict[str, Any] = {"size": 0, "head": b"", "filename": None, "found": False, "parts": 0,
                          "fields": {}, "cur": None, "hdr_field": b"", "hdr_value": b"", "headers": {},
                          "too_big": False, "field_buf": b""}

    def write_file(data: bytes) -> None:
        st["size"] += len(data)
        if st["size"] > limit:
            st["too_big"] = True
            return
        if len(st["head"]) < SNIFF_BYTES:
            st["head"] += data[: SNIFF_BYTES - len(st["head"])]
        f.write(data)

    parser = None
    if boundary is not None:
        def on_part_begin() -> None:
            st["parts"] += 1
            st["headers"], st["cur"], st["field_buf"] = {}, None, b""
            if st["parts"] > MAX_PARTS:
                raise ApiError(400, "bad_multipart", f"too many form parts (limit {MAX_PARTS})")

        def on_header_field(data: bytes, start: int, end: int) -> None:
            st["hdr_field"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            st["hdr_value"] += data[start:end]

        def on_header_end() -> None:
            st["headers"][st["hdr_field"].lower()] = st["hdr_value"]
            st["hdr_field"], st["hdr_value"] = b"", b""

        def on_headers_finished() -> None:
            disp = _parse_disposition(st["headers"].get(b"content-disposition", b""))
            name, filename = disp.get("name", ""), disp.get("filename")
            if not st["found"] and (name == "file" or filename is not None):
                st["found"], st["cur"], st["filename"] = True, "file", filename
            else:
                st["cur"] = ("field", name)

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if st["cur"] == "file":
                write_file(data[start:end])
            elif st["cur"] is not None:
                st["field_buf"] += data[start:end]
                if len(st["field_buf"]) > MAX_FIELD_BYTES:
                    raise ApiError(400, "bad_multipart", "form field too long")

        def on_part_end() -> None:
            if isinstance(st["cur"], tuple) and st["cur"][1]:
                st["fields"][st["cur"][1]] = st["field_buf"].decode("utf-8", "replace").strip()
            st["cur"] = None

        parser = MultipartParser(boundary, callbacks={
            "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end})

    ok = False
    try:
        total = 0
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > body_limit:
                st["too_big"] = True
            elif parser is not None:
                try:
                    parser.write(chunk)
                except ApiError:
                    raise
                except Exception as e:  # noqa: BLE001 - python-multipart raises several kinds
                    raise ApiError(400, "bad_multipart", f"malformed multipart body ({type(e).__name__})") from None
            else:
                write_file(chunk)
            if st["too_big"]:
                raise ApiError(413, "upload_too_large", f"upload larger than the limit of {settings.max_upload_mb:g} MB")
        if parser is not None:
            try:
                parser.finalize()
            except Exception:  # noqa: BLE001
                raise ApiError(400, "bad_multipart", "malformed multipart body") from None
            if not st["found"]:
                raise ApiError(400, "missing_file", "no file in the form (send it in a field named 'file')")
        f.close()
        if st["size"] == 0:
            raise ApiError(400, "empty_file", "the uploaded file is empty (0 bytes)")
        sniffed = sniff(st["head"])
        if sniffed is None:
            raise ApiError(415, "unsupported_media_type",
                           "not a supported image (PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC, AVIF) or video (MP4, MOV, AVI, MKV, WebM)")
        final = Path(tmp + sniffed.ext)
        os.rename(tmp, final)  # readers dispatch on the extension: give them the real one
        tmp = str(final)
        ok = True
        return Upload(final, _safe_filename(st["filename"]), st["size"], sniffed, dict(st["fields"]))
    finally:
        if not f.closed:
            f.close()
        if not ok:
            _unlink(tmp)

