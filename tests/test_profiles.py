"""The hypothesis profiles of the tiers (tests/profiles.py): which one runs, how many examples."""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.profiles import PROFILE_EXAMPLES, examples, profile_for, register_profiles


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "dev"),
        ({"CI": "true"}, "ci"),
        ({"CI": "1"}, "ci"),
        ({"CI": "false"}, "dev"),
        ({"CI": ""}, "dev"),
        ({"HYPOTHESIS_PROFILE": "ci"}, "ci"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "thorough"}, "thorough"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "dev"}, "dev"),
    ],
)
def test_the_environment_selects_the_profile(environ: dict[str, str], expected: str) -> None:
    assert profile_for(environ) == expected


def test_the_profiles_draw_few_the_usual_and_many_examples() -> None:
    register_profiles()
    counts = {name: settings.get_profile(name).max_examples for name in PROFILE_EXAMPLES}
    assert counts == {"dev": 10, "ci": 60, "thorough": 600}
    assert all(settings.get_profile(name).deadline is None for name in PROFILE_EXAMPLES)


def test_examples_keeps_the_ci_count_and_scales_it_to_the_other_profiles() -> None:
    register_profiles()
    dev, ci, thorough = (settings.get_profile(n) for n in ("dev", "ci", "thorough"))
    assert [examples(n, ci) for n in (20, 25, 30)] == [20, 25, 30]
    assert [examples(n, dev) for n in (20, 25, 30)] == [3, 4, 5]
    assert [examples(n, thorough) for n in (20, 25, 30)] == [200, 250, 300]
    assert examples(1, dev) == 2  # never fewer than two
    assert examples(30) == examples(30, settings())  # the loaded profile by default
