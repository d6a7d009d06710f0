"""Safe video decoding: limits first, then a cheap decode that yields only the frames we hash.

Flow: recognise a video container by its bytes (never the extension, :func:`looks_like_video`)
→ open it with PyAV (FFmpeg) with bounded probing → pick the first video stream (none: an
audio-only file is :class:`~vigil.errors.UnsupportedMedia`) → check the declared size and duration
against :class:`VideoLimits` before any frame is decoded → demux packet by packet and decode, with
a wall-clock deadline checked between packets → yield sampled frames: one every ``1/rate`` seconds
of presentation time (timestamps, not frame counts, so variable-frame-rate files are sampled
correctly) plus the first frame after each hard cut (scene-change frames, which give segment
boundaries to the frame instead of to the sampling interval) → :func:`shot_boxes` finds each
shot's bar box once, from the per-pixel maximum and minimum of its frames (bars do not move, dark
picture next to them does; see "per-shot bar boxes" below) → :func:`hash_video` cuts that box
out of each frame and hashes it (:func:`vigil.signals.vpdq.hash_frames`: PDQ, its
mirror image's, and the crop codes of a grid of boxes, from one pooled luma).

Two rates. A bank keeps about one frame a second (``VideoLimits.rate``; the storage budget is 64
bytes per second of video). A query is hashed at ``query_rate`` (default 4/s): with both sides
at 1/s, an unlucky offset puts every query frame half a second from the nearest banked one,
which for fast motion is another picture. Hashing a query at 4/s puts some query frame within
0.125 s of every banked frame whatever the offset. The denser hashing costs little, because
decoding, not hashing, is the cost: the same decoded frames are used, and each is hashed from a
luma plane pooled to a short side of ~128 pixels. What is stored is the 1/s subset
(:meth:`vigil.signals.vpdq.VideoSignals.thin`).

Why it is cheap. Hashing needs about one frame per second, but every reference frame must be
decoded for the next to be right. So FFmpeg is told to skip what no later frame depends on:
non-reference frames (``skip_frame=NONREF``, most B-frames: about half the frames of a typical
H.264 encode) and the in-loop deblocking filter (``skip_loop_filter``; it smooths block edges,
which a 64x64 tent-filtered hash does not see, and the small drift it causes in later frames is
far below PDQ's sensitivity). Nothing is converted to RGB: the luma the hash needs *is* the
decoded Y plane, read in place through the buffer protocol (``planes[0]``). Scene changes are
found on every decoded frame from a 1-in-16 subsample of that plane, so they cost a few
microseconds. The rotation of a display matrix is applied to the (small) luma of sampled frames
only.

Every failure is a typed :class:`~vigil.errors.MediaError`; PyAV's exceptions never escape. A
truncated file gives the frames before the damage, with ``truncated`` set, rather than nothing.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
import typing as t
from pathlib import Path

import numpy as np

from vigil.errors import (
    CorruptMedia,
    DecodeTimeout,
    DecompressionBomb,
    EmptyFile,
    MediaError,
    MediaTooLong,
    UnsupportedMedia,
    UsageError,
)
from vigil.media.image import find_borders
from vigil.signals.vpdq import VideoSignals, hash_frames

__all__ = [
    "SampledFrame",
    "VideoInfo",
    "VideoLimits",
    "VideoReader",
    "hash_video",
    "looks_like_video",
    "open_video",
    "shot_box",
    "shot_boxes",
]

#: mean absolute difference (grey levels) between subsampled luma of consecutive decoded frames
#: above which a frame starts a new shot; hard cuts give 30-80, motion and fades stay under 20
SCENE_THRESHOLD = 28.0
#: luma subsampling step for scene detection
_SCENE_STEP = 16


@dataclasses.dataclass(frozen=True)
class VideoLimits:
    """Limits checked before decoding (declared values) and while decoding (actual values)."""

    max_pixels: int = 4096 * 2304
    max_duration: float = 4 * 3600.0
    #: wall-clock seconds one file may take to decode; past it: :class:`DecodeTimeout`
    max_decode_seconds: float = 900.0
    #: decoder threads (1: one core per file; scans parallelise over files instead)
    threads: int = 1
    #: frames kept per second of video in a bank (plus scene-change frames); not a limit, but
    #: read from the environment with them (``VIGIL_VIDEO_RATE``)
    rate: float = 1.0
    #: frames hashed per second for matching (``VIGIL_VIDEO_QUERY_RATE``): denser than the
    #: bank's, so that whatever the offset between the two, some query frame lies within
    #: 1/(2 x query_rate) s of each banked frame: fast motion still matches
    query_rate: float = 4.0

    @classmethod
    def from_env(cls) -> VideoLimits:
        """``VIGIL_VIDEO_MAX_SECONDS``, ``VIGIL_VIDEO_MAX_PIXELS``, ``VIGIL_VIDEO_DECODE_SECONDS``,
        ``VIGIL_VIDEO_THREADS`` (read when called, never at import)."""
        from vigil.config import env_number as num

        base = cls()
        return cls(
            max_pixels=int(num("VIGIL_VIDEO_MAX_PIXELS", base.max_pixels)),
            max_duration=num("VIGIL_VIDEO_MAX_SECONDS", base.max_duration),
            max_decode_seconds=num("VIGIL_VIDEO_DECODE_SECONDS", base.max_decode_seconds),
            threads=int(num("VIGIL_VIDEO_THREADS", base.threads)),
            rate=num("VIGIL_VIDEO_RATE", base.rate),
            query_rate=num("VIGIL_VIDEO_QUERY_RATE", base.query_rate),
        )


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container declares: coded size (before any display rotation), average frame
    rate, duration."""

    format: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration: float | None


