"""Interactive, self-contained HTML map pages of H3 layers (predictions, covariates, embedding components)."""

from botaclip.mapview.layers import MapLayer, parse_layer, pca_layer, store_layer, values_layer
from botaclip.mapview.page import build_map_page, write_map_page

__all__ = ["MapLayer", "pca_layer", "parse_layer", "store_layer", "values_layer", "build_map_page",
           "write_map_page"]
