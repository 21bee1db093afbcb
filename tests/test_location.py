"""Location-encoder embeddings (`botaclip store add-location`, :mod:`botaclip.model.location`) with the real GeoCLIP
weights bundled in the `geoclip` wheel (the botaclip[geoclip] extra, part of `dev`), the network blocked in the
process."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys

import h3.api.basic_int as h3i
import numpy as np
import pytest

from botaclip.cli import cli
from botaclip.errors import InvalidInputError, MissingDependencyError
from botaclip.model.location import GEOCLIP_DIM, geoclip_weights, load_location_encoder
from botaclip.pipeline.location import LocationConfig, add_location
from botaclip.store import Store

PARENT = h3i.latlng_to_cell(45.19, 5.72, 6)  # Grenoble; 2401 children at resolution 10

# Golden values, computed once with the package's own encoder (geoclip 1.3.0, CPU, float32):
#
#     import numpy as np, torch
#     from geoclip import LocationEncoder
#     m = LocationEncoder().eval()
#     probe = np.random.default_rng(0).standard_normal(512)
#     with torch.no_grad():
#         raw = m(torch.tensor(POINTS, dtype=torch.float32)).double().numpy()
#     for r in raw:
#         u = r / np.linalg.norm(r)
#         print(np.linalg.norm(r), u[:4], u @ probe)
#
# (point, norm of the raw 512-d output, first 4 values of the unit vector, unit vector . probe)
GOLDEN = [
    ((45.19, 5.72), 0.249312, [-0.017631, -0.013572, -0.006066, 0.035409], 0.492915),
    ((0.0, 0.0), 0.395226, [0.01178, 0.001749, 0.018609, -0.003826], -1.099191),
    ((-33.8688, 151.2093), 0.271921, [-0.065953, 0.050448, 0.030577, -0.052724], 0.469449),
    ((64.1466, -21.9426), 0.318612, [0.059224, 0.091704, 0.018767, 0.067769], -0.333151),
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails (and the Hugging Face hub is told it is offline)."""
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a location-encoder test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def encoder():
    return load_location_encoder("geoclip")


def test_network_is_blocked_here():
    with pytest.raises(OSError, match="network access"):
        socket.create_connection(("127.0.0.1", 9))


def test_golden_values_of_the_package_encoder(encoder):
    points = np.array([p for p, *_ in GOLDEN])
    unit = encoder.embed(points[:, 0], points[:, 1])
    raw = encoder.module(__import__("torch").tensor(points, dtype=__import__("torch").float32)).detach().numpy()
    probe = np.random.default_rng(0).standard_normal(512)
    for i, (_, norm, first, dot) in enumerate(GOLDEN):
        assert np.linalg.norm(raw[i]) == pytest.approx(norm, abs=2e-6)
        np.testing.assert_allclose(unit[i, :4], first, atol=2e-6)
        assert float(unit[i] @ probe) == pytest.approx(dot, abs=5e-5)


def test_dimension_unit_length_and_determinism(encoder):
    rng = np.random.default_rng(3)
    lat, lng = rng.uniform(-80, 80, 300), rng.uniform(-180, 180, 300)
    a = encoder.embed(lat, lng, batch_size=64)
    b = load_location_encoder("geoclip").embed(lat, lng, batch_size=1000)
    assert a.shape == (300, GEOCLIP_DIM) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-6)  # another load, another batching: the same embeddings
    assert np.array_equal(a, encoder.embed(lat, lng, batch_size=64))


def test_nearby_points_are_closer_than_distant_ones(encoder):
    # Grenoble; 2 km, 50 km and 1,000 km away; the other side of the world.
    lat = np.array([45.19, 45.208, 45.64, 54.19, -45.19])
    lng = np.array([5.72, 5.72, 5.72, 5.72, -174.28])
    e = encoder.embed(lat, lng)
    cos = e[1:] @ e[0]
    assert cos[0] > cos[1] > max(cos[2], cos[3]), cos  # beyond a few hundred km, no order is promised


def test_weights_provenance_is_the_bundled_file(encoder):
    w = geoclip_weights()
    assert w.path.name == "location_encoder_weights.pth" and "geoclip" in w.path.parts
    assert encoder.provenance["weights_sha256"] == hashlib.sha256(w.path.read_bytes()).hexdigest()
    assert encoder.provenance["package"] == "geoclip" and encoder.provenance["package_version"] == "1.3.0"


