"""Test configuration: hypothesis profiles selected by ``MOO_OPT_HYPOTHESIS_PROFILE``.

* ``ci`` (default): derandomised, a few hundred examples per property, fast and repeatable.
* ``thorough``: 10 000 examples per property, random seeds; run before closing solver work.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("MOO_OPT_HYPOTHESIS_PROFILE", "ci"))
