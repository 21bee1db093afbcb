"""The hyper-parameters of one adapter training run (:class:`TrainConfig`), without torch.

Kept apart from :mod:`botaclip.model.train` so that the CLI reads its defaults without importing torch. A
``TrainConfig`` is frozen and validated when built: a bad value raises
:class:`~botaclip.errors.InvalidInputError` naming the parameter (``.params``), which the CLI spells as its option.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from botaclip.errors import InvalidInputError, param

#: ``contrastive`` = BotaCLIP (SigLIP against a relevé encoder), ``supervised`` = BotaSP (BCE species head).
OBJECTIVES = ("contrastive", "supervised")
ADAPTER_KINDS = ("linear", "mlp")
COVER_TRANSFORMS = ("log1p", "presence")
#: R against the adapter's (centred) input, or against the raw unit backbone embedding.
REG_TARGETS = ("input", "raw")


def check(ok: bool, name: str, requirement: str, value) -> None:
    """Raise InvalidInputError "``name`` ``requirement``, got ``value``" unless ``ok``."""
    if not ok:
        raise InvalidInputError(f"{param(name)} {requirement}, got {value!r}")


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_int(config, name: str, minimum: int, optional: bool = False) -> None:
    """Field ``name`` of ``config`` is a whole number >= ``minimum`` (or None when ``optional``)."""
    value = getattr(config, name)
    if value is None and optional:
        return
    requirement = "must be 0 or more" if minimum == 0 else f"must be at least {minimum}"
    check(is_int(value) and value >= minimum, name, requirement, value)


def check_choice(config, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    check(value in choices, name, f"must be one of {', '.join(choices)}", value)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (stored in the checkpoint)."""

    objective: str = "contrastive"
    embed_dim: int | None = None  # None: the backbone's dimension (identity-initialised adapter)
    epochs: int = 100
    batch_size: int = 512
    # 1e-2, not the 1e-3 of the first demo: at 1e-3 SigLIP's t and b hardly leave their start within the ~30
    # epochs early stopping allows, and the butterfly and soil SDMs were clearly worse (docs/training.md,
    # ablation); BotaSP's BCE was still falling after 100 epochs at 1e-3 and is lower at 1e-2 in about 45.
    lr: float = 1e-2
    weight_decay: float = 1e-4
    lambda_reg: float = 1.0
    k_neighbors: int | None = None
    # R against the adapter's (centred) input, or against the raw unit backbone embedding (the first demo's form).
    reg_target: str = "input"
    # SigLIP's learnable temperature t = exp(t') and bias b at the start (BotaCLIP only).
    init_temperature: float = 10.0
    init_bias: float = -10.0
    adapter: str = "linear"
    cover_transform: str = "log1p"
    releve_hidden_dim: int = 512
    releve_depth: int = 2
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    # False keeps the adapter at the identity and trains only the relevé encoder (and t, b): the raw-backbone
    # baseline of the benchmarks, i.e. what the relevé encoder can find in the unadapted space.
    train_adapter: bool = True
    # Intra-op CPU threads while training (restored afterwards). The adapter's matrices are small: one thread is
    # as fast as several on an idle machine and up to 10x faster on a busy one (no OpenMP spin-waiting).
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidInputError (naming the parameter) for a setting no model can take."""
        check_choice(self, "objective", OBJECTIVES)
        check_choice(self, "reg_target", REG_TARGETS)
        check_choice(self, "adapter", ADAPTER_KINDS)
        check_choice(self, "cover_transform", COVER_TRANSFORMS)
        for name, minimum in (("epochs", 1), ("batch_size", 2), ("patience", 1), ("seed", 0),
                              ("releve_hidden_dim", 1), ("releve_depth", 1)):
            check_int(self, name, minimum)
        for name in ("embed_dim", "k_neighbors", "cpu_threads"):
            check_int(self, name, 1, optional=True)
        check(is_number(self.lr) and self.lr > 0, "lr", "must be positive", self.lr)
        for name in ("weight_decay", "lambda_reg"):
            value = getattr(self, name)
            check(is_number(value) and value >= 0, name, "must be >= 0", value)
        check(is_number(self.init_temperature) and self.init_temperature > 0, "init_temperature",
              "must be positive", self.init_temperature)
        check(is_number(self.init_bias), "init_bias", "must be a finite number", self.init_bias)
        check(isinstance(self.device, str) and bool(self.device.strip()), "device", "must name a device",
              self.device)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)
