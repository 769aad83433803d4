"""The evasive edits ``guard eval`` makes of every original: a fixed, deterministic set.

Each edit is a way people change an image to slip it past moderation: re-encoding, resizing, tone,
filters, overlays (a caption bar drawn over the picture, a watermark, a corner logo), a caption
band added outside it, crops (``crop-N%`` cuts N% of the width and of the height in all, split at
random between the two sides; ``crop-5%-each-border`` cuts 5% from every border), borders, flips,
90-degree and small rotations, screenshots (the photo on a plain page, or as a message in a
rendered chat app), and a combination. Its bytes are seeded from the original's name and the
edit's name, so a run is reproducible.
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


def _caption_over(image: Image.Image, rng: random.Random) -> Image.Image:
    """A black bar over the bottom eighth of the picture, with white text: the picture keeps its
    size and loses a band of itself."""
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


def _caption_band(image: Image.Image, rng: random.Random) -> Image.Image:
    """A white band a sixth of the height, with black text, added above or below the picture
    (the meme layout): the picture is whole, the file is taller."""
    w, h = image.size
    band = max(12, h // 6)
    out = Image.new("RGB", (w, h + band), (255, 255, 255))
    above = rng.random() < 0.5
    out.paste(image, (0, band if above else 0))
    ImageDraw.Draw(out).text(
        (w // 20, (0 if above else h) + band // 5),
        rng.choice(["when the meme hits", "nobody:", "me at 3am"]),
        fill=(0, 0, 0),
        font=_font(band // 2),
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


def _plain_page(image: Image.Image, rng: random.Random) -> Image.Image:
    """The photo at 70% on a plain grey page with a dark title strip: an easy 'screenshot'."""
    w, h = image.size
    shown = image.resize((w * 7 // 10, h * 7 // 10), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (w, h), (236, 236, 236))
    ImageDraw.Draw(out).rectangle((0, 0, w, h // 12), fill=(50, 50, 60))
    out.paste(shown, ((w - shown.width) // 2, h // 12 + (h - h // 12 - shown.height) // 2))
    return out


#: The phone screen the chat screenshot is drawn on (a 720 x 1280 capture).
SCREEN = (720, 1280)


def _chat_screenshot(image: Image.Image, rng: random.Random) -> Image.Image:
    """The photo as a message in a chat app, captured whole: status bar, header, text bubbles
    above and below, an input bar. The photo is a minority of the pixels (a rendering of the UI,
    not a capture of a real app)."""
    width, height = SCREEN
    page = Image.new("RGB", SCREEN, (242, 242, 247))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, width, 48), fill=(20, 20, 24))
    draw.text((24, 12), f"{rng.randint(7, 23)}:{rng.randint(10, 59)}", fill="white", font=_font(22))
    draw.rectangle((0, 48, width, 140), fill=(255, 255, 255))
    draw.ellipse((24, 64, 84, 124), fill=(90, 140, 220))
    draw.text((104, 78), rng.choice(["Alex", "group chat", "Sam"]), fill="black", font=_font(30))
    y = 164
    for text in ("did you see this", "lol look"):
        draw.rounded_rectangle((24, y, 24 + 14 * len(text) + 40, y + 56), 22, fill="white")
        draw.text((44, y + 14), text, fill="black", font=_font(24))
        y += 72
    shown_w = width * 72 // 100
    shown_h = min(height * 55 // 100, round(image.height * shown_w / image.width))
    shown_w = round(image.width * shown_h / image.height)
    shown = image.resize((max(1, shown_w), max(1, shown_h)), Image.Resampling.LANCZOS)
    x = width - shown.width - 24
    draw.rounded_rectangle(
        (x - 8, y - 8, x + shown.width + 8, y + shown.height + 8), 18, fill=(0, 122, 255)
    )
    page.paste(shown, (x, y))
    y += shown.height + 32
    draw.rounded_rectangle((24, y, 330, y + 56), 22, fill="white")
    draw.text((44, y + 14), "wow " * rng.randint(1, 3), fill="black", font=_font(24))
    draw.rectangle((0, height - 96, width, height), fill=(255, 255, 255))
    draw.rounded_rectangle((24, height - 76, width - 110, height - 20), 28, outline=(200, 200, 200))
    return page


def _rotate(degrees: float) -> Editor:
    """Rotated about the centre, same size, the corners it uncovers black."""
    return lambda im, r: im.rotate(degrees, resample=Image.Resampling.BICUBIC)


def _crop_each_border(share: float) -> Editor:
    """``share`` of the width cut from the left and from the right, of the height from the top
    and from the bottom."""

    def crop(image: Image.Image, rng: random.Random) -> Image.Image:
        w, h = image.size
        dx, dy = round(w * share), round(h * share)
        return image.crop((dx, dy, w - dx, h - dy))

    return crop


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
    Edit("caption-over-image", "overlay", _caption_over),
    Edit("caption-band", "caption", _caption_band),
    Edit("watermark", "overlay", _watermark),
    Edit("corner-logo", "overlay", _logo),
    Edit("crop-5%", "crop", lambda im, r: _crop_share(im, r, 0.05)),
    Edit("crop-10%", "crop", lambda im, r: _crop_share(im, r, 0.10)),
    Edit("crop-20%", "crop", lambda im, r: _crop_share(im, r, 0.20)),
    Edit("crop-5%-each-border", "crop", _crop_each_border(0.05)),
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
    Edit("rotate-2deg", "small-rotation", _rotate(2)),
    Edit("rotate-5deg", "small-rotation", _rotate(5)),
    Edit("rotate-10deg", "small-rotation", _rotate(10)),
    Edit("photo-on-plain-page", "screenshot", _plain_page),
    Edit("chat-screenshot", "screenshot", _chat_screenshot),
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
