"""Prefect + Ray composition of the plain-Python stages in ``tasks/``.

Prefect reads its settings once, when it is first imported.  Every flow module is inside this
package, so this file runs before any of them imports Prefect: the defaults below apply on
every path (CLI, deployments, tests, benchmarks) without each caller remembering the order.
Without ``PREFECT_API_URL`` Prefect starts a temporary local server: give it time to start on
small machines, and keep it from phoning home.  Variables already set are left alone.
"""

import os

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
