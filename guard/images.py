"""Bytes in, small normalised grey images out, under limits.

This is the only module that touches Pillow. It decides what an image *looks like* before any hash
is taken (guard-ahash v1): the format is sniffed from the bytes (an image is whatever Pillow can
open), the pixel count is checked against a cap before any pixel is decoded, EXIF orientation is
applied, alpha is composited onto black, 16-bit samples are scaled, uniform borders are trimmed and
animated images give every frame, within a budget. Every Pillow failure becomes a
:mod:`guard.errors` exception with a clear message.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ExifTags, Image

from guard.errors import (
    FormatNotAllowed,
    NotAnImage,
    TooManyFrames,
    TooManyPixels,
    UndecodableImage,
)
from guard.types import (
    DEFAULT_LIMITS,
    ImageLimits,
)

# Short side, in pixels, of the working image that trimming and the final resizes start from.
# JPEGs are decoded at 1/2..1/8 scale in the DCT domain down to about this size (``draft``);
# other formats are box-averaged down to it when they are over twice as large.
WORKING_SIZE = 128
# Short sides above this many pixels are first reduced by an integer factor in 8 bits.
PRESHRINK_ABOVE = 1024
# A side still longer than this after that (a strip: 8 x 6,000,000 px is within the pixel cap) is
# reduced alone, or the float copy and its resampling would grow with the strip's length
# (measured: 4.9 s and 0.5 GB for that strip; found by tools/fuzz.py).
LONG_SIDE_LIMIT = 4096
AHASH_SIZE = 8
PHASH_SIZE = 32

# Border trimming: a line (row or column) at the edge is border when at least TRIM_FRACTION of its
# pixels lie within TRIM_TOLERANCE grey levels of the outermost line's median. The tolerance
# absorbs JPEG noise; never more than MAX_TRIM of a side is removed.
TRIM_TOLERANCE = 6
TRIM_FRACTION = 0.98
MAX_TRIM = 0.45

# Alpha is composited onto black: what the Go hasher guard grew from (premultiplied alpha) and
# imagehash (on the usual zeroed hidden pixels) see, so imported lists agree; on
# tests/data/star.png, white cost 10 bits.
_BACKGROUND = (0, 0, 0, 255)
# EXIF Orientation value -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# The 16-bit modes stored in a known byte order -> the raw mode that reads their high bytes.
_SIXTEEN_BIT_RAWMODES = {"I;16": "L;16", "I;16L": "L;16", "I;16B": "L;16B"}
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


@dataclass(frozen=True)
class SmallImage:
    """One frame, normalised: what the hashes are computed from."""

    cells: np.ndarray  # AHASH_SIZE x AHASH_SIZE float32 grey levels
    detail: np.ndarray  # PHASH_SIZE x PHASH_SIZE float32 grey levels
    content_size: tuple[int, int]  # (width, height) after trimming, at decoded resolution
    frame: int = 0  # index of the frame in the file


# Sizes of the BMP info headers Pillow decodes. "BM" alone is too weak a signature: a text field
# or body starting "BMW ..." would be taken for a broken bitmap and refused as undecodable.
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

# Leading bytes guard names a format by without running any Pillow plugin: the common formats (a
# photo upload costs a few byte comparisons) and formats guard knows but never opens (Pillow
# cannot open PDF or HEIF at all; EPS, PSD and the others are refused before their plugins parse
# anything). Bytes matching none of these are asked of Pillow's own registry (sniff_format).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"qoif", "QOI"),
)
# Bytes of the prefix Image.open hands to each plugin's accept() test.
_PREFIX_BYTES = 16
# Bytes of an input that Pillow's header parsers are shown while sniffing. Two of them (IM, IMT)
# read text line by line as long as lines look like their headers: on 20 MB of such lines they
# took 10 s (0.5 us a byte); the window bounds that to about 0.5 s. A parser that reads to the end
# of the window and fails names its format (fail closed): a text field takes that only when its
# whole first MiB is such lines ("Key: value" or "word token", no blank line).
SNIFF_WINDOW = 1 << 20


def sniff_format(data: bytes) -> str | None:
    """Name the image format of ``data``, or None when no Pillow plugin would open it.

    An image is whatever Pillow can open, whatever it is called: after the signatures above,
    every format in Pillow's registry is tried in Image.open's order, each plugin's accept()
    test on the leading bytes, then its header parser (a lazy open: no pixel is decoded). The
    name is the registry's, so ``Image.open(..., formats=[name])`` opens it again; multi-picture
    JPEGs (phone photos, which Pillow reports as MPO) are "JPEG". A plugin that warns or raises
    DecompressionBombError while parsing a header has recognised its format: that is an image
    (the pixel cap refuses it later), never a crash. Formats without an accept() test (TGA, IM,
    IMT, IPTC, PCD, SPIDER) are identified by their parsers alone; none takes ordinary text (TGA
    needs byte 1 to be 0 or 1, IM a Ctrl-Z after known keys, IMT a "pixel n8" line, IPTC 0x1c
    first, PCD "PCD_" at byte 2048). Text starting with a PNM header ("P3 4 5 6") is a PPM.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "HEIF"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return _pillow_format(data)


