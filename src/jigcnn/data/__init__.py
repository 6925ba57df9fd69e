"""Data: file-name labels, label encodings, image loading, synthetic drawings, augmentation, benchmarks."""

from jigcnn.data.drawings import load_drawings, synthetic_folder
from jigcnn.data.images import DEFAULT_SIZE, DataError, ImageSet, load_folder, load_manifest, read_image
from jigcnn.data.labels import (
    GROUP_ORDER,
    PAPER_GROUPS,
    ClassTable,
    all_group_combinations,
    encode,
    encode_one_hot,
    labels_from_names,
    one_hot,
    regression_target,
)
from jigcnn.data.names import DEFAULT_WHO_TABLE, DrawingLabels, FileNameError, WhoIsDrawn, format_name, parse_name

__all__ = [
    "load_drawings", "synthetic_folder",
    "DEFAULT_SIZE", "DataError", "ImageSet", "load_folder", "load_manifest", "read_image",
    "GROUP_ORDER", "PAPER_GROUPS", "ClassTable", "all_group_combinations", "encode", "encode_one_hot",
    "labels_from_names", "one_hot", "regression_target",
    "DEFAULT_WHO_TABLE", "DrawingLabels", "FileNameError", "WhoIsDrawn", "format_name", "parse_name",
]
