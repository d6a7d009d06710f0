"""The edits of the robustness benchmark: families, each with named strengths, all deterministic.

An edit is a function ``(picture, rng, ctx) -> picture`` on RGB Pillow images; ``ctx`` gives the
unrelated pictures and overlay cut-outs some edits need (picture-in-picture backgrounds, logos).
The result is then saved as JPEG q90 by the pipeline, except for the ``reencode`` family, which
saves with its own codec and quality (see :func:`encode`).

``MODERATE`` marks the strengths the issue's targets are stated for (crop <= 25%, rotation <= 10°,
picture-in-picture >= 40% scale, borders and overlays covering <= 30% of the area).
"""

from __future__ import annotations

import dataclasses
import io
import typing as t
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = ["EDITS", "Ctx", "Edit", "apply", "encode"]

Img = Image.Image


@dataclasses.dataclass
class Ctx:
    backgrounds: list[Path]
    overlays: list[Path]

    def background(self, rng: np.random.Generator) -> Img:
        p = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        with Image.open(p) as im:
            return im.convert("RGB")

    def overlay(self, rng: np.random.Generator, index: int | None = None) -> Img:
        i = int(rng.integers(len(self.overlays))) if index is None else index % len(self.overlays)
        with Image.open(self.overlays[i]) as im:
            return im.convert("RGBA")


@dataclasses.dataclass(frozen=True)
class Edit:
    family: str
    strength: str
    fn: t.Callable[[Img, np.random.Generator, Ctx], Img]
    moderate: bool = True
    #: codec for the saved query: ("JPEG", 90) unless the edit is about encoding
    codec: tuple[str, int] = ("JPEG", 90)

    @property
    def key(self) -> str:
        return f"{self.family}/{self.strength}"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


