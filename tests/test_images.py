"""Hard inputs: each behaves as intended (the named edge cases of GUARD_TEST_DATA's hard/ folder
where it is set; the copies in tests/data always)."""

from __future__ import annotations

import contextlib
import io
import random
import tracemalloc

import numpy as np
import pytest
from conftest import LOCAL_PHOTOS, data_file, encode, photo, shared_files
from PIL import Image, ImageFile, ImageOps

from guard import (
    FormatNotAllowed,
    ImageError,
    ImageLimits,
    NotAnImage,
    TooManyPixels,
    UndecodableImage,
    hamming,
    hash_bytes,
    hash_file,
    images,
    sniff_format,
)
from guard.config import HttpSettings
from guard.errors import TooManyFrames
from guard.images import MAX_TRIM, trim_box
from guard.verdict import refusal_for


def _read(name: str) -> bytes:
    return data_file(name).read_bytes()


# --- EXIF orientation --------------------------------------------------------------------------

# Stored image = inverse of the transpose the EXIF tag asks for, so the decoder's fix restores it.
_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(_STORED))
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = photo("photos/threatexchange-labelme-q0291.jpg")
    stored = upright.transpose(_STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = hash_bytes(encode(stored, "PNG", exif=exif.tobytes()))
    untagged = hash_bytes(encode(stored, "PNG"))
    expected = hash_bytes(encode(upright, "PNG"))
    assert (tagged.ahash, tagged.phash) == (expected.ahash, expected.phash)
    assert hamming(untagged.ahash, expected.ahash) > 4  # the tag is what made the difference


@pytest.mark.parametrize(
    "name",
    ["hard/exif-orientation-3.jpg", "hard/exif-orientation-6.jpg", "hard/exif-orientation-8.jpg"],
)
def test_shared_exif_files_hash_like_the_upright_photo(name: str) -> None:
    if not shared_files(name):
        pytest.skip("GUARD_TEST_DATA is not set (the optional photo and edge-case sets)")
    upright = hash_file(data_file("photos/kodak-kodim23.jpg"))
    assert hamming(hash_file(data_file(name)).ahash, upright.ahash) <= 2


# --- alpha -------------------------------------------------------------------------------------


def test_hidden_pixels_under_alpha_do_not_change_the_hash() -> None:
    black = hash_file(data_file("hard/logo-rgba.png"))
    white = hash_file(data_file("hard/logo-rgba-hidden-white.png"))
    noise = hash_file(data_file("hard/logo-rgba-hidden-noise.png"))
    assert (black.ahash, black.phash) == (white.ahash, white.phash) == (noise.ahash, noise.phash)
    assert not black.low_information


@pytest.mark.parametrize("name", ["hard/palette-trns.png", "hard/webp-lossless-alpha.webp"])
def test_other_alpha_encodings_of_the_logo_hash_alike(name: str) -> None:
    logo = hash_file(data_file("hard/logo-rgba.png"))
    other = hash_file(data_file(name))
    assert other.ahash == logo.ahash
    assert hamming(other.phash, logo.phash) <= 16  # within the confirmation radius


def test_alpha_is_composited_onto_black() -> None:
    """A white half on transparency hashes like a white half on opaque black (imagehash's and the
    Go hasher's convention)."""
    opaque = Image.new("RGB", (64, 64), "black")
    opaque.paste((255, 255, 255), (0, 0, 32, 64))
    transparent = Image.new("RGBA", (64, 64), (255, 255, 255, 0))  # hidden white
    transparent.paste((255, 255, 255, 255), (0, 0, 32, 64))
    assert (
        hash_bytes(encode(transparent)).ahash
        == hash_bytes(encode(opaque)).ahash
        == 0xF0F0F0F0F0F0F0F0
    )


def test_seed_stars_stay_close() -> None:
    """star.png vs star-new.png: the Go hasher guard grew from reports 4 bits, imagehash 2."""
    star, new = hash_file(data_file("seed/star.png")), hash_file(data_file("seed/star-new.png"))
    assert hamming(star.ahash, new.ahash) <= 4


# --- bit depth, colour modes -------------------------------------------------------------------


def test_sixteen_bit_grey_hashes_like_eight_bit() -> None:
    grey = np.asarray(photo().convert("L"))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I")
    eight = hash_bytes(encode(Image.fromarray(grey, "L")))
    deep = hash_bytes(encode(sixteen))
    assert (deep.ahash, deep.phash) == (eight.ahash, eight.phash)
    assert not deep.low_information  # convert("L") would have clipped it to flat white


@pytest.mark.parametrize(
    ("deep", "eight"),
    [("hard/gray16.png", "photos/plasma-Volna.jpg"), ("hard/rgb16.png", "photos/plasma-Volna.jpg")],
)
def test_shared_sixteen_bit_files_hash_like_the_photo(deep: str, eight: str) -> None:
    if not shared_files(deep):
        pytest.skip("GUARD_TEST_DATA is not set (the optional photo and edge-case sets)")
    assert hamming(hash_file(data_file(deep)).ahash, hash_file(data_file(eight)).ahash) <= 2


def test_cmyk_jpeg_hashes_like_rgb() -> None:
    image = photo("photos/thorn-image5.jpg")
    rgb = hash_bytes(encode(image, "JPEG", quality=95))
    cmyk = hash_bytes(encode(image.convert("CMYK"), "JPEG", quality=95))
    assert hamming(cmyk.ahash, rgb.ahash) <= 2


def test_shared_cmyk_file_hashes_like_the_photo() -> None:
    if not shared_files("hard/cmyk.jpg"):
        pytest.skip("GUARD_TEST_DATA is not set (the optional photo and edge-case sets)")
    photo_hash = hash_file(data_file("photos/skimage-coffee.jpg"))
    assert hamming(hash_file(data_file("hard/cmyk.jpg")).ahash, photo_hash.ahash) <= 2


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA"])
def test_other_modes_hash_close_to_rgb(mode: str) -> None:
    image = photo("photos/thorn-image8.jpg")
    rgb = hash_bytes(encode(image)).ahash
    assert hamming(hash_bytes(encode(image.convert(mode))).ahash, rgb) <= 2


def test_bilevel_hashes_like_the_same_pixels_in_grey() -> None:
    bilevel = photo("photos/thorn-image8.jpg").convert("L").convert("1")
    hashes = hash_bytes(encode(bilevel))
    assert hashes.ahash == hash_bytes(encode(bilevel.convert("L"))).ahash
    assert not hashes.low_information


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16"])
def test_each_mode_normalises_exactly_like_its_grey_pixels(mode: str) -> None:
    """Palette, alpha and 16-bit frames go to grey in one step: the same grey pixels, bit for bit,
    as the RGB (or scaled) image the step replaces, so the hashes and the 32x32 detail agree."""
    image = photo("photos/thorn-image8.jpg").resize((200, 150))
    if mode == "P":
        source = image.quantize(64)
        expected = source.convert("RGB").convert("L")
    elif mode == "RGBA":
        source = image.copy()
        source.putalpha(Image.linear_gradient("L").resize(image.size))
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        expected = Image.alpha_composite(black, source).convert("RGB").convert("L")
    else:
        deep = np.asarray(image.convert("L"), dtype=np.uint16) * 257 + 200  # low bytes differ
        source = Image.fromarray(deep)
        expected = Image.fromarray((deep >> 8).astype(np.uint8), "L")
    (got,) = images.normalise(encode(source))
    (want,) = images.normalise(encode(expected))
    assert np.array_equal(got.detail, want.detail)
    assert np.array_equal(got.cells, want.cells)
    assert got.content_size == want.content_size


def test_progressive_jpeg_hashes_like_baseline() -> None:
    image = photo("photos/threatexchange-labelme-q0746.jpg")
    baseline = hash_bytes(encode(image, "JPEG", quality=90))
    progressive = hash_bytes(encode(image, "JPEG", quality=90, progressive=True))
    assert hamming(baseline.ahash, progressive.ahash) <= 1


# --- animation ---------------------------------------------------------------------------------


def _gif(frames: list[Image.Image]) -> bytes:
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


def test_a_blank_first_frame_does_not_hide_the_animation() -> None:
    picture = photo().resize((160, 120))
    blank = Image.new("RGB", picture.size, "black")
    hashes = hash_bytes(_gif([blank, picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]))
    single = hash_bytes(_gif([picture]))
    assert hashes.frames[0].low_information
    assert hashes.ahash == single.ahash  # the primary frame is the first informative one
    assert not hashes.low_information
    assert len(hashes.frames) == 3


def test_every_frame_is_hashed_never_a_sample() -> None:
    picture = photo().resize((64, 48))
    frames = [picture.rotate(angle) for angle in range(0, 360, 12)]  # 30 distinct frames
    hashes = hash_bytes(_gif(frames), ImageLimits(max_frames=30))
    assert [f.frame for f in hashes.frames] == list(range(30))
    assert [f.ahash for f in hashes.frames] == [hash_bytes(_gif([f])).ahash for f in frames]


def test_a_picture_on_a_late_frame_is_found() -> None:
    """The listed picture on frame 37 of 40, shown for 5 s: the old sampling (8 frames spread
    over the animation: 0, 6, 11, 17, 22, 28, 33, 39) never looked at it."""
    picture = photo().resize((96, 72))
    others = [photo(LOCAL_PHOTOS[i % 3]).resize((96, 72)).rotate(i * 9) for i in range(40)]
    frames = [*others[:37], picture, *others[38:]]
    durations = [40] * 40
    durations[37] = 5000
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=durations)
    wanted = hash_bytes(_gif([picture])).ahash
    found = [f for f in hash_bytes(data).frames if f.ahash == wanted]
    assert [f.frame for f in found] == [37]


