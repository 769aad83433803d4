"""Every image, whatever it is called: bytes any Pillow plugin opens are an image to guard.

Each exotic format Pillow opens (written by Pillow's own writers where it has one, hand-made
otherwise) is sent three ways (a multipart file part, a multipart text field without filename or
type, a raw body declared text/plain and one with no type) through ``find_images`` and
``hash_bytes``: the outcome is always FormatNotAllowed (415) naming the format, never "allowed"
(binary image bytes in a text field are refused before that, 400: see uploads).
Ordinary text fields and random binary blobs are measured for how often they are taken for an
image (the false-image rate), and the rules for formats Pillow opens without a magic-number test
(TGA and friends) are pinned.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
from collections.abc import Callable

import pytest
from conftest import encode, photo
from PIL import Image, ImageFile

import guard.images
from guard.config import HttpSettings
from guard.errors import (
    FormatNotAllowed,
    GuardError,
    MalformedBody,
    NotAnImage,
    UndecodableImage,
)
from guard.hashing import hash_bytes
from guard.images import SNIFF_WINDOW, sniff_format
from guard.types import DEFAULT_LIMITS
from guard.uploads import find_images
from guard.verdict import refusal_for

BOUNDARY = "guard-every-format"
# IM is deprecated in Pillow 13: every IM file opened here says so.
pytestmark = pytest.mark.filterwarnings("ignore:IM image format:DeprecationWarning")


def _picture(mode: str = "RGB", size: tuple[int, int] = (24, 16)) -> Image.Image:
    return photo().resize(size).convert(mode)


def _plain_pnm(magic: str, mode: str) -> bytes:
    """ASCII (plain) PBM/PGM/PPM, which Pillow reads but does not write."""
    image = _picture(mode, (8, 6))
    width, height = image.size
    if mode == "1":
        values = [0 if v else 1 for v in image.convert("L").tobytes()]  # PBM: 1 is black
        header = f"{magic}\n{width} {height}\n"
    else:
        values = list(image.tobytes())  # interleaved samples, as the text format lists them
        header = f"{magic}\n# a comment\n{width} {height}\n255\n"
    return (header + " ".join(map(str, values)) + "\n").encode()


def _xbm_by_hand() -> bytes:
    rows = ["0x0f", "0xf0", "0x3c", "0xc3", "0xff", "0x00", "0x81", "0x7e"]
    return (
        "/* drawn by hand */\n#define guard_width 8\n#define guard_height 8\n"
        f"static unsigned char guard_bits[] = {{\n  {', '.join(rows)} }};\n"
    ).encode()


def _spider() -> bytes:
    return encode(_picture("F"), "SPIDER")


# name -> (format sniff_format must give, maker). Every one of them Pillow opens as an image.
FORMATS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "pbm-binary-P4": ("PPM", lambda: encode(_picture("1"), "PPM")),
    "pgm-binary-P5": ("PPM", lambda: encode(_picture("L"), "PPM")),
    "ppm-binary-P6": ("PPM", lambda: encode(_picture("RGB"), "PPM")),
    "pbm-ascii-P1": ("PPM", lambda: _plain_pnm("P1", "1")),
    "pgm-ascii-P2": ("PPM", lambda: _plain_pnm("P2", "L")),
    "ppm-ascii-P3": ("PPM", lambda: _plain_pnm("P3", "RGB")),
    "pcx": ("PCX", lambda: encode(_picture(), "PCX")),
    "sgi": ("SGI", lambda: encode(_picture(), "SGI")),
    "dds": ("DDS", lambda: encode(_picture("RGBA"), "DDS")),
    "im": ("IM", lambda: encode(_picture(), "IM")),
    "dib": ("DIB", lambda: encode(_picture(), "DIB")),
    "spider": ("SPIDER", _spider),
    "icns": ("ICNS", lambda: encode(_picture("RGBA", (32, 32)), "ICNS")),
    "xbm-pillow": ("XBM", lambda: encode(_picture("1"), "XBM")),
    "xbm-by-hand": ("XBM", _xbm_by_hand),
    "msp": ("MSP", lambda: encode(_picture("1"), "MSP")),
    "tga": ("TGA", lambda: encode(_picture(), "TGA")),
    "tga-rle": ("TGA", lambda: encode(_picture(), "TGA", compression="tga_rle")),
    "tga-grey": ("TGA", lambda: encode(_picture("L"), "TGA")),
    "blp": ("BLP", lambda: encode(_picture("P"), "BLP")),
    "qoi": ("QOI", lambda: encode(_picture(), "QOI")),
    "jpeg2000": ("JPEG2000", lambda: encode(_picture(), "JPEG2000")),
    "ico": ("ICO", lambda: encode(_picture(), "ICO")),
}


def _multipart(data: bytes, headers: str) -> bytes:
    return f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


# How an image can arrive: (id, body maker, content type).
WAYS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    (
        "file-part",
        lambda d: _multipart(
            d,
            'Content-Disposition: form-data; name="upload"; filename="cat.png"\r\n'
            "Content-Type: image/png",
        ),
        f"multipart/form-data; boundary={BOUNDARY}",
    ),
    (
        "text-field",
        lambda d: _multipart(d, 'Content-Disposition: form-data; name="comment"'),
        f"multipart/form-data; boundary={BOUNDARY}",
    ),
    ("raw-text-plain", lambda d: d, "text/plain"),
    ("raw-untyped", lambda d: d, ""),
]


def _outcome(body: bytes, content_type: str) -> GuardError | None:
    """What guard makes of a request body: the refusal, or None when it would reach the app."""
    try:
        for image in find_images(body, content_type, max_parts=10, max_images=10):
            hash_bytes(image)
    except GuardError as error:
        return error
    return None


def test_every_pillow_writer_is_covered() -> None:
    """The formats above include one written by each Pillow writer guard does not allow, save
    the ones refused by a hand signature elsewhere (PDF, EPS) or that need a codec here."""
    Image.init()
    covered = {name for name, _ in FORMATS.values()} | set(DEFAULT_LIMITS.allowed_formats)
    skipped = {"PDF", "EPS", "TIFF", "MPO", "PALM", "AVIF", "HDF5", "BUFR", "GRIB", "WMF", "PFM"}
    skipped |= {"JPEG2000"} - set(Image.SAVE)
    assert set(Image.SAVE) - covered - skipped == set()


@pytest.mark.parametrize(("way", "wrap", "content_type"), WAYS, ids=[w[0] for w in WAYS])
@pytest.mark.parametrize("case", list(FORMATS))
def test_every_format_is_refused_whatever_it_is_called(
    case: str, way: str, wrap: Callable[[bytes], bytes], content_type: str
) -> None:
    name, make = FORMATS[case]
    data = make()
    with Image.open(io.BytesIO(data)) as image:  # Pillow (any app using it) opens it
        assert image.size[0] > 0
    assert sniff_format(data) == name
    error = _outcome(wrap(data), content_type)
    if way == "text-field" and not _is_utf8(data):
        # Frameworks decode text fields to str, each its own way: binary image bytes there are
        # refused as such (400), before their format is looked at.
        assert type(error) is MalformedBody, f"{case} as {way}: {error!r}"
        assert str(error) == IMAGE_IN_TEXT_FIELD
        assert refusal_for(error, HttpSettings()).status == 400
        return
    assert type(error) is FormatNotAllowed, f"{case} as {way}: {error!r}"
    assert error.image_format == name
    assert f"image format {name} is not allowed" in str(error)
    assert refusal_for(error, HttpSettings()).status == 415


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


IMAGE_IN_TEXT_FIELD = "an image in a text field must be sent as a file (a part with a filename)"


def test_text_images_in_text_fields_are_the_text_formats() -> None:
    """Which of the formats above are valid UTF-8 (so reach the format check from a text field):
    the plain PNM forms and XBM, text formats by design."""
    text = {case for case, (_, make) in FORMATS.items() if _is_utf8(make())}
    assert text == {"pbm-ascii-P1", "pgm-ascii-P2", "ppm-ascii-P3", "xbm-pillow", "xbm-by-hand"}


@pytest.mark.parametrize("case", list(FORMATS))
def test_sniffing_never_decodes_pixels(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = FORMATS[case][1]()
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    assert sniff_format(data) == FORMATS[case][0]


# --- names guard knows, and the common formats ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "EPS"),
        (b"\xc5\xd0\xd3\xc6" + b"\x00" * 40, "EPS"),
        (b"8BPS\x00\x01" + b"\x00" * 40, "PSD"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00mif1avif", "AVIF"),
    ],
)
def test_names_guard_knows_but_never_opens_are_refused(data: bytes, name: str) -> None:
    assert sniff_format(data) == name
    error = _outcome(data, "")
    assert type(error) is FormatNotAllowed and error.image_format == name


def test_phone_jpegs_opened_as_mpo_are_jpeg() -> None:
    """A multi-picture JPEG (phone photos: a main picture and a preview or depth map) opens in
    Pillow as MPO; for the allowlist and the hash it is a JPEG."""
    main, preview = _picture("RGB", (96, 72)), _picture("RGB", (48, 36))
    data = encode(main, "MPO", save_all=True, append_images=[preview], quality=90)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "MPO"
    assert sniff_format(data) == "JPEG"
    assert find_images(data, "", max_parts=10, max_images=10) == [data]
    hashes = hash_bytes(data)
    assert hashes.frames[0].frame == 0
    single = hash_bytes(encode(main, "JPEG", quality=90))
    assert (hashes.ahash ^ single.ahash).bit_count() <= 2


@pytest.mark.parametrize(
    "text",
    [b"BMW 320d, 2011, 140000 km, one owner", b"BM" + b"\x00" * 40, b"BM ok\r\n" * 10],
)
def test_bm_text_is_no_bitmap_unless_its_header_says_so(text: bytes) -> None:
    assert sniff_format(text) is None
    assert _outcome(text, "text/plain") is None


# --- formats Pillow opens without a magic-number test ------------------------------------------

# Pillow's plugins with no accept() test: only their header parsers decide. A Pillow upgrade that
# adds one fails this test so that its rule gets written down (see the TGA test below).
NO_ACCEPT_TEST = {"IM", "IMT", "IPTC", "PCD", "SPIDER", "TGA"}


def test_the_formats_without_a_magic_test_are_the_known_ones() -> None:
    Image.init()
    assert {name for name in Image.ID if Image.OPEN[name][1] is None} == NO_ACCEPT_TEST


def test_tga_needs_a_control_byte_where_text_has_a_character() -> None:
    """Bytes Pillow opens as TGA are an image (415: TGA is never allowed). Pillow's TGA header
    needs byte 1 (colour-map type) to be 0 or 1, which UTF-8 text never has: NUL and SOH are not
    typed, pasted or sent by browsers in form fields. So no text is ever taken for a TGA."""
    tga = FORMATS["tga"][1]()
    assert tga[1] in (0, 1)
    rng = random.Random(11)
    printable = [chr(c) for c in range(0x20, 0x7F)] + list("\t\r\néüß€中文😀")
    for _ in range(3000):
        text = "".join(rng.choice(printable) for _ in range(rng.randint(18, 200))).encode()
        assert sniff_format(text) != "TGA"
    for byte in range(256):  # the same header with any other colour-map type: not a TGA
        if byte not in (0, 1):
            assert sniff_format(tga[:1] + bytes([byte]) + tga[2:]) != "TGA"


def test_text_header_formats_need_what_text_does_not_hold() -> None:
    """IM needs a key Pillow knows ("Name: ...", "Image size: ...") and a Ctrl-Z (0x1a) ending its
    header; IMT needs the line "pixel n8"; IPTC needs 0x1c first; PCD "PCD_" at byte 2048;
    SPIDER 27 plausible floats. Shown here with text that comes close."""
    near_misses = [
        b"Name: Bob\nComment: hello\n",
        b"Name: Bob\r\nImage size: 10,10\r\n",
        b"width 5\nheight 5\n",
        b"PCD_ is at the start, not at byte 2048" * 3,
        b"0123456789" * 20,
    ]
    for text in near_misses:
        assert sniff_format(text) is None, text
    assert sniff_format(b"Name: Bob\nImage size: 10,10\n\x1a" + b"\x00" * 100) == "IM"
    assert sniff_format(b"width 5\nheight 5\npixel n8\n") == "IMT"


def test_header_parsers_see_a_bounded_window_and_fail_closed_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IM and IMT read text line by line while lines look like their headers (0.5 us a byte:
    10 s for a 20 MB body). Parsers see the first SNIFF_WINDOW bytes; one that reads to the end
    of the window and fails might have succeeded on the rest, so its format is named: an IM with
    a header longer than the window (Pillow opens it) is refused, not passed."""
    comments = b"Comment: padding\r\n" * (SNIFF_WINDOW // 18 + 10)
    long_header = b"Image type: L image\r\nImage size (x*y): 8*8\r\n" + comments
    im = long_header + b"\x1a" + b"\x80" * 64
    with Image.open(io.BytesIO(im)) as image:
        assert (image.format, image.size) == ("IM", (8, 8))
    assert sniff_format(im) == "IM"
    windows: list[int] = []
    real_init = guard.images._Window.__init__

    def recording(self: guard.images._Window, window: bytes) -> None:
        windows.append(len(window))
        real_init(self, window)

    monkeypatch.setattr(guard.images._Window, "__init__", recording)
    # 20 MB of lines both parsers read (measured 0.4 s; without the window it took 10 s).
    assert sniff_format(b"a :b\n" * 4_000_000) == "IM"
    assert windows and max(windows) <= SNIFF_WINDOW
    assert sniff_format(b"lowercase lines of prose\n" * 100_000) == "IMT"  # 2.5 MB, no blank line
    assert sniff_format(b"prose with a blank line\n\n" * 100_000) is None
    assert sniff_format(b"Name: Bob\nComment: hello\n" * 1000) is None  # within the window


def test_a_decompression_bomb_header_is_an_image_not_a_crash() -> None:
    """GBR checks its declared size while parsing the header (DecompressionBombError): that is an
    image of that format, refused 415 here, never an exception out of the sniffer."""
    comment = b"bomb\x00"
    header = struct.pack(">IIIII", 28 + len(comment), 2, 30000, 30000, 1) + b"GIMP"
    data = header + struct.pack(">I", 0) + comment + b"\x00" * 64
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    assert sniff_format(data) == "GBR"
    error = _outcome(data, "")
    assert type(error) is FormatNotAllowed and error.image_format == "GBR"


def test_warnings_raised_as_errors_mean_an_image() -> None:
    """With warnings turned into errors (python -W error, pytest's filterwarnings), a plugin that
    warns after recognising its header (IM's deprecation) still names its format."""
    im = FORMATS["im"][1]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sniff_format(im) == "IM"
        assert sniff_format(b"just a comment\nwith two lines\n") is None


# --- ordinary text and random bytes: the false-image rate ----------------------------------


WORDS = (
    "the a photo of my cat dog beach sunset party lunch today with friends great nice look at "
    "this new old red blue image picture P1 P2 P3 P4 P5 P6 BM GIF JPEG PNG width height pixel "
    "name size comment"
)


def _ordinary_texts() -> list[bytes]:
    rng = random.Random(7)
    first = ["Ana", "Bob", "Chen", "Dmitri", "Eve", "Fatima", "Gus", "Hiro", "Ines", "José"]
    last = ["Smith", "Müller", "O'Brien", "Nguyen", "Kowalski", "García", "Li", "Okafor"]
    words = WORDS.split()
    texts: list[str] = []
    for i in range(120):
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 25))))
        texts.append(f"{rng.choice(first)} {rng.choice(last)}")
        texts.append(f"{rng.choice(first).lower()}.{i}@example.com")
    texts += [str(rng.randint(0, 10**9)) for _ in range(30)]
    texts += [f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/20{i:02d}" for i in range(30)]
    texts += [f"https://example.com/p/{i}?q=cat&page={i % 7}" for i in range(30)]
    texts += [
        "",
        "P3",
        "P3 4 5 6",
        "P1 2 3",
        "P6 4 4 255",
        "P2 10 20 30 is our part number",
        "P3 4 5 6 turned into a sentence",
        "P5: priority five",
        "P4 team meeting",
        "P1: urgent",
        "#define MAX 10",
        "/* XPM */ is a format",
        "SIMPLE  =                    T",
        "BMW 320d",
        "GIF89a was a good year",
        "width 5\nheight 5",
        "Name: Bob\nComment: hello",
        '{"title": "my cat", "tags": ["cat", "cute"]}',
        "<p>Hello <b>world</b></p>",
        "Line one\r\nLine two\r\nLine three",
        "csrf_token=abc123&next=/home",
        "0",
        "true",
        "null",
    ]
    return [t.encode() for t in texts]


# Text taken for an image. Pillow opens a PNM header (P1-P6, whitespace, width, height and, but
# for P1/P4, maxval, then one whitespace) whatever follows, lazily (its decoder would fail later):
# an app calling Image.open gets an "image", so guard refuses it, 415 naming PPM. A text starting
# with an allowed format's signature ("GIF89a") is named by that signature and refused 422 when
# it does not decode (a truncated copy of a listed image must not pass). Nothing else is taken.
TAKEN_FOR_IMAGES = {
    b"P3 4 5 6": "PPM",
    b"P1 2 3": "PPM",
    b"P6 4 4 255": "PPM",
    b"P2 10 20 30 is our part number": "PPM",
    b"P3 4 5 6 turned into a sentence": "PPM",
    b"GIF89a was a good year": "GIF",
}


def test_ordinary_text_fields_are_not_images() -> None:
    texts = _ordinary_texts()
    assert len(texts) >= 400
    taken = {text: sniff_format(text) for text in texts if sniff_format(text) is not None}
    assert taken == TAKEN_FOR_IMAGES
    for text, name in TAKEN_FOR_IMAGES.items():  # refused as the image Pillow takes it for
        error = _outcome(text, "text/plain")
        if name in DEFAULT_LIMITS.allowed_formats:
            assert type(error) is UndecodableImage
        else:
            assert type(error) is FormatNotAllowed and error.image_format == name


def test_random_binary_blobs_are_rarely_images() -> None:
    """Random bytes that are not an image: the measured false-image rate is 1e-5 (1 TGA in
    100,000 blobs of 1-4096 bytes); bound it well above that."""
    rng = random.Random(3)
    blobs = [rng.randbytes(rng.randint(1, 2048)) for _ in range(5000)]
    taken = [blob for blob in blobs if sniff_format(blob) is not None]
    assert len(taken) / len(blobs) < 0.001, [sniff_format(b) for b in taken]


def test_common_formats_are_named_without_walking_pillows_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upload path's formats are named from their signature (under 1 us measured); only
    other bytes walk Pillow's registry (~25 us for a short text field, bench/multipart.py)."""

    def walked(data: bytes) -> str | None:
        raise AssertionError("the registry was walked")

    monkeypatch.setattr(guard.images, "_pillow_format", walked)
    picture = _picture("RGB", (64, 48))
    for name in ("JPEG", "PNG", "GIF", "WEBP", "BMP"):
        assert sniff_format(encode(picture, name)) == name
    with pytest.raises(AssertionError, match="walked"):
        sniff_format(b"a perfectly ordinary comment about the picture")


def test_not_an_image_is_still_not_an_image() -> None:
    with pytest.raises(NotAnImage):
        hash_bytes(b"hello world")