# -- geometry -------------------------------------------------------------------------------------
def _resize(f: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    return lambda im, rng, ctx: im.resize((max(8, round(im.width * f)), max(8, round(im.height * f))),
                                          Image.Resampling.LANCZOS)


def _rotate(deg: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        sign = 1 if rng.random() < 0.5 else -1
        return im.rotate(sign * deg, resample=Image.Resampling.BICUBIC, expand=False)
    return fn


def _crop_edge(share: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    """Remove ``share`` of the area from one or two random edges."""
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        w, h = im.size
        keep = 1 - share
        if rng.random() < 0.5:  # one edge, the other dimension kept
            if rng.random() < 0.5:
                cw = round(w * keep)
                x0 = 0 if rng.random() < 0.5 else w - cw
                return im.crop((x0, 0, x0 + cw, h))
            ch = round(h * keep)
            y0 = 0 if rng.random() < 0.5 else h - ch
            return im.crop((0, y0, w, y0 + ch))
        k = np.sqrt(keep)
        cw, ch = round(w * k), round(h * k)
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        return im.crop((x0, y0, x0 + cw, y0 + ch))
    return fn


def _crop_centre(share: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        w, h = im.size
        k = np.sqrt(1 - share)
        cw, ch = round(w * k), round(h * k)
        return im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return fn


def _crop_aspect(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    """Centre crop to a square (landscape) or 4:5 (portrait): the usual feed formats."""
    w, h = im.size
    if w >= h:
        cw = h
        return im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    ch = round(w * 5 / 4)
    return im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))


# -- borders ------------------------------------------------------------------------------------
def _pad(share: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    """Flat letterbox/pillarbox/padding that makes the border ``share`` of the new area."""
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        w, h = im.size
        colour = tuple(int(c) for c in rng.choice([[0, 0, 0], [255, 255, 255], [30, 30, 30]]))
        scale = 1 / (1 - share)
        mode = int(rng.integers(3))
        nw, nh = (round(w * scale), h) if mode == 0 else (w, round(h * scale)) if mode == 1 else (
            round(w * np.sqrt(scale)), round(h * np.sqrt(scale)))
        canvas = Image.new("RGB", (nw, nh), colour)
        canvas.paste(im, ((nw - w) // 2, (nh - h) // 2))
        return canvas
    return fn


def _blur_pillarbox(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    """The phone re-upload look: the picture centred on a 9:16 (or 16:9) canvas filled with a
    blurred, enlarged copy of itself."""
    w, h = im.size
    nw, nh = (round(h * 16 / 9), h) if w < h * 16 / 9 and w >= h else (w, round(w * 16 / 9))
    bg = ImageOps.fit(im, (nw, nh)).filter(ImageFilter.GaussianBlur(max(nw, nh) / 30))
    bg = ImageEnhance.Brightness(bg).enhance(0.7)
    bg.paste(im, ((nw - w) // 2, (nh - h) // 2))
    return bg


# -- colour and filters ---------------------------------------------------------------------------
def _sepia(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    a = np.asarray(im, np.float32)
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return Image.fromarray(np.clip(a @ m.T, 0, 255).astype(np.uint8))


def _hue(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + 64) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _gamma(g: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    lut = [min(255, round(255 * (i / 255) ** g)) for i in range(256)] * 3
    return lambda im, rng, ctx: im.point(lut)


def _noise(sigma: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        a = np.asarray(im, np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return fn


# -- overlays -----------------------------------------------------------------------------------
def _caption(share: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    """A solid caption bar with text over ``share`` of the height (so of the area)."""
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        im = im.copy()
        w, h = im.size
        bh = round(h * share)
        top = rng.random() < 0.5
        d = ImageDraw.Draw(im)
        y0 = 0 if top else h - bh
        d.rectangle([0, y0, w, y0 + bh], fill=(int(rng.integers(0, 60)),) * 3)
        words = ["BREAKING", "SHARE NOW", "the truth they hide", "WATCH", "#news", "2024"]
        text = " ".join(str(rng.choice(words)) for _ in range(4))
        d.text((w * 0.04, y0 + bh * 0.25), text, fill=(255, 255, 255), font=_font(round(bh * 0.4)))
        return im
    return fn


def _paste_overlay(im: Img, ov: Img, share: float, rng: np.random.Generator,
                   opacity: float = 1.0) -> Img:
    im = im.copy().convert("RGBA")
    w, h = im.size
    # scale the cut-out so its bounding box is `share` of the picture's area
    s = np.sqrt(share * w * h / (ov.width * ov.height))
    ov = ov.resize((max(4, round(ov.width * s)), max(4, round(ov.height * s))),
                   Image.Resampling.LANCZOS)
    if opacity < 1:
        alpha = np.asarray(ov.getchannel("A"), np.float32) * opacity
        ov.putalpha(Image.fromarray(alpha.astype(np.uint8)))
    x = int(rng.integers(0, max(1, w - ov.width + 1)))
    y = int(rng.integers(0, max(1, h - ov.height + 1)))
    im.alpha_composite(ov, (min(x, max(0, w - ov.width)), min(y, max(0, h - ov.height))))
    return im.convert("RGB")


def _logo(share: float, opacity: float = 1.0) -> t.Callable[[Img, t.Any, Ctx], Img]:
    return lambda im, rng, ctx: _paste_overlay(im, ctx.overlay(rng), share, rng, opacity)


def _stickers(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    for _ in range(3):
        im = _paste_overlay(im, ctx.overlay(rng), 0.06, rng)
    return im


def _watermark(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    """Tiled semi-transparent text, the stock-photo look."""
    im = im.convert("RGBA")
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    step = max(40, im.width // 5)
    for y in range(0, im.height, step):
        for x in range(-(y % (2 * step)), im.width, 2 * step):
            d.text((x, y), "vigil-wm", fill=(255, 255, 255, 90), font=_font(step // 4))
    return Image.alpha_composite(im, layer).convert("RGB")


# -- embedding ----------------------------------------------------------------------------------
def _pip(scale: float) -> t.Callable[[Img, t.Any, Ctx], Img]:
    """The picture at ``scale`` of the background's width, inside an unrelated picture."""
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        bg = ctx.background(rng)
        bg = bg.resize((1024, round(1024 * bg.height / bg.width)))
        if bg.height < 400:
            bg = ImageOps.fit(bg, (1024, 640))
        w = round(bg.width * scale)
        h = round(w * im.height / im.width)
        if h > bg.height * 0.95:
            h = round(bg.height * 0.95)
            w = round(h * im.width / im.height)
        small = im.resize((w, h), Image.Resampling.LANCZOS)
        x = int(rng.integers(0, bg.width - w + 1))
        y = int(rng.integers(0, bg.height - h + 1))
        bg.paste(small, (x, y))
        return bg
    return fn


def _screen(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    """A phone screen recording / screenshot: app chrome around the picture, rescaled, with a
    moiré pattern and sensor noise."""
    w = 720
    ph = round(w * im.height / im.width)
    bar_top, bar_bottom = 120, 260
    canvas = Image.new("RGB", (w, ph + bar_top + bar_bottom), (250, 250, 250))
    d = ImageDraw.Draw(canvas)
    d.rectangle([0, 0, w, 40], fill=(20, 20, 20))
    d.text((20, 10), "12:41   87%", fill=(255, 255, 255), font=_font(18))
    d.ellipse([20, 55, 80, 115], fill=(120, 140, 200))
    d.text((95, 70), "channel_name · 2h", fill=(10, 10, 10), font=_font(24))
    canvas.paste(im.resize((w, ph), Image.Resampling.BILINEAR), (0, bar_top))
    y = bar_top + ph + 20
    d.text((20, y), "1.2k likes   230 comments   share", fill=(30, 30, 30), font=_font(26))
    d.text((20, y + 50), "Look at this, everyone should see it before it is deleted",
           fill=(60, 60, 60), font=_font(20))
    a = np.asarray(canvas, np.float32)
    yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
    moire = 6 * np.sin(xx * 0.9 + yy * 0.35) * np.sin(yy * 0.8)
    a = a + moire[..., None] + rng.normal(0, 4, a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return out.resize((round(out.width * 0.85), round(out.height * 0.85)), Image.Resampling.BILINEAR)


def _identity(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    return im


def _combo(*parts: t.Callable[[Img, t.Any, Ctx], Img]) -> t.Callable[[Img, t.Any, Ctx], Img]:
    def fn(im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
        for p in parts:
            im = p(im, rng, ctx)
        return im
    return fn


E = Edit
EDITS: tuple[Edit, ...] = (
    E("reencode", "jpeg-q10", _identity, False, ("JPEG", 10)),
    E("reencode", "jpeg-q30", _identity, True, ("JPEG", 30)),
    E("reencode", "jpeg-q70", _identity, True, ("JPEG", 70)),
    E("reencode", "webp-q40", _identity, True, ("WEBP", 40)),
    E("resize", "x0.2", _resize(0.2), False),
    E("resize", "x0.5", _resize(0.5)),
    E("resize", "x2", _resize(2.0)),
    E("colour", "greyscale", lambda im, r, c: im.convert("L").convert("RGB")),
    E("colour", "sepia", _sepia),
    E("colour", "hue+90", _hue),
    E("colour", "brightness+40%", lambda im, r, c: ImageEnhance.Brightness(im).enhance(1.4)),
    E("colour", "contrast-50%", lambda im, r, c: ImageEnhance.Contrast(im).enhance(0.5)),
    E("colour", "gamma2", _gamma(2.0)),
    E("filter", "blur-r2", lambda im, r, c: im.filter(ImageFilter.GaussianBlur(2))),
    E("filter", "noise-s12", _noise(12)),
    E("filter", "sharpen", lambda im, r, c: im.filter(ImageFilter.UnsharpMask(3, 200, 2))),
    E("dihedral", "flip-x", lambda im, r, c: ImageOps.mirror(im)),
    E("dihedral", "rot90", lambda im, r, c: im.transpose(Image.Transpose.ROTATE_270)),
    E("dihedral", "rot180", lambda im, r, c: im.transpose(Image.Transpose.ROTATE_180)),
    E("rotate", "2deg", _rotate(2)),
    E("rotate", "5deg", _rotate(5)),
    E("rotate", "10deg", _rotate(10)),
    E("rotate", "15deg", _rotate(15), False),
    E("crop", "edge-5%", _crop_edge(0.05)),
    E("crop", "edge-15%", _crop_edge(0.15)),
    E("crop", "edge-25%", _crop_edge(0.25)),
    E("crop", "edge-40%", _crop_edge(0.40), False),
    E("crop", "centre-25%", _crop_centre(0.25)),
    E("crop", "centre-40%", _crop_centre(0.40), False),
    E("crop", "aspect", _crop_aspect, False),
    E("border", "flat-10%", _pad(0.10)),
    E("border", "flat-30%", _pad(0.30)),
    E("border", "flat-50%", _pad(0.50), False),
    E("border", "blur-pillarbox", _blur_pillarbox, False),
    E("overlay", "caption-15%", _caption(0.15)),
    E("overlay", "caption-30%", _caption(0.30)),
    E("overlay", "logo-10%", _logo(0.10)),
    E("overlay", "logo-25%", _logo(0.25)),
    E("overlay", "watermark", _watermark),
    E("overlay", "stickers-3x6%", _stickers),
    E("pip", "scale-70%", _pip(0.70)),
    E("pip", "scale-55%", _pip(0.55)),
    E("pip", "scale-40%", _pip(0.40)),
    E("pip", "scale-30%", _pip(0.30), False),
    E("screen", "phone-recording", _screen),
    E("combo", "crop15+rot5+q50", _combo(_crop_edge(0.15), _rotate(5)), True, ("JPEG", 50)),
    E("combo", "caption15+flat10", _combo(_caption(0.15), _pad(0.10))),
    E("combo", "grey+crop15+logo10", _combo(lambda im, r, c: im.convert("L").convert("RGB"),
                                            _crop_edge(0.15), _logo(0.10))),
    E("combo", "flip+rot5+blurpillar", _combo(lambda im, r, c: ImageOps.mirror(im), _rotate(5),
                                              _blur_pillarbox)),
    E("combo", "pip55+q50", _pip(0.55), True, ("JPEG", 50)),
)


def apply(edit: Edit, im: Img, rng: np.random.Generator, ctx: Ctx) -> Img:
    return edit.fn(im.convert("RGB"), rng, ctx).convert("RGB")


def encode(im: Img, codec: tuple[str, int]) -> bytes:
    buf = io.BytesIO()
    fmt, q = codec
    im.save(buf, fmt, quality=q)
    return buf.getvalue()