def test_one_frame_over_max_frames_is_refused_whole() -> None:
    frames = [photo().resize((32, 24)).rotate(angle) for angle in range(0, 50, 5)]  # 10 frames
    data = _gif(frames)
    assert len(hash_bytes(data, ImageLimits(max_frames=10)).frames) == 10
    with pytest.raises(TooManyFrames, match=r"has 10 frames, over the limit max_frames=9$") as info:
        hash_bytes(data, ImageLimits(max_frames=9))
    assert (info.value.limit, info.value.maximum) == ("max_frames", 9)
    assert refusal_for(info.value, HttpSettings()).status == 413


def test_one_pixel_over_the_animation_budget_is_refused_whole() -> None:
    picture = photo().resize((100, 100))
    blanks = [Image.new("RGB", picture.size, (level,) * 3) for level in (0, 3, 6, 9)]  # distinct
    data = _gif([*blanks, picture])  # 5 frames of 100x100: 50,000 pixels
    limits = ImageLimits(max_image_pixels=10_000, max_animation_pixels=49_999)
    with pytest.raises(
        TooManyFrames,
        match=r"5 frames of 100x100 \(50000 pixels\), over the limit max_animation_pixels=49999$",
    ) as info:
        hash_bytes(data, limits)
    assert refusal_for(info.value, HttpSettings()).status == 413
    exact = ImageLimits(max_image_pixels=10_000, max_animation_pixels=50_000)
    assert not hash_bytes(data, exact).low_information  # the picture on the last frame is seen


