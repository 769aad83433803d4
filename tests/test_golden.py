"""Golden vectors: the exact guard-ahash v1 hashes of real files.

Any change to decoding, normalisation or bit order changes stored lists' meaning; these fail loudly
when that happens. Files copied into tests/data always run; the rest where GUARD_TEST_DATA is set.
If a change here is intended, it is a new hash version (guard.hashing.HASH_VERSION), not an edit.
"""

from __future__ import annotations

import pytest
from conftest import data_file

from guard import hash_file, to_hex

GOLDEN = [
    ("seed/star-new.png", "00183cf7763c3c24", "c679394e64b31b46"),
    ("seed/star.png", "00183cff7e3c3c24", "9339791ea5a66e06"),
    ("seed/analog-cats/cat-dark.jpg", "0070317ff7e7cec6", "f00f393231394f3e"),
    ("seed/analog-cats/cat-distorted.jpg", "0030b7fff7e7cfce", "f00f393231794e3e"),
    ("seed/analog-cats/cat-greyscale.jpg", "0033b7efe7e7cfce", "b20e393331394f3e"),
    ("seed/analog-cats/cat-inverted.jpg", "0070317ff7e7cece", "f00f393231394f3e"),
    ("seed/analog-cats/cat-on-couch.jpg", "5070f0ccce884fff", "d14e8039b65b6fa4"),
    ("seed/analog-cats/cat-saturated.jpg", "0870307870f4ccc0", "e00f3970317b4e3e"),
    ("seed/analog-cats/cat-shrink.jpg", "0070317ff7e7cec6", "f00f3932313b4e3e"),
    ("seed/analog-cats/cat-skewed.jpg", "03b07068e5e58dc5", "fa07bb33a031e724"),
    ("seed/analog-cats/cat-upscaled.jpg", "0070317ff7e7cece", "f00f393231394f3e"),
    ("seed/analog-cats/cat.jpg", "0070317ff7e7cece", "f00f393231394f3e"),
    ("seed/analog-cats/copy-of-kitten.jpg", "1f0303030303f7f3", "a519f619eba21966"),
    ("seed/analog-cats/kitten-looking-up.jpg", "30040edfdf4f1e3e", "9a0707e3e6cd03ce"),
    ("seed/analog-cats/kitten-resized.jpg", "1f0303030303f7f3", "a519f619eba21966"),
    ("seed/analog-cats/kitten.jpg", "1f0303030303f7f3", "a519f619eba21966"),
    ("photos/thorn-image2.jpg", "fafafc9d98110108", "d9d1850c9b33e393"),
    ("photos/thorn-image5.jpg", "03071f0f8cccccf8", "b926c47847a9b4c7"),
    ("photos/thorn-image7.jpg", "404f3f60c0f89080", "fd81756161468ebc"),
    ("photos/thorn-image8.jpg", "fffbe0460e181000", "e0e9ee9d11507366"),
    ("photos/threatexchange-labelme-q0746.jpg", "ffff000000e0ff00", "f12a95e255ca571c"),
    ("photos/threatexchange-labelme-q0291.jpg", "c0dc8c0e0c0880ff", "df7ae868a0348733"),
    ("photos/threatexchange-labelme-q0122.jpg", "ffffffff0f000000", "80807f2f5dfac465"),
    ("photos/kodak-kodim01.jpg", "ff36ffff50404f00", "c4c62e70dbb94b31"),
    ("photos/kodak-kodim23.jpg", "3232347c38387860", "c7b6353c39b13a60"),
    ("photos/skimage-astronaut.jpg", "7f7f7fc744f8d050", "c2924c5532bddfc8"),
    ("photos/skimage-coins.jpg", "ffffe0f001218001", "e0d5b5a92bd4523a"),
    ("photos/opencv-smarties.jpg", "fefafefa218dc313", "f8c7bc1a43f49862"),
    ("photos/plasma-ColdRipple.jpg", "ffff838381000000", "bdacc2d2a81d6f28"),
    ("photos/mate-Wood.jpg", "3f1f0f07183c3618", "848b95cc6ae4d3da"),
    ("photos/lomiri-sunset_by_Aitzol_Berasategi-q1.jpg", "000003071f3fffff", "a8556a976a956a95"),
    ("photos/imagehash-peppers.jpg", "9f172786e71f1e00", "92a71cdc79d980e3"),
    ("photos/sklearn-china.jpg", "ffff8f8e0e0c0000", "9db8c2c7445dbb24"),
]


@pytest.mark.parametrize(("name", "ahash", "phash"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vector(name: str, ahash: str, phash: str) -> None:
    hashes = hash_file(data_file(name))
    assert (to_hex(hashes.ahash), to_hex(hashes.phash)) == (ahash, phash)


def test_seed_near_duplicates_are_near_and_other_cats_far() -> None:
    """The seed's blog case, on guard's hash: edits of one cat stay close, other cats do not."""
    from guard import hamming

    by_name = {name.rsplit("/", 1)[-1]: int(a, 16) for name, a, _ in GOLDEN}
    query = by_name["cat-distorted.jpg"]
    for edit in (
        "cat.jpg",
        "cat-dark.jpg",
        "cat-shrink.jpg",
        "cat-upscaled.jpg",
        "cat-inverted.jpg",
    ):
        assert hamming(query, by_name[edit]) <= 8, edit
    for other in ("kitten.jpg", "kitten-looking-up.jpg", "cat-on-couch.jpg"):
        assert hamming(query, by_name[other]) >= 20, other
    assert by_name["kitten.jpg"] == by_name["copy-of-kitten.jpg"] == by_name["kitten-resized.jpg"]
