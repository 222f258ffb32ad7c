"""Using a trained model without its training data: ``load_run`` a run folder, ``read_inputs`` files, ``predict``."""

from ..data.preprocess import Prediction, Preprocessing
from ._export import ExportCheckFailed, ExportError, ExportResult, ExportUnsupported, export
from ._inputs import Inputs, read_inputs
from ._onnx import OnnxRun, load_onnx
from ._output import prediction_rows
from ._run import LoadedRun, load_run, resolve_run_dir
from ._serve import create_app, serve

__all__ = ["Inputs", "LoadedRun", "Prediction", "Preprocessing", "load_run", "prediction_rows", "read_inputs",
           "resolve_run_dir"]
__all__ += ["ExportCheckFailed", "ExportError", "ExportResult", "ExportUnsupported", "OnnxRun", "export",
            "load_onnx"]
__all__ += ["create_app", "serve"]