def test_pages_of_differing_sizes_count_against_both_caps() -> None:
    """TIFF pages each have their own size: a later page over max_image_pixels is refused before
    it is decoded, and pages adding up to over the budget are refused as they add up."""
    small = photo().resize((40, 30))
    large = photo().transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize((200, 150))
    tiff = encode(small, "TIFF", save_all=True, append_images=[small, large])
    tiffs = frozenset({"TIFF"})
    with pytest.raises(TooManyPixels, match="30000 pixels"):
        hash_bytes(tiff, ImageLimits(max_image_pixels=20_000, allowed_formats=tiffs))
    with pytest.raises(TooManyFrames, match="frames 0-2 have 32400 pixels") as info:
        hash_bytes(
            tiff,
            ImageLimits(
                max_image_pixels=30_000, max_animation_pixels=32_399, allowed_formats=tiffs
            ),
        )
    assert info.value.limit == "max_animation_pixels"
    limits = ImageLimits(
        max_image_pixels=30_000, max_animation_pixels=32_400, allowed_formats=tiffs
    )
    assert [f.frame for f in hash_bytes(tiff, limits).frames] == [0, 2]  # page 1 repeats page 0


def test_identical_frames_are_looked_up_once() -> None:
    """A still picture stored as 300 frames (a corner pixel flickers, so the writer keeps them
    all) gives one (aHash, pHash) frame to look up, with the first index; distinct frames keep
    their own."""
    picture = photo().resize((120, 90))
    frames = []
    for i in range(300):
        frame = picture.copy()
        frame.putpixel((0, 0), (255, 255, 255) if i % 2 else (0, 0, 0))
        frames.append(frame)
    data = _gif(frames)
    with Image.open(io.BytesIO(data)) as image:
        assert image.n_frames == 300
    hashes = hash_bytes(data, ImageLimits(max_frames=300))
    assert [f.frame for f in hashes.frames] == [0]
    flipped = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mixed = hash_bytes(_gif([picture, flipped, picture, flipped, picture]))
    assert [f.frame for f in mixed.frames] == [0, 1]


