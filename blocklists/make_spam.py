"""Make the sample blocklist ``blocklists/spam/`` and the two demo uploads in ``examples/images/``.

Six fake "spam ad banners": a real photo from ``tests/data`` as the background (resized and
cropped to a banner size), big ad text, coloured boxes and hazard stripes. The photo is what
makes each hash informative and different from the others; the ad furniture is what makes them
look like spam. The demo uploads are ``spam-edited.jpg`` (one banner with 2% cropped off each side,
mirrored, shrunk to 60%, brightness and contrast nudged, re-encoded at JPEG quality 40: what an
evader does) and ``unrelated.jpg``
(a photo that is not on the list).

Run from anywhere, no arguments::

    python blocklists/make_spam.py

The output is deterministic: fixed layouts, a seeded RNG, Pillow's bundled default font (no
system fonts) and JPEGs saved without EXIF, so two runs give byte-identical files. The script
then hashes what it wrote, prints the distances and asserts the properties the demo relies on:
every banner is informative, the banners are far apart, the edited copy is near its original
and the unrelated photo is far from every banner.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

# So that a plain ``python blocklists/make_spam.py`` finds this checkout's guard, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guard import ImageHashes, hamming, hash_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SPAM = ROOT / "blocklists" / "spam"
EXAMPLES = ROOT / "examples" / "images"

SEED = 20240601
QUALITY = 90
MAX_BYTES = 80_000

# The properties the demo relies on (aHash / pHash bits out of 64).
MIN_SPAM_APART = 16  # banners must not match each other
MIN_UNRELATED_APART = 16  # the unrelated photo must not match any banner
MAX_EDITED_AHASH = 6  # the evader's copy must still match its original...
MAX_EDITED_PHASH = 10  # ...and be confirmed by the pHash (default confirm_radius 12, with margin)

EDITED_SOURCE = "win-cash.jpg"
# Not threatexchange-labelme-q0122.jpg, the one unused background: it shares thorn-image8's
# bright-top/dark-bottom layout and is only 11 aHash bits from hot-deals.jpg.
UNRELATED_SOURCE = "cat.jpg"

Colour = tuple[int, int, int]
Box = tuple[int, int, int, int]

YELLOW: Colour = (255, 221, 0)
RED: Colour = (220, 20, 30)
WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
GREEN: Colour = (20, 170, 60)
MAGENTA: Colour = (230, 0, 160)
CYAN: Colour = (0, 200, 230)
ORANGE: Colour = (255, 120, 0)


@dataclass(frozen=True)
class Text:
    """One line of ad copy, centred on ``centre``; ``size`` is the font size in pixels."""

    text: str
    centre: tuple[int, int]
    size: int
    fill: Colour
    stroke: Colour = BLACK


@dataclass(frozen=True)
class Panel:
    """A translucent coloured box (``alpha`` 0-255): covers part of the photo, not all of it."""

    box: Box
    fill: Colour
    alpha: int = 200
    radius: int = 0


@dataclass(frozen=True)
class Banner:
    """One spam image: its file name, background photo, size in pixels and ad furniture."""

    name: str
    background: str
    size: tuple[int, int]
    panels: tuple[Panel, ...]
    texts: tuple[Text, ...]
    stripes: tuple[Colour, Colour] | None = None  # hazard-stripe frame colours
    confetti: int = 0  # number of random coloured dots


# Each banner keeps most of its photo visible, and the layouts differ (text top, bottom, left,
# centre, frame or no frame), so the hashes stay about as far apart as the photos are.
BANNERS: tuple[Banner, ...] = (
    Banner(
        name="win-cash.jpg",
        background="thorn-image2.jpg",
        size=(640, 400),
        panels=(Panel((24, 24, 400, 150), RED, 210, 18),),
        texts=(
            Text("WIN $$$", (212, 68), 80, YELLOW),
            Text("every day!", (212, 128), 26, WHITE),
        ),
        stripes=(YELLOW, BLACK),
    ),
    Banner(
        name="free-iphone.jpg",
        background="thorn-image5.jpg",
        size=(640, 360),
        panels=(Panel((330, 190, 616, 336), WHITE, 215, 22),),
        texts=(
            Text("FREE", (473, 230), 56, RED, WHITE),
            Text("iPHONE", (473, 292), 64, BLACK, WHITE),
        ),
        confetti=40,
    ),
    Banner(
        name="click-now.jpg",
        background="thorn-image7.jpg",
        size=(600, 400),
        panels=(Panel((170, 290, 430, 366), GREEN, 235, 36),),
        texts=(
            Text("CLICK NOW", (300, 328), 46, WHITE),
            Text("limited offer", (300, 40), 34, YELLOW),
        ),
        stripes=(GREEN, WHITE),
    ),
    Banner(
        name="hot-deals.jpg",
        background="thorn-image8.jpg",
        size=(728, 280),
        panels=(Panel((410, 30, 704, 250), ORANGE, 200, 14),),
        texts=(
            Text("HOT DEALS", (557, 95), 48, WHITE, RED),
            Text("90% OFF", (557, 180), 70, YELLOW, RED),
        ),
    ),
    Banner(
        name="crypto-x100.jpg",
        background="threatexchange-labelme-q0746.jpg",
        size=(500, 500),
        panels=(Panel((30, 360, 470, 470), MAGENTA, 200, 20),),
        texts=(
            Text("CRYPTO x100", (250, 415), 60, WHITE),
            Text("BUY BUY BUY", (250, 46), 40, CYAN),
        ),
        stripes=(MAGENTA, CYAN),
    ),
    Banner(
        name="you-won.jpg",
        background="threatexchange-labelme-q0291.jpg",
        size=(480, 480),
        panels=(Panel((30, 30, 250, 150), YELLOW, 220, 60),),
        texts=(
            Text("YOU", (140, 66), 50, RED, WHITE),
            Text("WON!", (140, 116), 50, RED, WHITE),
            Text("claim your prize >>", (240, 446), 32, WHITE),
        ),
        confetti=60,
    ),
)


def background(name: str, size: tuple[int, int]) -> Image.Image:
    """The photo scaled and centre-cropped to fill the banner."""
    with Image.open(DATA / name) as image:
        return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


def hazard_frame(image: Image.Image, colours: tuple[Colour, Colour], width: int = 14) -> None:
    """A diagonal-striped frame. Stripes, not a solid bar: guard trims uniform borders."""
    w, h = image.size
    stripes = Image.new("RGB", image.size, colours[0])
    draw = ImageDraw.Draw(stripes)
    for x in range(-h, w + h, 2 * width):
        draw.polygon([(x, 0), (x + width, 0), (x + width + h, h), (x + h, h)], fill=colours[1])
    mask = Image.new("L", image.size, 255)
    ImageDraw.Draw(mask).rectangle((width, width, w - 1 - width, h - 1 - width), fill=0)
    image.paste(stripes, (0, 0), mask)


def sprinkle(image: Image.Image, count: int, rng: random.Random) -> None:
    """Confetti dots: ad noise from the seeded RNG, so it is the same on every run."""
    draw = ImageDraw.Draw(image)
    palette = (YELLOW, RED, MAGENTA, CYAN, GREEN, ORANGE, WHITE)
    w, h = image.size
    for _ in range(count):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(3, 8)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.choice(palette))


def render(banner: Banner, rng: random.Random) -> Image.Image:
    """Photo, then translucent panels, stripes, confetti and outlined text, in that order."""
    image = background(banner.background, banner.size).convert("RGBA")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for panel in banner.panels:
        draw.rounded_rectangle(panel.box, panel.radius, fill=(*panel.fill, panel.alpha))
    image = Image.alpha_composite(image, overlay).convert("RGB")
    if banner.stripes:
        hazard_frame(image, banner.stripes)
    if banner.confetti:
        sprinkle(image, banner.confetti, rng)
    draw = ImageDraw.Draw(image)
    for text in banner.texts:
        font = ImageFont.load_default(size=text.size)
        # Pillow's bundled font has no bold face: a thick outline makes it read as bold.
        draw.text(
            text.centre,
            text.text,
            fill=text.fill,
            font=font,
            anchor="mm",
            stroke_width=max(2, text.size // 14),
            stroke_fill=text.stroke,
        )
    return image


def save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    """Plain baseline JPEG, no EXIF or other metadata: byte-identical on every run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=quality, optimize=True)