def _pillow_format(data: bytes) -> str | None:
    """The first format in Pillow's registry whose plugin accepts and parses ``data``'s header.

    As Image.open does, minus its quirks: a plugin that fails with an unexpected exception type
    (Image.open would stop there) is just not the format, and later plugins are still tried, so
    any order an app might pass in ``formats=`` is covered. Parsers see the first SNIFF_WINDOW
    bytes only: a parser that fails having read to the end of a shorter window than the data
    might have succeeded on more of it, so that format is named (fail closed).
    """
    Image.init()  # returns at once once done; plugins registered later (pillow-heif) are seen
    prefix = data[:_PREFIX_BYTES]
    window = data[:SNIFF_WINDOW] if len(data) > SNIFF_WINDOW else None
    for name in list(Image.ID):
        factory, accept = Image.OPEN[name]
        try:
            if accept is not None and not accept(prefix):
                continue
        except Exception:  # noqa: BLE001, S112 - a test that fails is a test not passed
            continue
        stream = io.BytesIO(data) if window is None else _Window(window)
        try:
            image = factory(stream, "")
        except (Warning, Image.DecompressionBombError):
            # Raised only once a header is recognised (a DeprecationWarning for IM, a bomb
            # check on the declared size): an image of this format.
            return name
        except Exception:  # noqa: BLE001 - any failure means "not this format"...
            if isinstance(stream, _Window) and stream.ran_out:  # ...unless it wanted more
                return name
            continue
        image.close()
        return name
    return None


class _Window(io.BytesIO):
    """The leading bytes of a longer input, noting whether a reader got to their end: there
    the reader's verdict on the whole input is unknown."""

    def __init__(self, window: bytes) -> None:
        super().__init__(window)
        self._end = len(window)
        self.ran_out = False

    def _note(self) -> None:
        if self.tell() >= self._end:
            self.ran_out = True

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self._note()
        return chunk

    def read1(self, size: int | None = -1, /) -> bytes:
        chunk = super().read1(size)
        self._note()
        return chunk

    def readline(self, size: int | None = -1, /) -> bytes:
        line = super().readline(size)
        self._note()
        return line

    def readinto(self, buffer: Any, /) -> int:
        count = super().readinto(buffer)
        self._note()
        return count


def normalise(
    data: bytes, limits: ImageLimits = DEFAULT_LIMITS, *, draft: bool = True, trim: bool = True
) -> list[SmallImage]:
    """Decode ``data`` and return one :class:`SmallImage` per frame (at least one), in order; a
    frame whose grey pixels repeat the frame before it is left out (it would hash the same).

    ``draft=False`` decodes JPEGs at full size and ``trim=False`` keeps uniform borders: both exist
    to measure what those steps do (bench/, ``guard eval``); stored lists always use the defaults.
    """
    image = _open(data, limits)
    try:
        orientation = _orientation(image)
        frames = []
        previous: bytes | None = None
        for index, frame in _frames(image, limits):
            if draft and image.format == "JPEG":
                frame.draft("L", (WORKING_SIZE, WORKING_SIZE))
            grey = _grey(_load(frame))
            transpose = _ORIENTATION.get(orientation)
            if transpose is not None:
                # On the grey pixels: a quarter of the bytes of RGB, and the same result.
                grey = grey.transpose(transpose)
            if getattr(image, "n_frames", 1) > 1:
                # The hashes depend on the grey pixels alone: a frame that repeats the one before
                # (a still picture stored as many frames) is skipped before the costly shrink.
                pixels = grey.tobytes()
                if pixels == previous:
                    continue
                previous = pixels
            frames.append(dataclasses.replace(_shrink(grey, trim), frame=index))
        return frames
    finally:
        image.close()


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    image_format = sniff_format(data)
    if image_format is None:
        raise NotAnImage("not an image: the bytes match no known image format")
    if image_format not in limits.allowed_formats:
        raise FormatNotAllowed(image_format, limits.allowed_formats)
    try:
        image = Image.open(io.BytesIO(data), formats=[image_format])
    except Image.DecompressionBombError as error:
        # Pillow's own guard (kept on purpose) fired while reading the header.
        raise TooManyPixels(_pixels_from_message(error), limits.max_image_pixels) from error
    except Exception as error:  # Pillow raises many types for malformed headers
        raise UndecodableImage(f"cannot decode {image_format} image: {_reason(error)}") from error
    width, height = image.size
    if width * height > limits.max_image_pixels:
        image.close()
        raise TooManyPixels(width * height, limits.max_image_pixels, (width, height))
    if width < 1 or height < 1:
        image.close()
        raise UndecodableImage(f"cannot decode {image_format} image: it has no pixels")
    return image