def _repeated(picture: Image.Image, count: int) -> bytes:
    """A GIF showing ``picture`` in ``count`` identical frames (Pillow's writer would merge
    them: the frame's blocks are repeated by hand, as some encoders write stills)."""
    single = encode(picture, "GIF", duration=100)
    start = single.index(b"\x21\xf9")  # the frame's graphic control extension
    assert single.endswith(b"\x3b")
    return single[:start] + single[start:-1] * count + b"\x3b"


def test_a_frame_repeating_the_one_before_is_not_shrunk_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    picture = photo().resize((120, 90))
    data = _repeated(picture, 300)
    with Image.open(io.BytesIO(data)) as image:
        assert image.n_frames == 300
    shrunk: list[int] = []
    original = images._shrink
    monkeypatch.setattr(
        images, "_shrink", lambda grey, trim=True: shrunk.append(1) or original(grey, trim)
    )
    hashes = hash_bytes(data, ImageLimits(max_frames=300))
    assert len(shrunk) == 1
    assert [f.frame for f in hashes.frames] == [0]
    assert hashes.ahash == hash_bytes(encode(picture, "GIF")).ahash


def test_the_default_budget_lets_ordinary_animations_through() -> None:
    """A typical GIF (480x270, 12.5 fps for 20 s: 250 frames) and a short 1080p loop hash under
    the default limits; bench/frames.py measures what they cost."""
    limits = ImageLimits()
    assert limits.max_frames >= 250
    assert limits.max_animation_pixels >= 250 * 480 * 270
    assert limits.max_animation_pixels >= 30 * 1920 * 1080


@pytest.mark.parametrize(
    "name", ["hard/animated-blank-first-frame.gif", "hard/animated.png", "hard/animated.webp"]
)
def test_shared_animations(name: str) -> None:
    if not shared_files(name):
        pytest.skip("GUARD_TEST_DATA is not set (the optional photo and edge-case sets)")
    hashes = hash_file(data_file(name))
    assert len(hashes.frames) > 1 and not hashes.low_information


# --- low information ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "hard/flat-black.png",
        "hard/flat-gray128.png",
        "hard/flat-red.png",
        "hard/flat-white.jpg",
        "hard/tiny-1x1.png",
        "hard/tiny-7x5.png",
    ],
)
def test_flat_and_tiny_images_are_low_information(name: str) -> None:
    assert hash_file(data_file(name)).low_information


def test_near_flat_noise_is_low_information() -> None:
    rng = np.random.default_rng(5)
    noise = (128 + rng.integers(-1, 2, (480, 640))).astype(np.uint8)
    assert hash_bytes(encode(Image.fromarray(noise, "L"))).low_information


@pytest.mark.parametrize(
    "name",
    [
        "hard/gradient-horizontal.png",
        "hard/gradient-vertical.png",
        "hard/checkerboard-8x8.png",
        *LOCAL_PHOTOS,
    ],
)
def test_structured_images_are_not_low_information(name: str) -> None:
    assert not hash_file(data_file(name)).low_information


def test_low_contrast_photo_is_still_informative() -> None:
    grey = np.asarray(photo().convert("L"), dtype=np.float64)
    dark = Image.fromarray((grey * 24 / 255).round().astype(np.uint8), "L")
    hashes = hash_bytes(encode(dark))
    assert not hashes.low_information
    assert hamming(hashes.ahash, hash_bytes(encode(photo())).ahash) <= 4


