"""CLI commands of the build pipeline, as named in the ``edgeline`` command table."""

from converters.cli_dataset import dataset
from converters.cli_import import import_onnx
from converters.cli_train import train

__all__ = ["dataset", "import_onnx", "train"]
