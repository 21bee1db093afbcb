"""Checks shared by `fit_species` and `compare` on the numbers a user gives, made before any work starts."""

from __future__ import annotations

from pathlib import Path

from botaclip.errors import BotaclipError


def check_run_options(*, background: int, seed: int, n_jobs: int, max_uncertainty: float | None,
                      out: str | Path | None) -> None:
    """Refuse a non-positive background size or thread count, a negative seed or uncertainty limit, and an
    output folder inside a store."""
    from botaclip.store.outputs import check_output_path

    if int(background) < 1:
        raise BotaclipError(f"--background must be at least 1 cell, got {background}")
    if int(seed) < 0:
        raise BotaclipError(f"--seed must be 0 or more, got {seed}")
    if int(n_jobs) < 1:
        raise BotaclipError(f"--jobs must be at least 1, got {n_jobs}")
    if max_uncertainty is not None and not max_uncertainty >= 0:  # also refuses NaN
        raise BotaclipError(f"--max-uncertainty must be 0 or more metres, got {max_uncertainty}")
    if out is not None:
        check_output_path(out, what="output folder", is_dir=True)