# --- borders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOCAL_PHOTOS)
@pytest.mark.parametrize("fill", ["black", "white", (40, 90, 160)])
def test_letterbox_and_padding_are_trimmed(name: str, fill: object) -> None:
    image = photo(name)
    width, height = image.size
    original = hash_bytes(encode(image)).ahash
    letterbox = Image.new("RGB", (width, height + height // 3), fill)  # type: ignore[arg-type]
    letterbox.paste(image, (0, height // 6))
    padded = ImageOps.expand(image, border=width // 8, fill=fill)  # type: ignore[arg-type]
    assert hamming(hash_bytes(encode(letterbox)).ahash, original) <= 3
    assert hamming(hash_bytes(encode(padded)).ahash, original) <= 3


def test_trim_box_finds_bars_and_is_capped() -> None:
    grey = np.full((100, 80), 0.0)
    grey[10:90, 5:75] = np.random.default_rng(1).random((80, 70)) * 255
    assert trim_box(grey) == (10, 10, 5, 5)
    dot = np.zeros((100, 100))
    dot[50, 50] = 255  # a single dot on black: trimmed at most MAX_TRIM per side
    assert all(side <= int(MAX_TRIM * 100) for side in trim_box(dot))


def test_near_flat_images_are_not_trimmed() -> None:
    rng = np.random.default_rng(2)
    assert trim_box(128 + rng.random((60, 90)) * 4) == (0, 0, 0, 0)


# --- limits and broken input -------------------------------------------------------------------


def test_decompression_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _read("hard/bomb-20000x20000.png")

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    tracemalloc.start()
    try:
        with pytest.raises(TooManyPixels, match="max_image_pixels=50000000") as caught:
            hash_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "400000000 pixels" in str(caught.value)
    assert peak < 5_000_000


def test_pixel_cap_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("1", (4000, 3000)))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(
        TooManyPixels, match=r"12000000 pixels \(4000x3000\).*max_image_pixels=10000000"
    ):
        hash_bytes(data, ImageLimits(max_image_pixels=10_000_000))


def test_truncated_jpeg_raises_a_clear_error() -> None:
    with pytest.raises(UndecodableImage, match="cannot decode JPEG image: image file is truncated"):
        hash_bytes(_read("hard/truncated.jpg"))


def test_text_named_jpg_is_not_an_image() -> None:
    with pytest.raises(NotAnImage, match="not an image"):
        hash_file(data_file("hard/not-an-image.jpg"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"GIF89a",
        b"\xff\xd8\xff" + b"\x00" * 100,
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 10,
    ],
)
def test_empty_and_stub_inputs_raise_image_errors(data: bytes) -> None:
    with pytest.raises(ImageError):
        hash_bytes(data)


@pytest.mark.parametrize(
    ("image_format", "name"), [("TIFF", "TIFF"), ("ICO", "ICO"), ("PDF", "PDF")]
)
def test_formats_outside_the_allowlist_are_refused(image_format: str, name: str) -> None:
    data = encode(photo().resize((64, 48)), image_format)
    assert sniff_format(data) == name
    with pytest.raises(FormatNotAllowed, match=f"image format {name} is not allowed"):
        hash_bytes(data)


def test_allowlist_is_configurable() -> None:
    png = encode(photo().resize((64, 48)))
    with pytest.raises(FormatNotAllowed, match="allowed: JPEG"):
        hash_bytes(png, ImageLimits(allowed_formats=frozenset({"JPEG"})))
    tiff = encode(photo().resize((64, 48)), "TIFF")
    assert (
        hash_bytes(tiff, ImageLimits(allowed_formats=frozenset({"TIFF"}))).ahash
        == hash_bytes(png).ahash
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_image_pixels", 0, "max_image_pixels"),
        ("max_frames", 0, "max_frames"),
        ("max_animation_pixels", 1, "max_animation_pixels"),
        ("allowed_formats", frozenset({"EPS"}), "allowed_formats"),
    ],
)
def test_limits_are_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageLimits(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_corrupted_bytes_never_raise_anything_but_image_errors(image_format: str) -> None:
    """Random byte flips and cuts: each either hashes or raises an ImageError, nothing else."""
    clean = encode(photo().resize((96, 72)), image_format)
    rng = random.Random(image_format)
    for _ in range(60):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(1, len(data))]
        with contextlib.suppress(ImageError):
            hash_bytes(bytes(data))
