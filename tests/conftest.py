"""Shared test helpers: where the images are, and small image factories."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

DATA = Path(__file__).parent / "data"
# The project's wider image sets, present on developer machines only (never on a user's clone).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_file(name: str) -> Path:
    """A test image: the copy in tests/data, else the shared set (skip when neither exists)."""
    local = DATA / Path(name).name
    if local.exists():
        return local
    shared = SHARED / name
    if shared.exists():
        return shared
    pytest.skip(f"{name} is not in tests/data and ../shared/data is not here")


def shared_files(pattern: str) -> list[Path]:
    return sorted(SHARED.glob(pattern)) if SHARED.exists() else []


def encode(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


# The small real photos copied into tests/data: the always-available real-image sample.
LOCAL_PHOTOS = [
    "photos/thorn-image2.jpg",
    "photos/thorn-image5.jpg",
    "photos/thorn-image7.jpg",
    "photos/thorn-image8.jpg",
    "photos/threatexchange-labelme-q0746.jpg",
    "photos/threatexchange-labelme-q0291.jpg",
    "photos/threatexchange-labelme-q0122.jpg",
]


def photo(name: str = "photos/thorn-image7.jpg") -> Image.Image:
    with Image.open(data_file(name)) as image:
        return image.convert("RGB")