@dataclasses.dataclass(frozen=True)
class SampledFrame:
    """One frame chosen for hashing: its luma (display orientation) and where it sits in time.

    ``frame`` is the frame number vPDQ would give it (presentation time x average frame rate);
    ``scene_cut`` marks the first frame of a shot (and the first frame of the video).
    """

    frame: int
    timestamp: float
    luma: np.ndarray
    scene_cut: bool
    #: the bar box (top, bottom, left, right) to keep, when known for the whole shot
    #: (:func:`shot_boxes`); None: the frame is trimmed on its own
    box: tuple[int, int, int, int] | None = None


# -- recognising a video ---------------------------------------------------------------------------
def looks_like_video(head: bytes) -> bool:
    """Whether the first bytes are those of a container that may hold video (MP4/MOV/3GP,
    Matroska/WebM, AVI, FLV, MPEG-TS/PS, Ogg, ASF). Audio-only files of these containers pass
    here and are told apart by :func:`open_video`."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return True
    if head.startswith((b"\x1aE\xdf\xa3", b"FLV\x01", b"OggS", b"\x00\x00\x01\xba",
                        b"\x00\x00\x01\xb3")):
        return True
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF / WMV
        return True
    if len(head) >= 4 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return True  # QuickTime without an ftyp box
    if len(head) >= 1 and head[0] == 0x47 and len(head) < 189:
        return False  # cannot confirm a TS sync pattern from a short head
    return len(head) >= 377 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47


# -- reading ---------------------------------------------------------------------------------------
def open_video(source: Path | bytes, limits: VideoLimits | None = None, *,
               name: str | None = None) -> VideoReader:
    """Open a video and check what it declares against ``limits``; frames come from
    :meth:`VideoReader.sample`. Use as a context manager (it holds FFmpeg state)."""
    return VideoReader(source, limits or VideoLimits(), name=name)


class VideoReader:
    """An open video: ``info`` at once, then :meth:`sample` to iterate the frames to hash."""

    def __init__(self, source: Path | bytes, limits: VideoLimits, *,
                 name: str | None = None) -> None:
        import av

        self._av = av
        self.limits = limits
        self.label = name or (str(source) if isinstance(source, Path) else "<bytes>")
        if isinstance(source, Path):
            try:
                data = source.read_bytes()
            except OSError as exc:
                raise MediaError(f"{self.label}: cannot read: {exc.strerror or exc}",
                                 path=self.label) from exc
        else:
            data = source
        if not data:
            raise EmptyFile(f"{self.label}: the file is empty (0 bytes)", path=self.label)
        self.truncated = False
        self.decode_errors = 0
        #: display rotation in degrees counter-clockwise, known once the first frame is decoded
        self.rotation = 0
        self.last_timestamp = 0.0
        try:
            # bounded probing: a hostile file cannot make the open itself read forever
            self._container = av.open(
                io.BytesIO(data), mode="r",
                options={"probesize": str(32 << 20), "analyzeduration": str(30_000_000)},
            )
        except av.error.FFmpegError as exc:
            kind = "a video container" if looks_like_video(data[:400]) else "data"
            raise CorruptMedia(f"{self.label}: starts like {kind} but FFmpeg cannot open it: "
                               f"{_msg(exc)}", path=self.label) from exc
        try:
            self.info = self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> VideoInfo:
        c = self._container
        if not c.streams.video:
            what = "audio only" if c.streams.audio else "no audio or video streams"
            raise UnsupportedMedia(f"{self.label}: no video stream ({what})", path=self.label,
                                   kind="audio" if c.streams.audio else "unknown")
        stream = c.streams.video[0]
        self._stream = stream
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width * height > self.limits.max_pixels:
            raise DecompressionBomb(
                f"{self.label}: video declares {width}x{height} pixels per frame, over the limit "
                f"of {self.limits.max_pixels}", path=self.label, width=width, height=height,
                limit=self.limits.max_pixels,
            )
        duration: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif c.duration is not None:
            duration = c.duration / 1_000_000
        if duration is not None and duration > self.limits.max_duration:
            raise MediaTooLong(
                f"{self.label}: video declares {duration:.0f} s, over the limit of "
                f"{self.limits.max_duration:.0f} s", path=self.label, seconds=duration,
                limit=self.limits.max_duration,
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        return VideoInfo(format=str(c.format.name), codec=str(cc.name), width=width, height=height,
                         fps=fps if fps and 0 < fps < 1000 else None, duration=duration)

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding ----------------------------------------------------------------------------
    def _decoded(self, *, every_frame: bool = False) -> t.Iterator[t.Any]:
        """Decoded frames, in presentation order as FFmpeg returns them; errors translated."""
        av = self._av
        stream = self._stream
        cc = stream.codec_context
        stream.thread_type = "AUTO" if self.limits.threads > 1 else "NONE"
        if self.limits.threads > 1:
            cc.thread_count = self.limits.threads
        if not every_frame:
            cc.skip_frame = "NONREF"
            # luma only (the hash needs nothing else; where FFmpeg was built with gray support)
            cc.options = {"skip_loop_filter": "all", "flags": "gray"}
        deadline = time.monotonic() + self.limits.max_decode_seconds
        consecutive = 0
        packets = self._container.demux(stream)
        while True:
            if time.monotonic() > deadline:
                raise DecodeTimeout(
                    f"{self.label}: decoding took longer than "
                    f"{self.limits.max_decode_seconds:.0f} s",
                    path=self.label, limit=self.limits.max_decode_seconds,
                )
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.EOFError:
                return
            except av.error.FFmpegError as exc:
                # the demuxer lost sync: the rest of the file is damaged or missing
                self.truncated = True
                self.decode_errors += 1
                if self.decode_errors > 1 and not self.last_timestamp:
                    raise CorruptMedia(f"{self.label}: unreadable video data: {_msg(exc)}",
                                       path=self.label) from exc
                return
            try:
                frames = packet.decode()
                consecutive = 0
            except av.error.FFmpegError as exc:
                self.decode_errors += 1
                consecutive += 1
                if consecutive > 100:
                    raise CorruptMedia(f"{self.label}: too many undecodable packets: {_msg(exc)}",
                                       path=self.label) from exc
                continue
            yield from frames

    def sample(self, rate: float = 1.0, *, scene: bool = True,
               progress: t.Callable[[float], None] | None = None,
               every_frame: bool = False) -> t.Iterator[SampledFrame]:
        """Frames to hash: one per ``1/rate`` s of presentation time, plus scene-change frames.

        ``every_frame`` decodes and yields every frame (the baseline the benchmark compares
        against). ``progress`` gets the fraction of the declared duration done.
        """
        if not rate > 0:
            raise UsageError(f"sampling rate must be positive, got {rate}")
        stream = self._stream
        tb = float(stream.time_base) if stream.time_base else None
        start = stream.start_time if stream.start_time is not None else None
        fps = self.info.fps or 25.0
        interval = 1.0 / rate
        next_t = 0.0
        last_sampled = -math.inf
        prev_thumb: np.ndarray | None = None
        count = 0
        duration = self.info.duration or 0.0
        last_report = 0.0
        for frame in self._decoded(every_frame=every_frame):
            if frame.pts is not None and tb is not None:
                if start is None:
                    start = frame.pts
                ts = max(0.0, (frame.pts - start) * tb)
            else:
                ts = count / fps
            count += 1
            if ts > self.limits.max_duration:
                raise MediaTooLong(
                    f"{self.label}: video runs past the limit of {self.limits.max_duration:.0f} s",
                    path=self.label, limit=self.limits.max_duration,
                )
            if frame.width * frame.height > self.limits.max_pixels:
                raise DecompressionBomb(
                    f"{self.label}: a frame of {frame.width}x{frame.height} pixels is over the "
                    f"limit of {self.limits.max_pixels}", path=self.label,
                    limit=self.limits.max_pixels,
                )
            self.last_timestamp = max(self.last_timestamp, ts)
            y = _y_plane(frame)
            cut = False
            if scene:
                thumb = y[::_SCENE_STEP, ::_SCENE_STEP].astype(np.int16)
                if prev_thumb is None:
                    cut = True
                elif prev_thumb.shape == thumb.shape:
                    cut = float(np.abs(thumb - prev_thumb).mean()) > SCENE_THRESHOLD
                prev_thumb = thumb
            if count == 1:
                # the display matrix travels with the frames (PyAV reads it as frame side data)
                angle = float(getattr(frame, "rotation", 0) or 0)
                self.rotation = round(angle / 90.0) % 4 * 90
            take = every_frame or cut or ts >= next_t - 1e-6
            if take and not every_frame and not cut and ts - last_sampled < 0.25 * interval:
                take = False  # a scene frame was just taken: this grid sample adds nothing
            if ts >= next_t - 1e-6:
                next_t = (math.floor(ts * rate + 1e-6) + 1) / rate
            if take:
                last_sampled = ts
                yield SampledFrame(
                    frame=int(round(ts * fps)), timestamp=round(ts, 3),
                    luma=_rotate(y, self.rotation), scene_cut=cut or count == 1,
                )
            if progress and duration and ts - last_report >= 5.0:
                last_report = ts
                progress(min(1.0, ts / duration))
        if count == 0:
            raise CorruptMedia(f"{self.label}: no decodable video frames", path=self.label)
        if duration and self.last_timestamp < duration - 2.0:
            self.truncated = True
        if progress:
            progress(1.0)

    @property
    def decoded_duration(self) -> float:
        """Presentation time actually decoded: last frame's timestamp plus one frame."""
        return self.last_timestamp + 1.0 / (self.info.fps or 25.0)