def test_only_the_location_encoder_is_imported():
    """Loading the encoder neither imports geoclip (its CLIP image model) nor transformers / huggingface_hub."""
    code = ("import sys\nfrom botaclip.model.location import load_location_encoder\n"
            "load_location_encoder().embed([45.19], [5.72])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'geoclip', 'transformers', 'huggingface_hub'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == "[]"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_matches_the_package_encoder_on_random_points(encoder):
    """The rebuilt encoder against geoclip's own LocationEncoder (imported here only), on points worldwide."""
    import torch
    from geoclip import LocationEncoder

    rng = np.random.default_rng(7)
    lat, lng = rng.uniform(-89, 89, 200), rng.uniform(-180, 180, 200)
    with torch.no_grad():
        theirs = LocationEncoder().eval()(torch.tensor(np.stack([lat, lng], 1), dtype=torch.float32))
    theirs = torch.nn.functional.normalize(theirs, dim=1).numpy()
    np.testing.assert_allclose(encoder.embed(lat, lng), theirs, atol=1e-6)


# ---- the feature set -------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    """A store with a 16-d backbone set over one resolution-6 parent and a few cells of a second one."""
    s = Store.create(tmp_path / "s.store")
    cells = np.array(sorted(h3i.cell_to_children(PARENT, 10)), dtype=np.uint64)
    other = np.array(sorted(h3i.cell_to_children(h3i.latlng_to_cell(45.6, 6.3, 6), 10))[:50], dtype=np.uint64)
    cells = np.concatenate([cells, other])
    with s.writer("dofa", kind="backbone", dim=16, provenance={"model": "dofa_small"}) as w:
        w.write(cells, np.random.default_rng(1).normal(size=(len(cells), 16)).astype(np.float32))
    return s


def test_like_embeds_every_cell_centre(store, encoder):
    summary = add_location(store, "geo", like="dofa")
    cells = store.existing_cells("dofa")
    assert summary.written == len(cells) == 2451 and summary.skipped_present == 0
    fm = store.features_numpy("geo", cells)
    assert fm.found.all()
    lat, lng = np.array([h3i.cell_to_latlng(int(c)) for c in cells]).T
    np.testing.assert_allclose(fm.X, encoder.embed(lat, lng), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fm.X, axis=1), 1.0, atol=1e-5)
    spec = store.spec("geo")
    assert spec.kind == "location" and spec.dim == 512
    assert spec.provenance["weights_sha256"] == encoder.provenance["weights_sha256"]
    assert spec.provenance["package_version"] == "1.3.0" and "dofa" in spec.provenance["cells"]
    # Neighbouring cells are closer than cells 50 km away.
    i = int(np.searchsorted(cells, np.uint64(h3i.latlng_to_cell(45.19, 5.72, 10))))
    near = [int(np.searchsorted(cells, np.uint64(n))) for n in h3i.grid_ring(int(cells[i]), 1)]
    assert (fm.X[near] @ fm.X[i]).min() > (fm.X[-50:] @ fm.X[i]).max()
    assert store.verify().ok


def test_region_bbox_then_resume_after_a_limit(store):
    first = add_location(store, "geo", region="5.70,45.15,5.74,45.18", limit=500)
    assert first.written == 500
    rest = add_location(store, "geo", region="5.70,45.15,5.74,45.18")
    assert rest.skipped_present == 500 and rest.written > 0
    cells = store.existing_cells("geo")
    assert len(cells) == 500 + rest.written and len(np.unique(cells)) == len(cells)
    lat, lng = np.array([h3i.cell_to_latlng(int(c)) for c in cells]).T
    assert lat.min() >= 45.15 and lat.max() <= 45.18 and lng.min() >= 5.70 and lng.max() <= 5.74
    again = add_location(store, "geo", region="5.70,45.15,5.74,45.18")
    assert again.written == 0 and again.skipped_present == len(cells)
    assert store.verify().ok


