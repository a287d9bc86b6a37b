from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcam.data import d4
from pcam.data.reader import _gather, unpack_pixels
from pcam.errors import InvalidArgumentError
from pcam.testing.strategies import random_arrays

codes_of = st.lists(st.integers(0, 7), min_size=1, max_size=12)


def _images(count: int, seed: int) -> npt.NDArray[np.uint8]:
    return random_arrays(count, seed=seed)[0]


@given(codes=codes_of, seed=st.integers(0, 999))
def test_inverse_restores_the_batch_exactly(codes: list[int], seed: int) -> None:
    images = _images(len(codes), seed)
    code_array = np.array(codes, dtype=np.uint8)
    moved = d4.transform(images, code_array)
    np.testing.assert_array_equal(d4.transform(moved, code_array, inverse=True), images)


def _sorted_pixels(image: np.ndarray) -> np.ndarray:
    """The image's RGB pixels as sorted 24-bit integers: equal for any rearrangement of them."""
    rgb = image.reshape(-1, 3).astype(np.uint32)
    return np.sort((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])


@given(seed=st.integers(0, 999))
def test_the_eight_symmetries_are_distinct_and_each_a_bijection(seed: int) -> None:
    image = _images(1, seed)[0]
    results = [d4.apply_one(image, code) for code in range(8)]
    assert len({r.tobytes() for r in results}) == 8  # a random patch has no symmetry
    pixels = _sorted_pixels(image)
    for result in results:
        assert result.shape == image.shape
        assert np.array_equal(_sorted_pixels(result), pixels)  # the same pixels, moved


def test_symmetries_act_as_expected_on_a_marked_corner() -> None:
    image = np.zeros((96, 96, 3), np.uint8)
    image[0, 0] = 255  # top-left corner
    where = {code: tuple(np.argwhere(d4.apply_one(image, code)[..., 0])[0]) for code in range(8)}
    assert where[0] == (0, 0)
    assert where[1] == (95, 0)  # rows flipped: upside down
    assert where[2] == (0, 95)  # columns flipped: mirrored
    assert where[3] == (95, 95)
    assert where[4] == (0, 0)  # transpose keeps the diagonal
    image[0, 5] = 128
    assert d4.apply_one(image, 4)[5, 0, 0] == 128


@given(first=st.integers(0, 7), second=st.integers(0, 7), seed=st.integers(0, 99))
def test_symmetries_form_a_group(first: int, second: int, seed: int) -> None:
    image = _images(1, seed)[0]
    composed = d4.apply_one(d4.apply_one(image, first), second)
    assert any(np.array_equal(composed, d4.apply_one(image, c)) for c in range(8))


@given(codes=codes_of, seed=st.integers(0, 999))
def test_packed_pixel_gather_equals_the_reference_transform(codes: list[int], seed: int) -> None:
    """The fast path (4-byte packed pixels) must give exactly the plain NumPy result."""
    source = _images(20, seed)
    keys = np.random.default_rng(seed).integers(0, 20, size=len(codes))
    code_array = np.array(codes, dtype=np.uint8)
    packed = _gather(source, keys, code_array)
    assert packed.dtype == np.uint32
    expected = d4.transform(source[keys], code_array)
    np.testing.assert_array_equal(unpack_pixels(packed), expected)


def test_gather_without_codes_is_a_plain_gather() -> None:
    source = _images(10, 1)
    keys = np.array([3, 3, 0, 9])
    np.testing.assert_array_equal(_gather(source, keys, None), source[keys])


def test_bad_input_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="code: expected"):
        d4.apply_one(np.zeros((4, 4, 3)), 8)
    with pytest.raises(InvalidArgumentError, match="codes: expected one code per image"):
        d4.transform(np.zeros((2, 4, 4, 3)), np.zeros(3, np.uint8))
    with pytest.raises(InvalidArgumentError, match="images: expected"):
        d4.transform(np.zeros((2, 4, 5, 3)), np.zeros(2, np.uint8))


def test_random_codes_are_uniform_over_all_eight_and_seeded() -> None:
    codes = d4.random_codes(np.random.default_rng(7), 8000)
    assert codes.dtype == np.uint8
    assert codes.shape == (8000,)
    counts = np.bincount(codes, minlength=8)
    assert counts.size == 8  # nothing outside 0..7
    assert counts.min() > 850  # 1,000 expected per code
    again = d4.random_codes(np.random.default_rng(7), 8000)
    np.testing.assert_array_equal(codes, again)
    assert not np.array_equal(codes, d4.random_codes(np.random.default_rng(8), 8000))
    assert d4.random_codes(np.random.default_rng(7), 0).shape == (0,)


def test_bad_input_gives_exact_messages() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        d4.apply_one(np.zeros((4, 4, 3)), 8)
    assert str(caught.value) == "code: expected an integer in [0, 8), found 8"
    with pytest.raises(InvalidArgumentError) as caught:
        d4.apply_one(np.zeros((4, 4, 3)), -1)
    assert str(caught.value) == "code: expected an integer in [0, 8), found -1"
    with pytest.raises(InvalidArgumentError) as caught:
        d4.transform(np.zeros((2, 4, 4, 3)), np.zeros(3, np.uint8))
    assert str(caught.value) == "codes: expected one code per image, shape (2,), found (3,)"
    with pytest.raises(InvalidArgumentError) as caught:
        d4.transform(np.zeros((2, 4, 5, 3)), np.zeros(2, np.uint8))
    assert str(caught.value) == (
        "images: expected a batch [B, H, W, C] of square images, found (2, 4, 5, 3)"
    )
