"""The train and diagnose jobs' configs (validated when built, typed errors naming Python parameters, keyword
options by field name, CLI defaults read from the dataclasses) and the progress reporter."""

from __future__ import annotations

import dataclasses

import click
import pytest

from botaclip.config import build, default
from botaclip.diagnostics.config import DiagnoseConfig
from botaclip.errors import InvalidInputError
from botaclip.model.train_config import TrainConfig
from botaclip.pipeline.train_config import (
    CenteringConfig,
    FeatureConfig,
    SplitConfig,
    TrainJobConfig,
    TrainOptions,
)
from botaclip.progress import Echo, Progress, Silent, as_progress, counter

IO = dict(releves="r.csv", imagery=["o.tif"], out="a.pt")


# --- training -----------------------------------------------------------------------------------------------------


def test_train_options_reach_the_nested_model_config():
    cfg = TrainOptions(**IO, epochs=3, lr=0.5, seed=2, device="cpu", views=1, folds=3, center_store="st")
    assert isinstance(cfg, TrainJobConfig) and cfg.imagery == ("o.tif",)
    assert cfg.fit == TrainConfig(epochs=3, lr=0.5, seed=2, device="cpu")
    assert (cfg.features.views, cfg.split.folds, cfg.centering.center_store) == (1, 3, "st")
    # the nested form is the same config
    nested = TrainJobConfig("r.csv", ("o.tif",), "a.pt", features=FeatureConfig(views=1),
                            split=SplitConfig(folds=3), centering=CenteringConfig(center_store="st"),
                            fit=TrainConfig(epochs=3, lr=0.5, seed=2, device="cpu"))
    assert nested == cfg
    # a config plus keyword overrides
    again = build(TrainJobConfig, nested, epochs=7, out="b.pt")
    assert again.fit.epochs == 7 and again.out == "b.pt" and again.fit.lr == 0.5 and nested.fit.epochs == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fit.epochs = 1  # type: ignore[misc]


def test_train_pipeline_declares_no_model_field_twice():
    """The job nests the model's TrainConfig: no field of it is re-declared by the pipeline's groups."""
    model = {f.name for f in dataclasses.fields(TrainConfig)}
    for cls in (TrainJobConfig, FeatureConfig, SplitConfig, CenteringConfig):
        assert not model & {f.name for f in dataclasses.fields(cls)}, cls


@pytest.mark.parametrize("options, params", [
    (dict(objective="sp"), ["objective"]),
    (dict(epochs=0), ["epochs"]),
    (dict(batch_size=1), ["batch_size"]),
    (dict(lr=0), ["lr"]),
    (dict(weight_decay=-1), ["weight_decay"]),
    (dict(lambda_reg=-0.1), ["lambda_reg"]),
    (dict(init_temperature=0), ["init_temperature"]),
    (dict(embed_dim=0), ["embed_dim"]),
    (dict(k_neighbors=0), ["k_neighbors"]),
    (dict(patience=0), ["patience"]),
    (dict(seed=-1), ["seed"]),
    (dict(adapter="conv"), ["adapter"]),
    (dict(cover_transform="sqrt"), ["cover_transform"]),
    (dict(views=0), ["views"]),
    (dict(backbone_seed=-1), ["backbone_seed"]),
    (dict(size_px=100_000), ["size_px"]),
    (dict(chip_m=0), ["chip_m"]),
    (dict(min_valid=1.5), ["min_valid"]),
    (dict(val_fraction=1.0), ["val_fraction"]),
    (dict(block_res=16), ["block_res"]),
    (dict(min_plots=0), ["min_plots"]),
    (dict(folds=1), ["folds"]),
    (dict(center_set="dofa"), ["center_set", "center_store"]),
    (dict(center=False, center_store="st"), ["center", "center_store", "center_set"]),
    (dict(folds=3, resume="a0.pt"), ["resume", "folds"]),
    (dict(out="adapter"), ["out"]),
    (dict(imagery=[]), ["imagery"]),
])
def test_bad_training_options_raise_typed_errors_naming_them(options, params):
    with pytest.raises(InvalidInputError) as info:
        TrainOptions(**{**IO, **options})
    assert info.value.params == params
    assert isinstance(info.value, ValueError)


def test_unknown_or_missing_training_options_are_type_errors():
    with pytest.raises(TypeError, match="bogus"):
        TrainOptions(**IO, bogus=1)
    with pytest.raises(TypeError):
        TrainOptions(imagery=["o.tif"], out="a.pt")  # no releves


def test_train_botaclip_refuses_bad_options_before_reading_anything(tmp_path):
    from botaclip.pipeline.train import train_botaclip

    with pytest.raises(InvalidInputError) as info:
        train_botaclip(releves=str(tmp_path / "missing.csv"), imagery=["missing.tif"], out=str(tmp_path / "a.pt"),
                       epochs=0)
    assert info.value.params == ["epochs"]
    with pytest.raises(InvalidInputError) as info:
        train_botaclip(TrainOptions(**IO), folds=1)
    assert info.value.params == ["folds"]


def _cli_defaults(command: click.Command) -> dict[str, object]:
    return {p.name: p.default for p in command.params if isinstance(p, click.Option) and not p.required}