class _StopAfter:
    """A progress reporter whose counter raises after ``n`` partitions: a job killed in the middle."""

    def __init__(self, n: int) -> None:
        self.n = n

    def step(self, message):
        pass

    def warn(self, message):
        pass

    def bar(self, total, unit="it", desc=""):
        outer = self

        class Bar:
            def update(self, k=1):
                outer.n -= k
                if outer.n <= 0:
                    raise KeyboardInterrupt

            def close(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        return Bar()


def test_interrupted_run_keeps_finished_partitions_and_completes(store):
    with pytest.raises(KeyboardInterrupt):
        add_location(store, "geo", like="dofa", progress=_StopAfter(1))
    kept = store.existing_cells("geo")
    assert len(kept) in (50, 2401)  # exactly the first partition, committed
    done = add_location(store, "geo", like="dofa")
    assert done.skipped_present == len(kept) and done.written == 2451 - len(kept)
    assert np.array_equal(store.existing_cells("geo"), store.existing_cells("dofa"))
    assert store.verify().ok


def test_overwrite_replaces_and_other_weights_are_refused(store):
    add_location(store, "geo", region="5.70,45.15,5.72,45.16")
    small = len(store.existing_cells("geo"))
    add_location(store, "geo", like="dofa", overwrite=True)
    assert len(store.existing_cells("geo")) == 2451 > small
    with store.writer("geo_other", kind="location", dim=512,
                      provenance={"model": "geoclip", "weights_sha256": "0" * 64}) as w:
        w.write(store.existing_cells("dofa")[:3], np.ones((3, 512), np.float32))
    with pytest.raises(InvalidInputError, match="weights_sha256"):
        add_location(store, "geo_other", like="dofa")
    assert len(store.existing_cells("geo_other")) == 3


# ---- bad inputs --------------------------------------------------------------------------------------------------


def test_missing_extra_is_one_line_and_writes_nothing(store, cli_runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "geoclip", None)  # as if botaclip[geoclip] were not installed
    with pytest.raises(MissingDependencyError):
        add_location(store, "geo", like="dofa")
    r = cli_runner.invoke(cli, ["store", "add-location", str(store.path), "--name", "geo", "--like", "dofa"])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: --model geoclip needs the geoclip package: pip install 'botaclip[geoclip]' (or pip install "
        "geoclip==1.3.0)"]
    assert "geo" not in Store.open(store.path).feature_sets()


@pytest.mark.parametrize("args,fragment", [
    (["--model", "satclip", "--like", "dofa"], "error: unknown --model 'satclip'; location models: geoclip"),
    (["--like", "dofa", "--region", "sample"], "error: give exactly one of --like"),
    ([], "error: give exactly one of --like"),
    (["--like", "nope"], "error: no feature set 'nope'"),
    (["--region", "5.8,45.1,5.7,45.2"], "error: --region"),
    (["--like", "dofa", "--batch-size", "0"], "error: --batch-size must be a whole number >= 1"),
])
def test_bad_inputs_are_one_line(store, cli_runner, args, fragment):
    r = cli_runner.invoke(cli, ["store", "add-location", str(store.path), "--name", "geo", *args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(fragment), lines
    assert "geo" not in Store.open(store.path).feature_sets()


@pytest.mark.parametrize("options,params", [
    (dict(model="satclip", like="dofa"), ["model"]),
    (dict(like="dofa", region="sample"), ["like", "region"]),
    (dict(), ["like", "region"]),
    (dict(like="dofa", batch_size=0), ["batch_size"]),
    (dict(like="dofa", limit=-1), ["limit"]),
])
def test_bad_options_name_their_parameters(store, options, params):
    with pytest.raises(InvalidInputError) as info:
        add_location(store, "geo", **options)
    assert info.value.params == params
    with pytest.raises(InvalidInputError):
        LocationConfig(**options)


def test_unknown_feature_set_is_refused(store):
    with pytest.raises(InvalidInputError, match="no feature set 'nope'"):
        add_location(store, "geo", like="nope")


def test_like_the_set_being_written_is_refused(store):
    with pytest.raises(InvalidInputError) as info:
        add_location(store, "dofa", like="dofa")
    assert info.value.params == ["like"]


def test_cli_writes_and_reports(store, cli_runner):
    r = cli_runner.invoke(cli, ["store", "add-location", str(store.path), "--name", "geo", "--model", "geoclip",
                                "--like", "dofa", "--batch-size", "1000"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("wrote 2451 cells of 'geo' (geoclip 1.3.0, weights sha256 ")
    info = Store.open(store.path).info("geo")
    assert info["kind"] == "location" and info["rows"] == 2451
