"""Safe image decoding: typed errors with precise messages, every common mode and format, and
uniform-border detection."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import vigil
from vigil.errors import (
    CorruptMedia,
    DecompressionBomb,
    EmptyFile,
    FileTooLarge,
    MediaError,
    UnsupportedMedia,
)
from vigil.media.image import (
    DECODE_SHORT_SIDE,
    DecodedImage,
    ImageLimits,
    decode_image,
    find_borders,
    sniff_kind,
)
from vigil.signals.pdq import PdqSignal
from vigil.testing import encode_image

SAMPLES = Path(vigil.__file__).parent / "samples" / "images"


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo at a size that keeps these tests quick (512x384)."""
    with Image.open(SAMPLES / "farm-animal-pig.jpg") as img:
        return img.convert("RGB").resize((512, 384), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photo_hash(photo: Image.Image) -> str:
    return pdq(encode_image(photo))


@pytest.fixture(scope="module")
def grey_hash(photo: Image.Image) -> str:
    return pdq(encode_image(photo.convert("L")))


def pdq(data: bytes | Path) -> str:
    return PdqSignal.hash_image(decode_image(data))[0].value


def dist(a: str, b: str) -> int:
    return PdqSignal.distance(a, b)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A complete, valid 1-bit PNG of width x height black pixels: ~110 KB that would inflate to
    ~110 MB of pixels (and to 900 M luma floats), written row block by row block."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(height // 1000))
    idat += packer.compress(row * (height % 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# -- limits and typed errors --------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.jpg", b"")
    with pytest.raises(EmptyFile) as exc:
        decode_image(path)
    assert str(exc.value) == f"{path}: the file is empty (0 bytes)"
    assert exc.value.details == {"path": str(path)}
    with pytest.raises(EmptyFile, match=r"^<bytes>: the file is empty"):
        decode_image(b"")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(MediaError, match=rf"^{path}: cannot read: No such file"):
        decode_image(path)


def test_file_over_max_bytes_is_refused_before_reading(
    tmp_path: Path, photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode_image(photo, "JPEG")
    path = write(tmp_path, "big.jpg", data)
    limits = ImageLimits(max_bytes=len(data) - 1)

    def no_read(self: Path) -> bytes:
        raise AssertionError("read a file that is over the byte limit")

    with monkeypatch.context() as m:
        m.setattr(Path, "read_bytes", no_read)
        with pytest.raises(FileTooLarge) as exc:
            decode_image(path, limits)
    assert str(exc.value) == f"{path}: {len(data)} bytes is over the limit of {len(data) - 1}"
    assert exc.value.details["bytes"] == len(data)
    assert exc.value.status == 413
    with pytest.raises(FileTooLarge, match=rf"<bytes>: {len(data)} bytes is over the limit"):
        decode_image(data, limits)
    assert decode_image(data, ImageLimits(max_bytes=len(data))).full_size == (384, 512)


def test_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bomb_png()
    assert len(data) < 200_000
    with Image.open(io.BytesIO(data)) as img:  # it is a real PNG of that size
        assert img.size == (30_000, 30_000) and img.mode == "1"

    def no_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded pixels of a decompression bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    path = write(tmp_path, "bomb.png", data)
    with pytest.raises(DecompressionBomb) as exc:
        decode_image(path)
    assert str(exc.value) == (
        f"{path}: PNG declares 30000x30000 = 900000000 pixels, over the limit of 64000000 pixels"
    )
    assert exc.value.details["width"] == exc.value.details["height"] == 30_000
    assert exc.value.details["limit"] == 64_000_000


def test_max_side_is_enforced_with_its_own_message(photo: Image.Image) -> None:
    data = encode_image(photo)
    with pytest.raises(DecompressionBomb) as exc:
        decode_image(data, ImageLimits(max_side=500))
    assert (
        str(exc.value)
        == "<bytes>: PNG declares 512x384 pixels, over the limit of 500 pixels per side"
    )
    assert exc.value.details["limit"] == 500
    decode_image(data, ImageLimits(max_side=512))  # inclusive


def test_max_pixels_is_inclusive(photo: Image.Image) -> None:
    data = encode_image(photo)
    decode_image(data, ImageLimits(max_pixels=512 * 384))
    with pytest.raises(DecompressionBomb, match="over the limit of 196607 pixels$"):
        decode_image(data, ImageLimits(max_pixels=512 * 384 - 1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF"])
def test_truncated_file_is_corrupt(tmp_path: Path, photo: Image.Image, fmt: str) -> None:
    data = encode_image(photo, fmt)
    path = write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2])
    with pytest.raises(CorruptMedia) as exc:
        decode_image(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ")
    assert fmt in message.upper() or "truncated" in message.lower(), message
    assert not isinstance(exc.value, UnsupportedMedia)


def test_truncated_jpeg_message(photo: Image.Image) -> None:
    data = encode_image(photo, "JPEG")
    with pytest.raises(CorruptMedia, match=r"^<bytes>: truncated or corrupt JPEG data: "):
        decode_image(data[: len(data) * 2 // 3])


def test_truncated_png_message(photo: Image.Image) -> None:
    data = encode_image(photo, "PNG")
    with pytest.raises(CorruptMedia, match=r"^<bytes>: truncated or corrupt PNG data: "):
        decode_image(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
@pytest.mark.parametrize("cut", [12, 20, 40])
def test_file_cut_inside_its_header_is_corrupt_not_unsupported(
    photo: Image.Image, fmt: str, cut: int
) -> None:
    with pytest.raises(CorruptMedia, match=rf"^<bytes>: .*{fmt}.* header"):
        decode_image(encode_image(photo, fmt)[:cut])


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (b"name,hash\nfoo,abc\n", "text"),
        ("Grüße, ceci n'est pas une image\n".encode(), "text"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "a PDF document"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "a ZIP archive"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "an MP4/QuickTime file"),
        (b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00", "a RIFF file (WAV/AVI/WebP)"),
        (bytes(range(128, 256)) * 2, "binary data of an unknown format"),
    ],
)
def test_non_images_named_jpg_are_unsupported(
    tmp_path: Path, content: bytes, looks_like: str
) -> None:
    path = write(tmp_path, "holiday.jpg", content)
    with pytest.raises(UnsupportedMedia) as exc:
        decode_image(path)
    assert str(exc.value) == f"{path}: not a supported image: the bytes look like {looks_like}"
    assert exc.value.code == "unsupported_media" and exc.value.status == 415


def test_name_overrides_the_label(photo: Image.Image) -> None:
    with pytest.raises(EmptyFile, match=r"^upload-17: "):
        decode_image(b"", name="upload-17")


def test_mutilated_files_only_raise_media_errors(photo: Image.Image) -> None:
    """Flipped bytes and cuts anywhere in several formats: a hash or a MediaError, never
    Pillow's own exceptions."""
    rng = np.random.default_rng(11)
    small = photo.resize((96, 72))
    originals = [encode_image(small, fmt) for fmt in ("JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP")]
    for i in range(600):
        data = bytearray(originals[i % len(originals)])
        for pos in rng.integers(0, len(data), int(rng.integers(1, 12))):
            data[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.4:
            data = data[: int(rng.integers(0, len(data)))]
        try:
            decoded = decode_image(bytes(data))
        except MediaError:
            continue
        PdqSignal.hash_image(decoded)


# -- formats and modes ------------------------------------------------------------------------


def test_png_named_jpg_hashes_as_png(tmp_path: Path, photo: Image.Image, photo_hash: str) -> None:
    path = write(tmp_path, "really-a-png.jpg", encode_image(photo, "PNG"))
    decoded = decode_image(path)
    assert decoded.format == "PNG"
    assert PdqSignal.hash_image(decoded)[0].value == photo_hash


@pytest.mark.parametrize(
    ("fmt", "options", "bits"),
    [
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 85}, 6),
        ("JPEG", {"quality": 90}, 6),
        ("PNG", {"optimize": True}, 0),
    ],
)
def test_formats(photo: Image.Image, photo_hash: str, fmt: str, options: dict, bits: int) -> None:
    decoded = decode_image(encode_image(photo, fmt, **options))
    assert decoded.format == fmt
    assert decoded.full_size == (384, 512)
    assert dist(PdqSignal.hash_image(decoded)[0].value, photo_hash) <= bits


def test_palette_png(photo: Image.Image, photo_hash: str) -> None:
    pal = photo.quantize(256)
    data = encode_image(pal)
    assert Image.open(io.BytesIO(data)).mode == "P"
    # the palette's own colours, converted exactly
    assert pdq(data) == pdq(encode_image(pal.convert("RGB")))
    assert dist(pdq(data), photo_hash) <= 8


def _hole_mask(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 3 : w * 2 // 3] = True  # a transparent hole in the middle
    return mask


def test_rgba_is_flattened_over_white(photo: Image.Image) -> None:
    rgb = np.asarray(photo).copy()
    hole = _hole_mask(photo.size)
    junk = rgb.copy()
    junk[hole] = (0, 255, 0)  # what lies under the transparent pixels must not matter
    rgba = np.dstack([junk, np.where(hole, 0, 255).astype(np.uint8)])
    expected = rgb.copy()
    expected[hole] = 255
    got = pdq(encode_image(Image.fromarray(rgba)))
    assert got == pdq(encode_image(Image.fromarray(expected)))
    assert dist(got, pdq(encode_image(Image.fromarray(junk)))) > 8  # alpha was not dropped


def test_semi_transparent_pixels_blend_with_white(photo: Image.Image) -> None:
    rgb = np.asarray(photo)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    blended = (rgb.astype(np.float32) * 128 / 255 + 255 * 127 / 255).round().astype(np.uint8)
    got = pdq(encode_image(Image.fromarray(rgba)))
    assert dist(got, pdq(encode_image(Image.fromarray(blended)))) <= 4


def test_la_is_flattened_over_white(photo: Image.Image) -> None:
    grey = np.asarray(photo.convert("L")).copy()
    hole = _hole_mask(photo.size)
    junk = grey.copy()
    junk[hole] = 0
    la = Image.fromarray(np.dstack([junk, np.where(hole, 0, 255).astype(np.uint8)]))
    assert la.mode == "LA"
    expected = grey.copy()
    expected[hole] = 255
    assert pdq(encode_image(la)) == pdq(encode_image(Image.fromarray(expected)))


def test_palette_with_transparency_is_flattened_over_white(photo: Image.Image) -> None:
    pal = photo.quantize(255)  # leave index 255 free for the transparent colour
    idx = np.asarray(pal).copy()
    hole = _hole_mask(photo.size)
    idx[hole] = 255
    palette = pal.getpalette()[: 255 * 3] + [0, 0, 0]  # transparent pixels are black underneath
    img = Image.fromarray(idx)
    img.putpalette(palette)
    img.info["transparency"] = 255
    data = encode_image(img, transparency=255)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 255
    expected = np.asarray(pal.convert("RGB")).copy()
    expected[hole] = 255
    assert pdq(data) == pdq(encode_image(Image.fromarray(expected)))


def test_cmyk_jpeg(photo: Image.Image, photo_hash: str) -> None:
    data = encode_image(photo.convert("CMYK"), "JPEG", quality=92)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "CMYK"
    assert dist(pdq(data), photo_hash) <= 6


def test_16_bit_greyscale_png(photo: Image.Image, grey_hash: str) -> None:
    grey16 = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    data = encode_image(Image.fromarray(grey16))
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "I;16"
    decoded = decode_image(data)
    assert float(decoded.luma.max()) <= 255.0  # scaled to 8-bit levels, not 65535
    assert dist(PdqSignal.hash_image(decoded)[0].value, grey_hash) <= 2


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_tiff(photo: Image.Image, grey_hash: str, mode: str) -> None:
    grey = np.asarray(photo.convert("L"))
    pixels = grey.astype(np.int32) * 1000 - 7 if mode == "I" else grey.astype(np.float32) / 255
    data = encode_image(Image.fromarray(pixels), "TIFF")
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == mode
    decoded = decode_image(data)
    assert 0.0 <= float(decoded.luma.min()) and float(decoded.luma.max()) <= 255.0
    assert dist(PdqSignal.hash_image(decoded)[0].value, grey_hash) <= 2


def test_constant_32_bit_image_does_not_divide_by_zero() -> None:
    data = encode_image(Image.fromarray(np.full((64, 64), 12345, np.int32)), "TIFF")
    decoded = decode_image(data)
    assert np.isfinite(decoded.luma).all()
    assert PdqSignal.hash_image(decoded)[0].quality == 0


def test_one_bit_image(photo: Image.Image) -> None:
    bw = photo.convert("1")
    for fmt in ("PNG", "TIFF", "BMP"):
        data = encode_image(bw, fmt)
        with Image.open(io.BytesIO(data)) as img:
            assert img.mode == "1"
        assert pdq(data) == pdq(encode_image(bw.convert("L"))), fmt


def test_animated_gif_hashes_the_first_frame(photo: Image.Image) -> None:
    frames = [photo, photo.transpose(Image.Transpose.ROTATE_180), photo.convert("L").convert("RGB")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    decoded = decode_image(buf.getvalue())
    assert decoded.format == "GIF" and decoded.frames == 3
    first_frame_alone = encode_image(photo, "GIF")
    second_frame_alone = encode_image(frames[1], "GIF")
    got = PdqSignal.hash_image(decoded)[0].value
    assert dist(got, pdq(first_frame_alone)) <= 4
    assert dist(got, pdq(second_frame_alone)) > PdqSignal.default_threshold


def test_still_images_report_one_frame(photo: Image.Image) -> None:
    assert decode_image(encode_image(photo, "PNG")).frames == 1


def test_large_jpeg_uses_a_scaled_decode(photo: Image.Image) -> None:
    big = photo.resize((2048, 1536))
    decoded = decode_image(encode_image(big, "JPEG", quality=90))
    rows, cols = decoded.luma.shape
    assert decoded.full_size == (1536, 2048)
    assert DECODE_SHORT_SIDE <= min(rows, cols) < 1536
    assert rows * 2048 == cols * 1536  # the aspect ratio survives
    assert (decoded.height, decoded.width) == (1536, 2048)


def test_tiny_images_hash(photo: Image.Image) -> None:
    for size in [(1, 1), (1, 50), (50, 1), (3, 2), (7, 9)]:
        sigs = PdqSignal.hash_image(decode_image(encode_image(photo.resize(size))))
        assert len(sigs) == 1 and len(sigs[0].value) == 64


# -- border detection ---------------------------------------------------------------------------


def _texture(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(40, 220, (rows, cols)).astype(np.float32)


def test_no_border() -> None:
    assert find_borders(_texture(100, 120)) == (0, 100, 0, 120)


def test_letterbox_pillarbox_and_frame() -> None:
    luma = _texture(100, 120)
    luma[:13] = luma[-9:] = 0
    assert find_borders(luma) == (13, 91, 0, 120)
    luma = _texture(100, 120)
    luma[:, :17] = luma[:, -5:] = 16
    assert find_borders(luma) == (0, 100, 17, 115)
    luma = _texture(100, 120)
    luma[:4], luma[-6:], luma[:, :7], luma[:, -3:] = 200, 200, 200, 200
    assert find_borders(luma) == (4, 94, 7, 117)


def test_one_line_is_not_a_border() -> None:
    luma = _texture(100, 120)
    luma[0] = 0
    assert find_borders(luma) == (0, 100, 0, 120)


def test_sky_is_not_a_border() -> None:
    """A smooth gradient with a few grey levels of noise (haze, sky, a wall) at an edge is
    picture: trimming it would move the hash away from Meta's reference."""
    rng = np.random.default_rng(5)
    luma = _texture(100, 120)
    sky = np.linspace(170, 160, 40)[:, None] + rng.normal(0, 2.5, (40, 120))
    luma[:40] = sky
    assert find_borders(luma) == (0, 100, 0, 120)


def test_blended_lines_between_border_and_picture_are_trimmed() -> None:
    luma = _texture(100, 120)
    luma[:10] = 0
    luma[10] = luma[11] * 0.3  # a line that is mostly border (a resize's blur, JPEG ringing)
    assert find_borders(luma) == (11, 100, 0, 120)


def test_dark_picture_after_a_black_border_is_kept() -> None:
    luma = _texture(100, 120) * 0.2 + 14  # a night scene, 22..58
    luma[:10] = 0
    top, *_ = find_borders(luma)
    assert top == 10


def test_flat_image_is_never_trimmed_to_nothing() -> None:
    assert find_borders(np.full((50, 60), 77.0, np.float32)) == (0, 50, 0, 60)


def test_mostly_border_keeps_at_least_a_quarter() -> None:
    luma = np.zeros((100, 120), np.float32)
    luma[45:55, 50:70] = _texture(10, 20)  # 10% of the height, 17% of the width
    assert find_borders(luma) == (0, 100, 0, 120)
    luma[30:70, 40:80] = _texture(40, 40)  # 40% x 33%: trimmed
    assert find_borders(luma) == (30, 70, 40, 80)


def test_tiny_images_are_never_trimmed() -> None:
    luma = np.zeros((7, 7), np.float32)
    luma[3, 3] = 255
    assert find_borders(luma) == (0, 7, 0, 7)


def test_decoded_image_geometry() -> None:
    luma = _texture(100, 200)
    decoded = DecodedImage(luma=luma, full_size=(400, 800), box=(10, 90, 20, 180), format="X")
    assert decoded.was_trimmed
    assert decoded.trimmed_luma().shape == (80, 160)
    assert decoded.trimmed_full_size() == (320, 640)
    assert (decoded.height, decoded.width) == (400, 800)
    whole = DecodedImage(luma=luma, full_size=(100, 200), box=(0, 100, 0, 200), format="X")
    assert not whole.was_trimmed and whole.trimmed_full_size() == (100, 200)


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"%PDF-1.4", "a PDF document"),
        (b"\x1f\x8b\x08\x00", "a gzip archive"),
        (b"ID3\x04\x00", "an MP3 audio file"),
        (b"OggS\x00\x02", "an Ogg audio/video file"),
        (b"fLaC\x00\x00", "a FLAC audio file"),
        (b"\x1aE\xdf\xa3\x9fB\x86", "a Matroska/WebM video"),
        (b"hello", "text"),
        (b"\xff\xfe\x00\x00\x80", "binary data of an unknown format"),
    ],
)
def test_sniff_kind(head: bytes, what: str) -> None:
    assert sniff_kind(head) == what
