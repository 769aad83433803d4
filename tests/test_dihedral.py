"""Dihedral variants computed from one decode equal the hashes of actually transformed images."""

from __future__ import annotations

import pytest
from conftest import LOCAL_PHOTOS, data_file, encode, shared_files
from PIL import Image

from guard import hash_bytes
from guard.hashing import TRANSFORMS

#: Slow (every photo, every dihedral transform, hashed for real): not in the fast path.
pytestmark = pytest.mark.slow

PILLOW_OPS = {
    "identity": None,
    "flip_left_right": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip_top_bottom": Image.Transpose.FLIP_TOP_BOTTOM,
    "rotate_180": Image.Transpose.ROTATE_180,
    "transpose": Image.Transpose.TRANSPOSE,
    "rotate_90": Image.Transpose.ROTATE_90,
    "rotate_270": Image.Transpose.ROTATE_270,
    "transverse": Image.Transpose.TRANSVERSE,
}
# Every photo of GUARD_TEST_DATA where it is set (170 for the project), else tests/data's.
PHOTOS = [str(p.relative_to(p.parents[1])) for p in shared_files("photos/*.jpg")] or LOCAL_PHOTOS


def test_names_cover_the_group() -> None:
    assert set(PILLOW_OPS) == set(TRANSFORMS)


@pytest.mark.parametrize("name", PHOTOS)
def test_variants_equal_hashes_of_transformed_photos(name: str) -> None:
    with Image.open(data_file(name)) as opened:
        image = opened.convert("RGB")
    base = hash_bytes(encode(image, compress_level=0)).frames[0]  # lossless: only guard differs
    variants = base.variants()
    assert len(set(variants.values())) > 1
    for transform, operation in PILLOW_OPS.items():
        moved = image if operation is None else image.transpose(operation)
        actual = hash_bytes(encode(moved, compress_level=0)).frames[0]
        assert variants[transform] == (actual.ahash, actual.phash), transform  # type: ignore[index]
