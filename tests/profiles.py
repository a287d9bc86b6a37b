"""Hypothesis profiles: how many examples each property test draws, by tier.

- ``dev`` (the default on a laptop, and the fast tier): few examples, a quick signal;
- ``ci`` (``CI=true``): the counts the suite has always run, the pull-request gate;
- ``thorough`` (the weekly workflow, or by hand): ten times ``ci``.

``HYPOTHESIS_PROFILE=NAME`` (or ``pytest --hypothesis-profile NAME``) chooses one; without it,
``CI=true`` selects ``ci`` and anything else ``dev``. A test whose examples are costly asks for
fewer with :func:`examples`, stated as its count under ``ci`` and scaled to the profile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 60
"""``max_examples`` of the ``ci`` profile; :func:`examples` counts are relative to it."""

PROFILE_EXAMPLES = {"dev": 10, "ci": CI_EXAMPLES, "thorough": 10 * CI_EXAMPLES}
"""``max_examples`` of each profile."""


def register_profiles() -> None:
    """Register the three profiles. None has a deadline: a shared 2-core machine is noisy."""
    for name, count in PROFILE_EXAMPLES.items():
        settings.register_profile(
            name,
            max_examples=count,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            print_blob=name != "dev",
        )


def profile_for(environ: Mapping[str, str]) -> str:
    """The profile ``environ`` selects: ``HYPOTHESIS_PROFILE``, else ``ci`` under CI, else dev."""
    chosen = environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    return "dev" if environ.get("CI", "").lower() in ("", "0", "false", "no") else "ci"


def load_profile(environ: Mapping[str, str] = os.environ) -> str:
    """Register the profiles and load the one ``environ`` selects; returns its name."""
    register_profiles()
    name = profile_for(environ)
    settings.load_profile(name)
    return name


def examples(ci_count: int, profile: settings | None = None) -> int:
    """``ci_count`` examples under ``ci``, scaled to ``profile`` (the loaded one); at least 2."""
    current = profile if profile is not None else settings()
    return max(2, round(ci_count * current.max_examples / CI_EXAMPLES))
