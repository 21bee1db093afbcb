"""IndexConfig: the index job's settings. Validation with typed errors naming Python parameters, config plus
keyword overrides, the CLI's defaults read from the dataclass, and the engines' modules importing in one
direction."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from botaclip.commands.index import index as index_command
from botaclip.config import build, default, field_names, with_options
from botaclip.errors import InvalidInputError
from botaclip.pipeline import (
    ChipConfig,
    IndexConfig,
    ModelConfig,
    OutputConfig,
    RuntimeConfig,
    ScaleConfig,
    run_index,
)

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"model": ModelConfig, "chips": ChipConfig, "runtime": RuntimeConfig, "scale": ScaleConfig,
          "output": OutputConfig}


@pytest.mark.parametrize("options,params", [
    (dict(batch_size=0), ["batch_size"]),
    (dict(batch_size=2.5), ["batch_size"]),
    (dict(workers=-1), ["workers"]),
    (dict(limit=-1), ["limit"]),
    (dict(min_valid=1.5), ["min_valid"]),
    (dict(min_valid=float("nan")), ["min_valid"]),
    (dict(seed=-1), ["seed"]),
    (dict(backbone=""), ["backbone"]),
    (dict(chip_m=0), ["chip_m"]),
    (dict(size_px=0), ["size_px"]),
    (dict(normalize="zscore"), ["normalize"]),
    (dict(resampling="nearest"), ["resampling"]),
    (dict(bands="rgb", wavelengths="0.66,0.56,0.49"), ["bands", "wavelengths"]),
    (dict(shard="1-2"), ["shard"]),
    (dict(shard="2/2"), ["shard"]),
    (dict(engine="spark"), ["engine"]),
    (dict(engine="ray", shard="0/2"), ["shard", "engine", "shard"]),
    (dict(engine="ray", ray_workers=0), ["ray_workers"]),
    (dict(engine="ray", gpus_per_worker=-1), ["gpus_per_worker"]),
    (dict(engine="ray", cpus_per_worker=0), ["cpus_per_worker"]),
    (dict(resolution=16), ["resolution"]),
    (dict(partition_resolution=-1), ["partition_resolution"]),
    (dict(name="Not A Name"), ["name"]),
])
def test_bad_values_raise_a_typed_error_naming_the_parameter(options, params):
    with pytest.raises(InvalidInputError) as exc:
        build(IndexConfig, **options)
    assert exc.value.params == params and isinstance(exc.value, ValueError)


def test_run_index_refuses_bad_options_before_touching_anything(tmp_path):
    with pytest.raises(InvalidInputError) as exc:
        run_index("sample", [], tmp_path / "store", batch_size=0)
    assert exc.value.params == ["batch_size"]
    with pytest.raises(TypeError, match="nosuch"):
        run_index("sample", [], tmp_path / "store", nosuch=1)
    with pytest.raises(TypeError, match="IndexConfig"):
        run_index("sample", [], tmp_path / "store", {"batch_size": 8})
    assert not (tmp_path / "store").exists()


def test_values_are_normalised_and_the_config_is_frozen():
    cfg = build(IndexConfig, shard="1/4", batch_size=8.0, wavelengths=[0.66, 0.56, 0.49], chip_m=50)
    assert cfg.scale.shard == (1, 4) and cfg.runtime.batch_size == 8 and isinstance(cfg.runtime.batch_size, int)
    assert cfg.chips.wavelengths == (0.66, 0.56, 0.49) and cfg.chips.chip_m == 50.0
    assert build(IndexConfig, shard=(0, 2)).scale.shard == (0, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.runtime.batch_size = 4
    # Ray settings are only checked with the Ray engine, as before.
    assert build(IndexConfig, ray_workers=0).scale.ray_workers == 0


def test_keyword_options_override_the_config_by_name():
    base = IndexConfig(model=ModelConfig(backbone="dofa-tiny", seed=3), runtime=RuntimeConfig(batch_size=8, workers=0),
                       output=OutputConfig(name="mine"))
    cfg = build(IndexConfig, base, batch_size=16, overwrite=True, engine="ray")
    assert cfg.runtime.batch_size == 16 and cfg.runtime.workers == 0  # overridden; kept
    assert cfg.model == base.model and cfg.output == OutputConfig(name="mine", overwrite=True)
    assert cfg.scale.engine == "ray" and base.scale.engine == "local"  # the given config is not changed
    assert with_options(cfg, name=None).output.name is None
    assert build(IndexConfig) == IndexConfig()


def test_field_names_are_unique_across_groups():
    leaves = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(leaves) == len(set(leaves))  # each keyword option reaches exactly one field
    assert not set(leaves) & set(GROUPS)  # and never replaces a whole group
    assert {f.name: f.type for f in dataclasses.fields(IndexConfig)} == {k: v.__name__ for k, v in GROUPS.items()}


def test_cli_defaults_are_the_dataclass_defaults():
    options = {p.name: p for p in index_command.params}
    configured = field_names(IndexConfig) - set(GROUPS)
    # Every field is an option, except limit and partition_resolution (Python only) and progress (--quiet).
    assert configured - set(options) == {"limit", "partition_resolution", "progress"}
    for name in configured & set(options):
        assert options[name].default == default(IndexConfig, name), name
    assert options["quiet"].default is (not default(IndexConfig, "progress"))


def test_cli_choices_are_the_library_ones():
    from botaclip.imagery.bands import NORMALIZATIONS
    from botaclip.imagery.chips import RESAMPLINGS
    from botaclip.pipeline import index_config

    assert index_config.NORMALIZATIONS == NORMALIZATIONS and index_config.RESAMPLINGS == RESAMPLINGS


def _botaclip_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("botaclip"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("botaclip")}
    return out


def test_index_and_ray_engine_do_not_import_each_other():
    pipeline = ROOT / "botaclip" / "pipeline"
    assert "botaclip.pipeline.index" not in _botaclip_imports(pipeline / "ray_engine.py")
    assert "botaclip.pipeline.index" not in _botaclip_imports(pipeline / "index_steps.py")
    assert "botaclip.pipeline.ray_engine" not in _botaclip_imports(pipeline / "index_steps.py")
