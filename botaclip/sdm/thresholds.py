"""Threshold rules: how a continuous suitability becomes presence/absence for TSS, sensitivity, specificity, F1
and binary maps.

A rule is chosen once (``--threshold``) and applied the same way everywhere: within each outer CV fold on the
inner spatial-block out-of-fold predictions of the training part, and for a final model on the outer
out-of-fold predictions. Never on in-sample scores: a flexible model (a random forest above all) scores its own
training cells near 1, so a threshold found there sits far above anything a held-out cell reaches.

Rules (a cell is predicted present when ``score >= t``):

- ``maxtss``: the t maximising TSS = sensitivity + specificity - 1;
- ``senspec``: the t where sensitivity = specificity;
- ``p10``: the 10th-percentile training presence: 90 % of the presences score at least t;
- a number in [0, 1]: that fixed value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.sdm import metrics as M

THRESHOLD_RULES = ("maxtss", "senspec", "p10")
DEFAULT_THRESHOLD = "maxtss"


@dataclass(frozen=True)
class ThresholdRule:
    """A named rule (``maxtss``, ``senspec``, ``p10``) or a fixed ``value`` in [0, 1]."""

    name: str
    value: float | None = None

    @property
    def fixed(self) -> bool:
        return self.value is not None

    def __str__(self) -> str:
        return f"{self.value:g}" if self.fixed else self.name

    def choose(self, y, score) -> float:
        """The threshold this rule picks on (y, score): labels (1 presence, 0 absence or background) and
        out-of-sample predictions. ``nan`` where the rule is undefined (one class only, no presence)."""
        if self.fixed:
            return float(self.value)
        y = np.asarray(y, dtype=np.float64).ravel()
        score = np.asarray(score, dtype=np.float64).ravel()
        ok = np.isfinite(score)
        y, score = y[ok], score[ok]
        if self.name == "maxtss":
            return M.best_tss_threshold(y, score)
        if self.name == "senspec":
            return M.sens_spec_threshold(y, score)
        return M.p10_threshold(score[y > 0])


def parse_threshold(rule: "str | float | ThresholdRule | None") -> ThresholdRule:
    """``'maxtss'``, ``'senspec'``, ``'p10'``, a number in [0, 1] (or its text) -> :class:`ThresholdRule`.

    ``None`` gives the default (max TSS). A one-line error for anything else.
    """
    if isinstance(rule, ThresholdRule):
        return rule
    if rule is None:
        return ThresholdRule(DEFAULT_THRESHOLD)
    if isinstance(rule, str):
        text = rule.strip().lower()
        if text in THRESHOLD_RULES:
            return ThresholdRule(text)
        try:
            value = float(text)
        except ValueError:
            raise InvalidInputError(
                f"unknown {param('threshold')} rule {rule!r}; choose {', '.join(THRESHOLD_RULES)} or a value in "
                "[0, 1]"
            ) from None
    elif isinstance(rule, (int, float)) and not isinstance(rule, bool):
        value = float(rule)
    else:
        raise InvalidInputError(f"{param('threshold')} must be a rule name or a number, got {type(rule).__name__}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidInputError(f"{param('threshold')} {rule!r} is outside [0, 1]; a fixed threshold is a "
                                "suitability value")
    return ThresholdRule("value", value)


def all_thresholds(y, score) -> dict[str, float]:
    """The threshold of every named rule on (y, score), e.g. on a model's out-of-fold predictions: stored with a
    saved model so ``sdm predict --binary --threshold RULE`` can apply any rule later."""
    return {name: ThresholdRule(name).choose(y, score) for name in THRESHOLD_RULES}
