"""Frame sampling for videos — moved to `fakelite.data.video_reader` (the one PyAV reader for detect, stream,
serve and the tests). This module re-exports it for code that imported `fakelite.deploy.video`."""

from __future__ import annotations

from fakelite.data.video_reader import VideoInfo, iter_frames, probe_video, read_video, sample_indices

__all__ = ["VideoInfo", "iter_frames", "probe_video", "read_video", "sample_indices"]
