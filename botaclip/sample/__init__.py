"""The built-in sample region: a deterministic synthetic alpine landscape with known habitats and species.

It writes a 4-band orthophoto, a DEM, a habitat map, relevés, butterfly records, soil-fauna counts and the true
suitability of every taxon on H3 cells, so every other part of botaclip can be run and scored without
downloading anything. See ``docs/sample.md``.

>>> from botaclip.sample import make_sample
>>> region = make_sample("sample-out", seed=0, size_km=1.0, plots=200)  # doctest: +SKIP
>>> region.ortho  # doctest: +SKIP
PosixPath('sample-out/ortho.tif')
"""

from botaclip.sample.make import ensure_sample, make_sample
from botaclip.sample.region import SampleRegion, default_sample_dir

__all__ = ["SampleRegion", "default_sample_dir", "ensure_sample", "make_sample"]
