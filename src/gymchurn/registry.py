"""Registry stage: save pipelines safely, log them as MLflow models, version them with aliases.

Shared by the churn classifier and the segmentation model. Aliases, not stages: a new version
is the `challenger`; promotion moves `champion` (see DESIGN.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
import skops.io as sio
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from gymchurn.errors import GymchurnError

# Distribution names of the modules a pipeline's classes come from, for the model's
# requirements (written out so MLflow does not load the model again to infer them).
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "lightgbm": "lightgbm", "xgboost": "xgboost"}
_ALWAYS_TRUSTED_ROOTS = {"collections"}  # OrderedDict inside LightGBM's sklearn wrapper


def pipeline_module_roots(pipeline) -> set[str]:
    """Top-level packages of every step of a fitted pipeline (and of its final estimator)."""
    roots = {type(pipeline).__module__.split(".")[0]}
    for _, step in getattr(pipeline, "steps", []):
        roots.add(type(step).__module__.split(".")[0])
    return roots


def save_pipeline(pipeline, path: str | Path) -> list[str]:
    """Save with skops and return the types to trust when loading it.

    The list is derived from the fitted pipeline: every type skops does not trust by default
    must come from a package the pipeline's own steps come from; anything else (a lambda, an
    unexpected class) is refused here, before it can reach the registry.
    """
    sio.dump(pipeline, path)
    untrusted = sio.get_untrusted_types(file=path)
    allowed = pipeline_module_roots(pipeline) | _ALWAYS_TRUSTED_ROOTS
    refused = [t for t in untrusted if t.split(".")[0] not in allowed or t.startswith("builtins.")]
    if refused:
        raise GymchurnError(
            f"the pipeline holds types that cannot be saved safely: {refused}. Write "
            "transformers as importable classes or named functions, never lambdas."
        )
    return sorted(untrusted)


def load_pipeline(path: str | Path, trusted_types: list[str]):
    """Load a skops file, trusting only the types recorded when it was saved."""
    return sio.load(path, trusted=list(trusted_types))


def pip_requirements(pipeline) -> list[str]:
    names = ["mlflow", "pandas", "numpy", "skops"]
    names += [_DISTRIBUTIONS[r] for r in sorted(pipeline_module_roots(pipeline)) if r in _DISTRIBUTIONS]
    requirements = []
    for name in names:
        try:
            requirements.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:  # e.g. xgboost installed as xgboost-cpu
            requirements.append(f"{name}=={__import__(name).__version__}")
    return requirements


def log_pipeline_model(
    pipeline,
    model_code: Path,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    model_config: Mapping,
    name: str = "model",
):
    """Log `pipeline` as a pyfunc model defined by the file `model_code` (models from code).

    `output_example` is what the model returns for `input_example`; with it they make the
    model's signature.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.skops"
        trusted = save_pipeline(pipeline, path)
        config = {**model_config, "skops_trusted_types": trusted}
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_code),
            artifacts={"pipeline": str(path)},
            model_config=config,
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            pip_requirements=pip_requirements(pipeline),
        )


def register_version(model_uri: str, name: str, tags: Mapping, alias: str | None):
    """Register `model_uri` as a new version of `name`, tag it, and point `alias` at it."""
    version = mlflow.register_model(
        model_uri, name, tags={k: str(v) for k, v in tags.items()}
    )
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version