def _y_plane(frame: t.Any) -> np.ndarray:
    """The luma plane as a (rows, cols) uint8 view, without conversion where FFmpeg already
    stores planar 8-bit luma; other layouts (RGB, 10-bit, packed YUV) are converted to grey."""
    if frame.format.name in _PLANAR_8BIT:
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8)
        return buf.reshape(-1, plane.line_size)[: frame.height, : frame.width]
    return t.cast(np.ndarray, frame.to_ndarray(format="gray"))


_PLANAR_8BIT = frozenset({
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
    "yuv411p", "yuv410p", "yuva420p", "nv12", "nv21", "gray",
})


def _rotate(y: np.ndarray, rotation: int) -> np.ndarray:
    """Copy the luma out of FFmpeg's buffer (it is reused for the next frame), in display
    orientation. ``rotation`` is counter-clockwise, as np.rot90 turns."""
    if rotation:
        return np.ascontiguousarray(np.rot90(y, rotation // 90))
    return y.copy()


def _msg(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def hash_video(source: Path | bytes, limits: VideoLimits | None = None, *, name: str | None = None,
               progress: t.Callable[[float], None] | None = None,
               every_frame: bool = False) -> tuple[VideoSignals, dict[str, t.Any]]:
    """Decode and hash a video: its frame signals and a description of the media."""
    limits = limits or VideoLimits()
    with open_video(source, limits, name=name) as reader:
        rate = max(limits.rate, limits.query_rate)
        frames = shot_boxes(reader.sample(rate, progress=progress, every_frame=every_frame))
        signals = hash_frames(frames, rate=rate, trim=_trim, duration=None,
                              store_rate=limits.rate)
        info = reader.info
        duration = reader.decoded_duration
        if info.duration and not reader.truncated:
            duration = max(duration, info.duration)
        signals = dataclasses.replace(signals, duration=round(duration, 3))
        media: dict[str, t.Any] = {
            "kind": "video", "format": info.format, "codec": info.codec,
            "width": info.width, "height": info.height, "rotation": reader.rotation,
            "fps": round(info.fps, 3) if info.fps else None,
        }
        if reader.truncated:
            media["truncated"] = True
        if reader.decode_errors:
            media["decode_errors"] = reader.decode_errors
    return signals, media


def _trim(luma: np.ndarray, *, tolerance: float = 12.0, flatness: float = 2.0,
          edge_share: float = 0.97, line_share: float = 0.5,
          keep: float = 0.25) -> tuple[int, int, int, int]:
    """Uniform borders (letterbox, pillarbox) of a video frame: (top, bottom, left, right) kept.

    The same idea as :func:`vigil.media.image.find_borders` (an outermost line that is one
    colour starts a border), with one difference that matters for video: once an edge is known
    to be a bar, a further line still counts as bar when only *half* of it is bar-coloured,
    because a re-upload's channel logo is stamped in a corner of the whole frame, which is on
    the bar when the picture is pillarboxed or letterboxed. Lines that blend bar and picture are
    dropped too (``find_borders``' transition rule)."""
    return find_borders(luma.astype(np.float32, copy=False), tolerance=tolerance,
                        share=edge_share, line_share=line_share, keep=keep, flatness=flatness)


# -- per-shot bar boxes ----------------------------------------------------------------------------
# Bars (letterbox, pillarbox) do not move within a shot, the picture between them does. Trimming
# each frame on its own cannot tell a bar from dark picture next to it (a black sky, a dark
# stage): a bar line "continues" while half of the next line is bar-coloured, so a letterboxed
# dark frame is trimmed deep into its picture, by a different amount in every frame and
# differently from the unbarred original (measured on the corpus: the query's box moved by
# 10-20% from frame to frame, 110-140 PDQ bits from the original). Over a shot, a bar pixel is
# the bar colour in *every* frame, while picture pixels change (camera motion, a slideshow's
# pan, people). So each shot's box is found once, by the same trimming, on the shot's
# per-pixel second-largest luma (dark bars stay dark in it, dark picture that anything bright
# crosses does not) or, for light bars, its second-smallest, and used for every frame of the
# shot. Second, not first: one odd frame (an encoder glitch in the bar of the first frame after
# a cut, seen on the corpus) must not cost the whole shot its bars. Then the two opposite bars of an axis are made equal
# (the smaller of the two): players and encoders pad symmetrically, so a trim deeper on one
# side than on the other ran into dark picture. A shot whose frames do not change at all (a
# held slide) gets exactly what one frame's trim gives, symmetrised. Long shots are cut into
# chunks of at most SHOT_BUFFER_BYTES of buffered luma, so memory stays bounded.

#: the most luma bytes buffered for one shot's box (a longer shot is boxed chunk by chunk)
SHOT_BUFFER_BYTES = 48 << 20


def shot_boxes(frames: t.Iterable[SampledFrame], *,
               max_bytes: int = SHOT_BUFFER_BYTES) -> t.Iterator[SampledFrame]:
    """The sampled frames with ``box`` set to their shot's bar box (see above)."""
    shot: list[SampledFrame] = []
    #: per pixel over the frames in ``shot``: the largest, second largest, second smallest
    #: and smallest luma (the second ones ignore one odd frame, see shot_box)
    ext: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    size = 0
    for fr in frames:
        y = fr.luma
        if ext is not None and (fr.scene_cut or y.shape != ext[0].shape
                                or size + y.nbytes > max_bytes):
            box = shot_box(ext[1], ext[2])
            yield from (dataclasses.replace(f, box=box) for f in shot)
            shot, ext, size = [], None, 0
        if ext is None:
            ext = (y.copy(), y.copy(), y.copy(), y.copy())
        else:
            hi1, hi2, lo2, lo1 = ext
            if len(shot) == 1:  # the second frame: the two seconds are the other extremes
                np.minimum(hi1, y, out=hi2)
                np.maximum(lo1, y, out=lo2)
            else:
                np.maximum(hi2, np.minimum(hi1, y), out=hi2)
                np.minimum(lo2, np.maximum(lo1, y), out=lo2)
            np.maximum(hi1, y, out=hi1)
            np.minimum(lo1, y, out=lo1)
        shot.append(fr)
        size += y.nbytes
    if ext is not None:
        box = shot_box(ext[1], ext[2])
        yield from (dataclasses.replace(f, box=box) for f in shot)


def shot_box(hi: np.ndarray, lo: np.ndarray, *, keep: float = 0.25) -> tuple[int, int, int, int]:
    """The bar box of a shot from its per-pixel high ``hi`` and low ``lo`` luma (shot_boxes
    passes the second-largest and second-smallest): (top, bottom, left, right) kept. One
    frame's box is ``shot_box(y, y)``."""
    rows, cols = hi.shape
    # dark bars are found on the maximum (the picture never darkens into them there), light
    # bars on the minimum; which one by the colour of the frame's outermost ring
    ring = np.concatenate([hi[0], hi[-1], hi[:, 0], hi[:, -1]])
    box = _trim(hi if float(np.median(ring)) < 128 else lo, keep=0.0)
    top, bottom, left, right = box[0], rows - box[1], box[2], cols - box[3]
    # bars are centred (see above); a difference of a few pixels is the scaler's rounding and
    # blending at the picture's edge, and each side keeps its own trim then
    top, bottom = _centred(top, bottom, rows)
    left, right = _centred(left, right, cols)
    if rows - 2 * top < keep * rows:  # a flat shot is never trimmed to nothing
        top = bottom = 0
    if cols - 2 * left < keep * cols:
        left = right = 0
    return (top, rows - bottom, left, cols - right)


def _centred(a: int, b: int, size: int) -> tuple[int, int]:
    """Opposite bars of one axis: as trimmed when within 1% of the side (at least 2 pixels) of
    each other, else both the smaller (the deeper trim ran into dark picture)."""
    if abs(a - b) <= max(2, round(0.01 * size)):
        return a, b
    return min(a, b), min(a, b)
