"""Connecting to Ray, for every job that can run on a cluster (`index --engine ray`, `sdm compare --engine
ray`): Ray is an optional extra, its usage statistics are never sent, and a failure to start or reach a cluster is
one line."""

from __future__ import annotations

import os

from botaclip.errors import InvalidInputError, MissingDependencyError


def import_ray():
    """The ``ray`` module, or a one-line error naming the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("the Ray engine needs Ray: pip install 'botaclip[ray]'") from None
    return ray


def ray_init(ray, address: str | None) -> bool:
    """Connect to the Ray cluster at ``address`` (or start a local one); True when this call started Ray."""
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(object_store_memory=512 * 1024**2, **kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError ... from Ray
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise InvalidInputError(f"cannot start or reach {where}: {first}") from None
    return True