def test_train_cli_defaults_are_the_config_defaults():
    from botaclip.commands.train import train

    defaults = _cli_defaults(train)
    assert len(defaults) > 25
    for name, value in defaults.items():
        expected = default(TrainJobConfig, name)
        if expected is dataclasses.MISSING:  # --imagery: needed unless --stac is given; no default on either side
            assert value is None or "UNSET" in repr(value), name
            continue
        assert value == expected, name
    # every option is a field of the config (the command passes them on by name)
    from botaclip.config import field_names

    assert {p.name for p in train.params} <= field_names(TrainJobConfig)


def test_train_cli_error_spells_the_option(cli_runner, tmp_path):
    from botaclip.cli import cli

    args = ["train", "--releves", str(tmp_path / "r.csv"), "--imagery", str(tmp_path / "o.tif"), "--out",
            str(tmp_path / "a.pt")]
    for extra, expected in ((["--cover", "log1p", "--views", "0"], "--views must be at least 1"),
                            (["--no-center", "--center-store", str(tmp_path)], "(--no-center) contradicts")):
        result = cli_runner.invoke(cli, [*args, *extra])
        assert result.exit_code == 2 and expected in result.stderr, result.stderr


# --- diagnostics --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, params", [
    (dict(seed=-1), ["seed"]),
    (dict(k=0), ["k"]),
    (dict(sample=1), ["sample"]),
    (dict(sample=5, k=10), ["sample", "k"]),
    (dict(n_pairs=0), ["n_pairs"]),
    (dict(label_col=""), ["label_col"]),
    (dict(umap="yes"), ["umap"]),
])
def test_bad_diagnose_options_raise_typed_errors_naming_them(options, params):
    with pytest.raises(InvalidInputError) as info:
        DiagnoseConfig(**options)
    assert info.value.params == params


@pytest.fixture(scope="module")
def disk_cells():
    """A disk of res-10 cells (radius 5 rings, 91 cells)."""
    import h3
    import numpy as np

    return np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(45.19, 5.72, 10), 5)),
                    dtype=np.uint64)


def test_diagnose_takes_a_config_or_keywords(disk_cells):
    import numpy as np

    from botaclip.diagnostics import diagnose

    cells = disk_cells
    X = np.random.default_rng(0).normal(size=(len(cells), 8)).astype(np.float32)
    source = {"a": (cells, X)}
    by_keywords = diagnose(source, sample=60, seed=4, k=5)
    by_config = diagnose(source, None, DiagnoseConfig(sample=60, seed=4, k=5))
    overridden = diagnose(source, None, DiagnoseConfig(sample=60, seed=1, k=5), seed=4)
    assert by_keywords.to_dict()["results"] == by_config.to_dict()["results"] == overridden.to_dict()["results"]
    assert by_config.seed == 4 and by_config.k == 5
    with pytest.raises(InvalidInputError) as info:
        diagnose(source, seed=-2)
    assert info.value.params == ["seed"]
    with pytest.raises(TypeError):
        diagnose(source, bogus=1)
    steps = []

    class Recorder(Silent):
        def bar(self, total, unit="it", desc=""):
            steps.append(total)
            return super().bar(total, unit, desc)

    diagnose(source, sample=60, k=5, progress=Recorder())
    assert steps == [1]


def test_diagnose_cli_defaults_are_the_config_defaults():
    from botaclip.commands.diagnose import diagnose

    defaults = {name: value for name, value in _cli_defaults(diagnose).items() if name != "feature_sets"}
    assert set(defaults) == {"labels", "label_col", "sample", "seed", "k", "centered", "out_dir"}
    for name, value in defaults.items():
        assert value == default(DiagnoseConfig, name), name


# --- progress -----------------------------------------------------------------------------------------------------


def test_echo_reports_steps_warnings_and_a_counter():
    lines: list[str] = []
    progress = Echo(lines.append, every_s=3600)
    assert isinstance(progress, Progress)
    progress.step("epoch 1")
    progress.warn("random weights")
    with progress.bar(10, "relevés", "embedding chips") as bar:
        for _ in range(10):
            bar.update(1)
    # the counter says where it is at the start and at the end (and every every_s seconds between)
    assert lines == ["epoch 1", "warning: random weights", "embedding chips: 1/10 relevés",
                     "embedding chips: 10/10 relevés"]


def test_counter_adapts_done_total_callbacks():
    lines: list[str] = []
    report = counter(Echo(lines.append, every_s=3600), "relevés", "embedding chips")
    for done in (2, 5, 7):
        report(done, 7)
    assert lines == ["embedding chips: 2/7 relevés", "embedding chips: 7/7 relevés"]


def test_silent_says_nothing_but_logs_warnings(caplog, capsys):
    progress = Silent()
    with caplog.at_level("WARNING", logger="botaclip"):
        progress.step("step")
        progress.warn("careful")
        with progress.bar(3) as bar:
            bar.update(3)
    assert [r.getMessage() for r in caplog.records] == ["careful"] and caplog.records[0].name == "botaclip"
    assert capsys.readouterr() == ("", "")


def test_as_progress_accepts_the_older_forms():
    lines: list[str] = []
    assert isinstance(as_progress(False), Silent) and isinstance(as_progress(None), Silent)
    assert isinstance(as_progress(True), Echo) and as_progress(True).tqdm
    as_progress(lines.append).step("a")
    as_progress(None, lines.append).step("b")
    mine = Silent()
    assert as_progress(mine) is mine
    assert lines == ["a", "b"]
