"""Data: file-name labels, label encodings, image loading, synthetic drawings, augmentation, benchmarks,
standardisation.

Names are imported lazily (PEP 562), so ``python -m jigcnn.data.synth`` and the label helpers
do not pull in JAX.
"""

import importlib

_EXPORTS = {
    "augment": ("AugmentConfig", "augment_batch", "augment_dataset", "augment_dataset_x10", "augment_image",
                "flip_crop", "keras_preset", "paper_preset", "preview", "save_preview_png"),
    "benchmarks": ("CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "ChecksumError", "download", "download_dataset",
                   "load_cifar10", "load_digits", "load_fashion_mnist", "load_mnist"),
    "drawings": ("load_drawings", "synthetic_folder"),
    "images": ("DEFAULT_SIZE", "DataError", "ImageSet", "load_folder", "load_manifest", "read_image"),
    "labels": ("GROUP_ORDER", "PAPER_GROUPS", "ClassTable", "all_group_combinations", "encode", "encode_one_hot",
               "labels_from_names", "one_hot", "regression_target"),
    "names": ("DEFAULT_WHO_TABLE", "DrawingLabels", "FileNameError", "WhoIsDrawn", "format_name", "parse_name"),
    "standardization": ("channel_stats", "standardize"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"jigcnn.data.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jigcnn.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