def edit_like_an_evader(path: Path) -> Image.Image:
    """Crop 2% off each side, mirror, shrink to 60%, nudge tone; the caller saves at q40."""
    with Image.open(path) as original:
        image = original.convert("RGB")
    w, h = image.size
    image = image.crop((w * 2 // 100, h * 2 // 100, w - w * 2 // 100, h - h * 2 // 100))
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize((image.width * 3 // 5, image.height * 3 // 5), Image.Resampling.LANCZOS)
    image = ImageEnhance.Brightness(image).enhance(1.06)
    return ImageEnhance.Contrast(image).enhance(0.93)


def make() -> tuple[list[Path], Path, Path]:
    """Write every file; one RNG for the whole run, so each banner's confetti is fixed."""
    rng = random.Random(SEED)
    spam: list[Path] = []
    for banner in BANNERS:
        path = SPAM / banner.name
        save_jpeg(render(banner, rng), path, QUALITY)
        spam.append(path)
    edited = EXAMPLES / "spam-edited.jpg"
    save_jpeg(edit_like_an_evader(SPAM / EDITED_SOURCE), edited, 40)
    unrelated = EXAMPLES / "unrelated.jpg"
    with Image.open(DATA / UNRELATED_SOURCE) as photo:
        save_jpeg(photo.convert("RGB"), unrelated, 85)
    return spam, edited, unrelated


def check(spam: list[Path], edited: Path, unrelated: Path) -> None:
    """Print the distances and fail loudly if the demo's premises no longer hold."""
    hashes: dict[str, ImageHashes] = {path.name: hash_file(path) for path in spam}
    names = list(hashes)
    width = max(len(name) for name in names)
    for path in [*spam, edited, unrelated]:
        size = path.stat().st_size
        assert size < MAX_BYTES, f"{path.name} is {size} bytes, over {MAX_BYTES}"
    for name, h in hashes.items():
        assert not h.low_information, f"{name} hashes as low-information"

    print("aHash distances between the spam images (pHash in brackets):")
    print(" " * width + "".join(f"  {i + 1:>7}" for i in range(len(names))))
    for i, a in enumerate(names):
        cells = []
        for b in names:
            da = hamming(hashes[a].ahash, hashes[b].ahash)
            dp = hamming(hashes[a].phash, hashes[b].phash)
            cells.append(f"  {da:>2} ({dp:>2})" if a != b else "        -")
        print(f"{a:<{width}}" + "".join(cells) + f"   [{i + 1}]")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = hamming(hashes[a].ahash, hashes[b].ahash)
            assert d >= MIN_SPAM_APART, f"{a} vs {b}: aHash {d} < {MIN_SPAM_APART}"

    # The edit mirrors the banner: compare with the mirrored original, as guard's dihedral
    # lookup does.
    e = hash_file(edited)
    oa, op = hashes[EDITED_SOURCE].frames[0].variant("flip_left_right")
    da, dp = hamming(e.ahash, oa), hamming(e.phash, op)
    print(
        f"\n{edited.name} vs {EDITED_SOURCE} mirrored: aHash {da} (max {MAX_EDITED_AHASH}),"
        f" pHash {dp} (max {MAX_EDITED_PHASH}); unmirrored aHash "
        f"{hamming(e.ahash, hashes[EDITED_SOURCE].ahash)}"
    )
    assert da <= MAX_EDITED_AHASH, f"edited copy is aHash {da} from its original"
    assert dp <= MAX_EDITED_PHASH, f"edited copy is pHash {dp} from its original"

    u = hash_file(unrelated)
    print(
        f"\n{unrelated.name} vs each spam image (aHash / pHash, min aHash {MIN_UNRELATED_APART}):"
    )
    for name in names:
        du, dq = hamming(u.ahash, hashes[name].ahash), hamming(u.phash, hashes[name].phash)
        print(f"  {name:<{width}}  {du:>2} / {dq:>2}")
        assert du >= MIN_UNRELATED_APART, f"unrelated photo is aHash {du} from {name}"
    print("\nall checks passed")


def main() -> None:
    check(*make())


if __name__ == "__main__":
    main()
