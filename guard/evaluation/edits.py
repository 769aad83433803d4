"""The evasive edits ``guard eval`` makes of every original: a fixed, deterministic set.

Each edit is the way people change an image to slip it past moderation (re-encoding, resizing,
tone, filters, overlays, crops, borders, flips, rotations, a screenshot, a combination). Its bytes
are seeded from the original's name and the edit's name, so a run is reproducible.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Editor = Callable[[Image.Image, random.Random], Image.Image]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _crop_share(image: Image.Image, rng: random.Random, share: float) -> Image.Image:
    """Cut ``share`` of the width and of the height, split at random between the two sides."""
    w, h = image.size
    cut_w, cut_h = round(w * share), round(h * share)
    left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
    return image.crop((left, top, w - (cut_w - left), h - (cut_h - top)))


def _caption(image: Image.Image, rng: random.Random) -> Image.Image:
    out = image.copy()
    w, h = out.size
    bar = max(12, h // 8)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, h - bar, w, h), fill=(0, 0, 0))
    draw.text(
        (w // 20, h - bar + bar // 6),
        rng.choice(["WHEN YOU SEE IT", "MONDAY MOOD", "SO TRUE"]),
        fill=(255, 255, 255),
        font=_font(bar * 2 // 3),
    )
    return out


def _watermark(image: Image.Image, rng: random.Random) -> Image.Image:
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = base.size
    draw.text(
        (w // 10, h // 2 - h // 12),
        "© stockphotos " + str(rng.randint(10, 99)),
        fill=(255, 255, 255, 110),
        font=_font(h // 8),
    )
    return Image.alpha_composite(base, layer).convert("RGB")


def _logo(image: Image.Image, rng: random.Random) -> Image.Image:
    out = image.copy()
    w, h = out.size
    side = max(8, min(w, h) // 6)
    x, y = rng.choice([(w - side - w // 40, h // 40), (w // 40, h - side - h // 40)])
    draw = ImageDraw.Draw(out)
    draw.rounded_rectangle((x, y, x + side, y + side), radius=side // 5, fill=(230, 40, 40))
    draw.text((x + side // 5, y + side // 4), "TV", fill=(255, 255, 255), font=_font(side // 2))
    return out


def _noise(image: Image.Image, rng: random.Random) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + np.random.default_rng(rng.getrandbits(32)).normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _gamma(image: Image.Image, rng: random.Random) -> Image.Image:
    table = [round(255 * (i / 255) ** 0.7) for i in range(256)]
    return image.point(table * 3)


def _letterbox(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    bar = h // 8
    out = Image.new("RGB", (w, h + 2 * bar), (0, 0, 0))
    out.paste(image, (0, bar))
    return out


def _screenshot(image: Image.Image, rng: random.Random) -> Image.Image:
    """The photo shown smaller inside a browser-like window: the 'screenshot of it' evasion."""
    w, h = image.size
    shown = image.resize((w * 7 // 10, h * 7 // 10), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (w, h), (236, 236, 236))
    ImageDraw.Draw(out).rectangle((0, 0, w, h // 12), fill=(50, 50, 60))
    out.paste(shown, ((w - shown.width) // 2, h // 12 + (h - h // 12 - shown.height) // 2))
    return out


def _combo(image: Image.Image, rng: random.Random) -> Image.Image:
    return _crop_share(ImageOps.mirror(image), rng, 0.05)


@dataclass(frozen=True)
class Edit:
    name: str
    group: str
    apply: Editor
    save_as: str = "JPEG"
    quality: int = 90


EDITS: tuple[Edit, ...] = (
    Edit("jpeg-q30", "re-encode", lambda im, r: im, quality=30),
    Edit("jpeg-q50", "re-encode", lambda im, r: im, quality=50),
    Edit("jpeg-q75", "re-encode", lambda im, r: im, quality=75),
    Edit(
        "resize-50%",
        "resize",
        lambda im, r: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    ),
    Edit(
        "resize-200%",
        "resize",
        lambda im, r: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    ),
    Edit("png", "format", lambda im, r: im, save_as="PNG"),
    Edit("webp", "format", lambda im, r: im, save_as="WEBP", quality=80),
    Edit("brightness+25%", "tone", lambda im, r: ImageEnhance.Brightness(im).enhance(1.25)),
    Edit("contrast+30%", "tone", lambda im, r: ImageEnhance.Contrast(im).enhance(1.3)),
    Edit("saturation+50%", "tone", lambda im, r: ImageEnhance.Color(im).enhance(1.5)),
    Edit("gamma-0.7", "tone", _gamma),
    Edit("greyscale", "tone", lambda im, r: ImageOps.grayscale(im).convert("RGB")),
    Edit("blur", "filter", lambda im, r: im.filter(ImageFilter.GaussianBlur(2))),
    Edit("noise", "filter", _noise),
    Edit("caption", "overlay", _caption),
    Edit("watermark", "overlay", _watermark),
    Edit("corner-logo", "overlay", _logo),
    Edit("crop-5%", "crop", lambda im, r: _crop_share(im, r, 0.05)),
    Edit("crop-10%", "crop", lambda im, r: _crop_share(im, r, 0.10)),
    Edit("crop-20%", "crop", lambda im, r: _crop_share(im, r, 0.20)),
    Edit("centre-crop-80%", "crop", lambda im, r: _crop_share(im, random.Random(0), 0.20)),
    Edit("letterbox", "border", _letterbox),
    Edit(
        "padding",
        "border",
        lambda im, r: ImageOps.expand(im, border=max(1, im.width // 12), fill="white"),
    ),
    Edit("flip-horizontal", "flip", lambda im, r: ImageOps.mirror(im)),
    Edit("flip-vertical", "flip", lambda im, r: ImageOps.flip(im)),
    Edit("rotate-90", "rotate-90", lambda im, r: im.transpose(Image.Transpose.ROTATE_90)),
    Edit("rotate-180", "rotate-90", lambda im, r: im.transpose(Image.Transpose.ROTATE_180)),
    Edit("rotate-270", "rotate-90", lambda im, r: im.transpose(Image.Transpose.ROTATE_270)),
    Edit(
        "rotate-5deg",
        "small-rotation",
        lambda im, r: im.rotate(5, resample=Image.Resampling.BICUBIC),
    ),
    Edit("screenshot", "screenshot", _screenshot),
    Edit("mirror+crop+q60", "combination", _combo, quality=60),
)


def edit_bytes(image: Image.Image, original_name: str, edit: Edit) -> bytes:
    """One edit of one original, encoded: deterministic for a given name (seeded from it)."""
    rng = random.Random(f"{original_name}/{edit.name}")
    edited = edit.apply(image, rng).convert("RGB")
    buffer = io.BytesIO()
    if edit.save_as == "PNG":
        edited.save(buffer, "PNG")
    else:
        edited.save(buffer, edit.save_as, quality=edit.quality)
    return buffer.getvalue()
