"""Safe image decoding: limits first, then pixels, then a luma plane ready for hashing.

Flow: check the byte size → let Pillow identify the format from the bytes (never the extension) →
check the declared pixel count before any pixel is decoded (decompression bombs) → for JPEG, ask
libjpeg for a DCT-domain downscale and only the luma plane (``draft``), which is most of the speed
of hashing → decode the first frame → apply the EXIF orientation → normalise the mode (palette,
alpha over white, CMYK, 16-bit and float) → luma → find uniform borders.

Every failure is a typed :class:`~vigil.errors.MediaError` naming the file and what is wrong;
Pillow's own exceptions never escape.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vigil.errors import (
    CorruptMedia,
    DecompressionBomb,
    EmptyFile,
    FileTooLarge,
    MediaError,
    UnsupportedMedia,
)

__all__ = ["DecodedImage", "ImageLimits", "decode_image", "find_borders", "sniff_kind"]

# We enforce our own pixel limit before decoding; Pillow's global one would only warn or raise
# its own exception type.
Image.MAX_IMAGE_PIXELS = None

#: the short side we ask JPEG's scaled decode for; PDQ only needs 64x64 after a tent filter, so
#: 256 keeps the result within a few bits of a full decode (see benchmarks/bench_hashing.py)
DECODE_SHORT_SIDE = 256


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Configurable limits applied before any pixel is decoded."""

    max_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_side: int = 65_535


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """The luma plane of the first frame, with where uniform borders are.

    ``luma`` may be a downscaled decode; ``full_size`` is the (rows, cols) of the picture at full
    resolution after EXIF orientation. ``box`` is (top, bottom, left, right) in ``luma``
    coordinates, the part left after trimming uniform borders.
    """

    luma: np.ndarray
    full_size: tuple[int, int]
    box: tuple[int, int, int, int]
    format: str
    frames: int = 1

    @property
    def was_trimmed(self) -> bool:
        rows, cols = self.luma.shape
        return self.box != (0, rows, 0, cols)

    def trimmed_luma(self) -> np.ndarray:
        top, bottom, left, right = self.box
        return self.luma[top:bottom, left:right]

    def trimmed_full_size(self) -> tuple[int, int]:
        rows, cols = self.luma.shape
        top, bottom, left, right = self.box
        fr, fc = self.full_size
        return (
            max(1, round((bottom - top) * fr / rows)),
            max(1, round((right - left) * fc / cols)),
        )

    @property
    def width(self) -> int:
        return self.full_size[1]

    @property
    def height(self) -> int:
        return self.full_size[0]


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg audio/video file"),
    (b"fLaC", "a FLAC audio file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (b"RIFF", "a RIFF file (WAV/AVI/WebP)"),
)


