"""One bounding-box grammar for every command: west,south,east,north in WGS84 degrees, lat/lng swaps refused."""

from __future__ import annotations

import numpy as np
import pytest

from botaclip.errors import InvalidInputError
from botaclip.geo import BBOX_ORDER, is_bbox_text, parse_bbox
from botaclip.imagery.regions import parse_region
from botaclip.sdm.predict import Region as PredictRegion

SWAPPED = "35.6,139.6,35.7,139.8"  # Tokyo written lat,lng (south,west,north,east): south 139.6 is no latitude
HINT = "139.6,35.6,139.8,35.7"  # the same box west,south,east,north


def test_parse_bbox_reads_west_south_east_north():
    assert BBOX_ORDER == "west,south,east,north"
    assert parse_bbox(" 5.7, 45.1 ,5.8,45.2") == (5.7, 45.1, 5.8, 45.2)
    assert is_bbox_text("5.7,45.1,5.8,45.2") and not is_bbox_text("5.7,45.1") and not is_bbox_text("8a1f9e5153affff")


@pytest.mark.parametrize("text", ["1,2,3,x", "10,50,5,60", "5.7,45.1,5.8,95", "200,1,201,2", "5,5,5,6"])
def test_bad_boxes_are_invalid_input(text):
    with pytest.raises(InvalidInputError) as info:
        parse_bbox(text, "within")
    assert info.value.params == ["within"] and isinstance(info.value, ValueError)


def test_swapped_box_is_refused_with_the_swapped_version_as_hint():
    with pytest.raises(InvalidInputError) as info:
        parse_bbox(SWAPPED, "region")
    assert info.value.params == ["region"]
    assert HINT in str(info.value) and BBOX_ORDER in str(info.value)
    assert "\n" not in str(info.value)
    assert parse_bbox(HINT) == (139.6, 35.6, 139.8, 35.7)  # the hint is a valid box


def test_index_and_predict_regions_refuse_a_swapped_box_with_a_hint():
    for parse in (parse_region, PredictRegion):
        with pytest.raises(InvalidInputError) as info:
            parse(SWAPPED)
        assert info.value.params == ["region"] and HINT in str(info.value)
    # the hinted box is accepted by both, and means the same place
    assert parse_region(HINT).geometry.bounds == (139.6, 35.6, 139.8, 35.7)
    import h3.api.basic_int as h3i

    inside, outside = h3i.latlng_to_cell(35.65, 139.7, 9), h3i.latlng_to_cell(35.65, 5.7, 9)
    assert PredictRegion(HINT).mask(np.array([inside, outside], np.uint64)).tolist() == [True, False]
