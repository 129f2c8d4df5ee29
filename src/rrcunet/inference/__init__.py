"""Inference: apply a trained model to CT scans and write segmentations, measurements and exports.

Owns the layered prediction path (file → :class:`~rrcunet.io.Volume` → preprocessed tensor →
probabilities → label map on the original grid): :class:`Predictor` (a loaded model; device,
bf16, mirror TTA, MONAI sliding windows), the optional postprocessing
(:func:`postprocess_labels`), the lesion measurements of the prediction JSON
(:func:`measure_lesions`: volume, centroid, RECIST-style longest axial diameter), batch
prediction with resumable outputs (:func:`predict_paths`), the bundled demo models
(:func:`bundled_model_path`) and ONNX / TorchScript export (:mod:`rrcunet.inference.export`).
Usage, outputs and the JSON schema: docs/inference.md.

Example::

    from rrcunet.inference import InferenceConfig, Predictor
    predictor = Predictor.from_file("best.safetensors", config=InferenceConfig(device="auto"))
    report = predictor.predict_paths(["scans/"], "predictions/")
"""

from rrcunet.inference.batch import (
    BatchReport,
    CaseInput,
    CaseOutcome,
    discover_cases,
    predict_case,
    predict_paths,
)
from rrcunet.inference.bundled import BUNDLED_MODELS, bundled_model_path
from rrcunet.inference.config import InferenceConfig, PostprocessConfig
from rrcunet.inference.measure import Lesion, feret_diameter_2d, measure_lesions, tumour_components
from rrcunet.inference.postprocess import RemovedComponent, postprocess_labels
from rrcunet.inference.predictor import (
    NetworkLungExtractor,
    PredictionResult,
    Predictor,
    file_sha256,
    make_lung_extractor,
    resolve_device,
)

__all__ = [
    "NetworkLungExtractor",
    "make_lung_extractor",
    "BUNDLED_MODELS",
    "BatchReport",
    "CaseInput",
    "CaseOutcome",
    "InferenceConfig",
    "Lesion",
    "PostprocessConfig",
    "PredictionResult",
    "Predictor",
    "RemovedComponent",
    "bundled_model_path",
    "discover_cases",
    "feret_diameter_2d",
    "file_sha256",
    "measure_lesions",
    "postprocess_labels",
    "predict_case",
    "predict_paths",
    "resolve_device",
    "tumour_components",
]