_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _image_magic(head: bytes) -> str | None:
    for magic, fmt in _IMAGE_MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def sniff_kind(head: bytes) -> str:
    """A human description of what non-image bytes look like, for error messages."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "an MP4/QuickTime file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    return "text"


def decode_image(
    source: Path | str | bytes, limits: ImageLimits | None = None, *, name: str | None = None
) -> DecodedImage:
    """Decode an image file (a path) or its bytes safely into a :class:`DecodedImage`."""
    limits = limits or ImageLimits()
    if isinstance(source, str):
        source = Path(source)
    label = name or (str(source) if isinstance(source, Path) else "<bytes>")
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise MediaError(f"{label}: cannot read: {exc.strerror or exc}", path=label) from exc
        if size > limits.max_bytes:
            raise FileTooLarge(
                f"{label}: {size} bytes is over the limit of {limits.max_bytes}",
                path=label,
                bytes=size,
                limit=limits.max_bytes,
            )
        data = source.read_bytes()
    else:
        data = source
        if len(data) > limits.max_bytes:
            raise FileTooLarge(
                f"{label}: {len(data)} bytes is over the limit of {limits.max_bytes}",
                path=label,
                bytes=len(data),
                limit=limits.max_bytes,
            )
    if not data:
        raise EmptyFile(f"{label}: the file is empty (0 bytes)", path=label)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on odd EXIF / palette transparency
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            claimed = _image_magic(data[:16])
            if claimed:  # the bytes say image, but Pillow cannot read the header
                raise CorruptMedia(
                    f"{label}: starts like a {claimed} image but its header is corrupt",
                    path=label,
                    format=claimed,
                ) from None
            raise UnsupportedMedia(
                f"{label}: not a supported image: the bytes look like {sniff_kind(data[:64])}",
                path=label,
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            claimed = _image_magic(data[:16]) or "image"
            raise CorruptMedia(
                f"{label}: unreadable {claimed} header: {exc}", path=label, format=claimed
            ) from exc
        decoded = _decode_opened(img, limits, label, scaled=True)
        if decoded.was_trimmed and decoded.luma.shape != decoded.full_size:
            # Borders found on a scaled decode are only placed to within a few pixels, and PDQ's
            # tent filter weighs the outermost lines heavily: one stray black row moves some
            # hashes by 20 bits. Find them again at full resolution; only bordered JPEGs pay.
            decoded = _decode_opened(Image.open(io.BytesIO(data)), limits, label, scaled=False)
        return decoded


def _decode_opened(
    img: Image.Image, limits: ImageLimits, label: str, *, scaled: bool = True
) -> DecodedImage:
    fmt = img.format or "unknown"
    width, height = img.size
    if width <= 0 or height <= 0:
        raise CorruptMedia(f"{label}: {fmt} declares an empty size {width}x{height}", path=label)
    if width > limits.max_side or height > limits.max_side:
        raise DecompressionBomb(
            f"{label}: {fmt} declares {width}x{height} pixels, over the limit of "
            f"{limits.max_side} pixels per side",
            path=label,
            width=width,
            height=height,
            limit=limits.max_side,
        )
    if width * height > limits.max_pixels:
        raise DecompressionBomb(
            f"{label}: {fmt} declares {width}x{height} = {width * height} pixels, over the limit "
            f"of {limits.max_pixels} pixels",
            path=label,
            width=width,
            height=height,
            limit=limits.max_pixels,
        )
    frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is not worth losing the picture over
        orientation = 1
    if scaled and fmt == "JPEG" and img.mode in ("RGB", "L", "YCbCr"):
        short = min(width, height)
        if short > DECODE_SHORT_SIDE:
            scale = DECODE_SHORT_SIDE / short
            img.draft("L", (max(1, int(width * scale)), max(1, int(height * scale))))
    try:
        img.seek(0)
        img.load()
    except Image.DecompressionBombError as exc:  # pragma: no cover - our limit comes first
        raise DecompressionBomb(f"{label}: {exc}", path=label) from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise CorruptMedia(
            f"{label}: truncated or corrupt {fmt} data: {exc}", path=label, format=fmt
        ) from exc
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        img = ImageOps.exif_transpose(img)
        if orientation >= 5:
            width, height = height, width
    luma = _to_luma(img, label)
    top, bottom, left, right = find_borders(luma)
    return DecodedImage(
        luma=luma,
        full_size=(height, width),
        box=(top, bottom, left, right),
        format=fmt,
        frames=frames,
    )


def _to_luma(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.float32) / 257.0
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).astype(np.float32)
    if mode == "L":
        return np.asarray(img, dtype=np.float32)
    if mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        try:
            img = img.convert("RGB")  # CMYK, YCbCr, 1, LAB, HSV ...
        except (ValueError, OSError) as exc:
            raise UnsupportedMedia(
                f"{label}: image mode {mode} cannot be converted", path=label
            ) from exc
    rgb = np.asarray(img, dtype=np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def find_borders(
    luma: np.ndarray,
    *,
    tolerance: float = 12.0,
    share: float = 0.97,
    keep: float = 0.25,
    flatness: float = 2.0,
    transition: int = 3,
    line_share: float | None = None,
) -> tuple[int, int, int, int]:
    """Find uniform borders (letterbox, pillarbox, padding of any flat colour).

    A border is synthetic: its outermost line is one colour, give or take rounding (at least
    ``share`` of its pixels within ``flatness`` grey levels of its median; compression leaves
    flat blocks flat). That test alone decides most pictures, and it is what keeps a hazy sky,
    fog or a plain wall at the edge of a photo from being taken for a border: those drift and
    carry noise of a few grey levels, and cutting them off would move the canonical hash away
    from Meta's reference. Once an edge is known to be border, further lines count as border
    while at least ``share`` of their pixels lie within ``tolerance`` grey levels of the edge
    colour, so JPEG ringing next to the picture is trimmed too, and up to ``transition`` more
    lines that blend border and picture are dropped (``line_share``, default ``share``, is the
    share that further lines need: video asks for less, see :mod:`vigil.media.video`). Trimming
    stops before less than
    ``keep`` of a dimension would remain, so a flat image is never trimmed to nothing. Returns
    the kept box (top, bottom, left, right).
    """
    rows, cols = luma.shape
    if rows < 8 or cols < 8:
        return (0, rows, 0, cols)

    def run(lines: np.ndarray) -> int:
        # lines: (n, length) from the edge inwards
        ref = np.median(lines[0])
        if (np.abs(lines[0] - ref) <= flatness).mean() < share:
            return 0  # the common case: no border, decided from one line
        dev = np.abs(lines - ref)
        uniform = (dev <= tolerance).mean(axis=1) >= (share if line_share is None else line_share)
        nonuni = np.flatnonzero(~uniform)
        if not nonuni.size:
            return int(lines.shape[0])
        end = int(nonuni[0])
        # Lines where the border blends into the picture (JPEG ringing, a resize's blur, a line
        # that is part border) are still much closer to the border colour than the picture
        # after them; keeping one darkens the edge that the hash weighs most, so drop them.
        for _ in range(transition):
            if end + 1 >= lines.shape[0]:
                break
            here, after = dev[end].mean(), dev[end + 1].mean()
            if here >= 0.5 * after:
                break
            end += 1
        return end

    top = run(luma)
    bottom = run(luma[::-1])
    left = run(luma.T)
    right = run(luma.T[::-1])
    if rows - top - bottom < keep * rows:
        top = bottom = 0
    if cols - left - right < keep * cols:
        left = right = 0
    # a single stray uniform line is noise, not a border
    top, bottom, left, right = (v if v >= 2 else 0 for v in (top, bottom, left, right))
    return (top, rows - bottom, left, cols - right)

