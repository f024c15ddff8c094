"""The environment of a ``gatelab sweep`` subprocess that starts its own local Ray: loopback
only, no auth token to find, unbuffered output, and no inherited ``RAY_ADDRESS`` pointing it at
another cluster."""

from __future__ import annotations

import os


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled",
               PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env