def _pixels_from_message(error: Exception) -> int:
    # The bomb error has no attributes; the count is only in its text: "Image size (N pixels) ...".
    numbers = "".join(ch if ch.isdigit() else " " for ch in str(error)).split()
    return int(numbers[0]) if numbers else 0


def _reason(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not fail a decodable image
        return 1
    return value if isinstance(value, int) else 1


def _frames(image: Image.Image, limits: ImageLimits) -> Iterator[tuple[int, Image.Image]]:
    """Seek to every frame in turn; refuse the animation before decoding any frame when it is
    over the frame or pixel budget, and as soon as frames of differing sizes (TIFF pages, MPO
    pictures) add up to more than the pixel budget.

    Every frame, never a sample: a listed picture shown for one frame of many is still found.
    """
    try:
        # Counting frames parses every frame header (TIFF IFDs, GIF blocks): a broken later frame
        # raises here, with any type (TypeError "Missing dimensions" from a TIFF; tools/fuzz.py).
        count = max(1, int(getattr(image, "n_frames", 1)))
    except Exception as error:
        raise UndecodableImage(f"cannot count frames: {_reason(error)}") from error
    width, height = image.size
    if count > limits.max_frames:
        raise TooManyFrames(
            f"animation has {count} frames", limit="max_frames", maximum=limits.max_frames
        )
    budget = limits.max_animation_pixels
    if count * width * height > budget:
        raise TooManyFrames(
            f"animation has {count} frames of {width}x{height} ({count * width * height} pixels)",
            limit="max_animation_pixels",
            maximum=budget,
        )
    spent = 0
    for index in range(count):
        if index:
            try:
                image.seek(index)
            except Exception as error:
                raise UndecodableImage(f"cannot decode frame {index}: {_reason(error)}") from error
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise TooManyPixels(width * height, limits.max_image_pixels, (width, height))
        spent += width * height
        if spent > budget:
            raise TooManyFrames(
                f"animation frames 0-{index} have {spent} pixels",
                limit="max_animation_pixels",
                maximum=budget,
            )
        yield index, image


def _load(frame: Image.Image) -> Image.Image:
    try:
        frame.load()
    except Exception as error:  # OSError for truncated data, SyntaxError, ValueError, ...
        raise UndecodableImage(f"cannot decode {frame.format} image: {_reason(error)}") from error
    return frame


def _grey(frame: Image.Image) -> Image.Image:
    """The frame as opaque grey ("L"): 16-bit scaled, palette looked up, alpha over black.

    Each mode goes to grey in one pass where Pillow's single conversion gives the same pixels as
    the two it replaces: a palette's grey is the RGB-to-grey formula on its entries, so "P" to
    "L" equals "P" to "RGB" to "L", and "RGBA" to "L" ignores the (opaque) alpha.
    """
    mode = frame.mode
    if mode == "L":
        return frame
    if mode in ("RGB", "1"):
        return frame.convert("L")
    if mode in _SIXTEEN_BIT_RAWMODES:
        # convert("L") clips 16-bit samples at 255 instead of scaling them. Each sample's high
        # byte is sample >> 8: Pillow's unpacker takes it straight from the raw bytes (an int64
        # numpy copy cost 9 ms at 1080p).
        raw = _SIXTEEN_BIT_RAWMODES[mode]
        return Image.frombytes("L", frame.size, frame.tobytes(), "raw", raw)
    if mode in _SIXTEEN_BIT_MODES:
        samples = np.clip(np.asarray(frame), 0, 65535) >> 8  # "I": 32-bit samples, scaled
        return Image.fromarray(samples.astype(np.uint8), "L")
    if mode == "P":
        if "transparency" not in frame.info:
            return frame.convert("L")
        frame = frame.convert("RGBA")
    elif mode in _ALPHA_MODES:
        frame = frame.convert("RGBA")
    else:
        try:
            # CMYK (Adobe inversion handled by Pillow), YCbCr, LAB, HSV
            return frame.convert("RGB").convert("L")
        except Exception as error:
            raise UndecodableImage(f"cannot convert pixel mode {mode}: {_reason(error)}") from error
    background = Image.new("RGBA", frame.size, _BACKGROUND)
    return Image.alpha_composite(background, frame).convert("L")


def _shrink(grey: Image.Image, trim: bool = True) -> SmallImage:
    """A frame's grey ("L") pixels: trim borders, shrink to the working size, then resample to
    the two hash grids.

    Borders are found at decoded resolution, where a bar's edge is still sharp. Resampling runs in
    floating point ("F"): Pillow's 8-bit resize rounds between its horizontal and vertical passes,
    so its result depends on orientation and the dihedral variants would no longer be exact. Only
    images with a short side over PRESHRINK_ABOVE, or a side over LONG_SIDE_LIMIT after that, are
    first reduced in 8 bits (an integer box average), which bounds the float copy's memory; for
    those, a flipped copy may hash a bit away from the permuted hash.
    """
    factor = min(grey.size) // PRESHRINK_ABOVE
    if factor >= 2:
        grey = grey.reduce(factor)
    if max(grey.size) > LONG_SIDE_LIMIT:
        width, height = grey.size
        grey = grey.reduce((max(1, width // LONG_SIDE_LIMIT), max(1, height // LONG_SIDE_LIMIT)))
    top, bottom, left, right = trim_box(np.asarray(grey)) if trim else (0, 0, 0, 0)
    if top or bottom or left or right:
        width, height = grey.size
        grey = grey.crop((left, top, width - right, height - bottom))
    # Pillow's own "L" to "F" (exact: every grey level is a float) is one pass; a numpy float32
    # copy handed to Image.fromarray took three (astype, a zero fill, the copy in).
    work = grey.convert("F")
    width, height = work.size
    short = min(width, height)
    if short > 2 * WORKING_SIZE:
        scale = WORKING_SIZE / short
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        work = work.resize(size, Image.Resampling.BILINEAR)
    cells = work.resize((AHASH_SIZE, AHASH_SIZE), Image.Resampling.LANCZOS)
    detail = work.resize((PHASH_SIZE, PHASH_SIZE), Image.Resampling.LANCZOS)
    return SmallImage(
        cells=np.asarray(cells), detail=np.asarray(detail), content_size=(width, height)
    )


def trim_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/columns of uniform border to cut from (top, bottom, left, right) of a grey image.

    Each side is judged on its own (letterbox bars, padding of any colour), the same way for all
    four sides so that the result commutes with flips and rotations. Trimming repeats until nothing
    more comes off, so a bar added around a photo that has a uniform edge of its own ends where the
    photo alone would have been trimmed. A near-flat image is not trimmed at all, and no side loses
    more than MAX_TRIM of the image's length.
    """
    if float(grey.max()) - float(grey.min()) <= 2 * TRIM_TOLERANCE:
        return (0, 0, 0, 0)
    height, width = grey.shape
    caps = (int(MAX_TRIM * height),) * 2 + (int(MAX_TRIM * width),) * 2
    cut = [0, 0, 0, 0]
    # Median of the last line cut on each side. A further band is cut only where the colour
    # *steps* (bar, then the photo's own edge); a smooth gradient such as a sky, whose next line is
    # just past the tolerance, stops the trimming.
    last: list[float | None] = [None] * 4
    while True:
        content = grey[cut[0] : height - cut[1], cut[2] : width - cut[3]]
        sides = (content, content[::-1], content.T, content.T[::-1])
        more = [0, 0, 0, 0]
        for i, lines in enumerate(sides):
            room = caps[i] - cut[i]
            previous = last[i]
            if room < 1 or (
                previous is not None and abs(_median(lines[0]) - previous) <= TRIM_TOLERANCE
            ):
                continue
            more[i] = _border_depth(lines, room)
            if more[i]:
                last[i] = _median(lines[more[i] - 1])
        if not any(more):
            return (cut[0], cut[1], cut[2], cut[3])
        cut = [done + extra for done, extra in zip(cut, more, strict=True)]


def _median(line: np.ndarray) -> float:
    """np.median's value; for integer pixels from one partition (np.median's own checks and
    mean of the middle pair were most of trimming's time on a photo)."""
    if line.dtype.kind not in "ui":
        return float(np.median(line))
    half = line.shape[0] // 2
    if line.shape[0] % 2:
        return float(np.partition(line, half)[half])
    middle = np.partition(line, (half - 1, half))
    return (float(middle[half - 1]) + float(middle[half])) / 2


def _border_depth(lines: np.ndarray, cap: int) -> int:
    """How many leading lines (rows of ``lines``) are uniform and close to the outermost one.

    Scans in growing chunks, so a photo without a border costs one chunk, not a pass over the image.
    """
    reference = _median(lines[0])
    depth, chunk = 0, 8
    while depth < cap:
        head = lines[depth : min(cap, depth + chunk)].astype(np.float32)
        uniform = (np.abs(head - reference) <= TRIM_TOLERANCE).mean(axis=1) >= TRIM_FRACTION
        if not uniform.all():
            return depth + int(np.argmin(uniform))
        depth += len(head)
        chunk *= 2
    return cap
