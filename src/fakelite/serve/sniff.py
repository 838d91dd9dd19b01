"""Content sniffing from magic bytes: what an upload *is*, whatever its name or Content-Type claims."""

from __future__ import annotations

from dataclasses import dataclass

from fakelite.data.io import IMAGE_EXTS

SNIFF_BYTES = 64  # enough for every signature below


@dataclass(frozen=True)
class Sniffed:
    kind: str  # "image" | "video"
    format: str  # png, jpeg, gif, bmp, webp, tiff, heic, avif, mp4, mov, avi, mkv, webm
    ext: str  # extension the temp file gets, so readers dispatch on the real type

    @property
    def mime(self) -> str:
        return _MIME[self.format]


_MIME = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "bmp": "image/bmp", "webp": "image/webp",
         "tiff": "image/tiff", "mp4": "video/mp4", "mov": "video/quicktime", "avi": "video/x-msvideo",
         "mkv": "video/x-matroska", "webm": "video/webm", "heic": "image/heic", "avif": "image/avif"}

_QT_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff(head: bytes) -> Sniffed | None:
    """Identify an image or video container from its first bytes; None when it is neither (or unsupported)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "png", ".png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "jpeg", ".jpg")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "gif", ".gif")
    if head.startswith(b"BM") and len(head) >= 26:
        return Sniffed("image", "bmp", ".bmp")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "webp", ".webp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image", "tiff", ".tiff")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "avi", ".avi")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return Sniffed("video", "mov", ".mov")
        if brand[:3] in (b"hei", b"mif", b"avi", b"msf") or brand in (b"heic", b"heix", b"mif1", b"avif"):
            # HEIF/AVIF stills share the ISO box layout: images, when the installed decoders open them
            ext = ".avif" if brand[:3] == b"avi" else ".heic"
            return Sniffed("image", ext[1:], ext) if ext in IMAGE_EXTS else None
        return Sniffed("video", "mp4", ".mp4")
    if head[4:8] in _QT_ATOMS:
        return Sniffed("video", "mov", ".mov")  # old QuickTime files start with a bare atom
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Sniffed("video", "webm", ".webm") if b"webm" in head[:SNIFF_BYTES] else Sniffed("video", "mkv", ".mkv")
    return None
