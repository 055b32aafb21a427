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
    """Pinned requirements of the model: MLflow, pandas, skops and the pipeline's libraries.

    The distribution is looked up per module (xgboost may be installed as xgboost-cpu).
    Written out so MLflow does not load the model again to infer them.
    """
    providers = metadata.packages_distributions()
    modules = ["mlflow", "pandas", "numpy", "skops"]
    modules += sorted(pipeline_module_roots(pipeline) - {"gymchurn", "builtins"})
    requirements = []
    for module in modules:
        dists = providers.get(module, [])
        # The distribution named like the module wins (mlflow over mlflow-skinny).
        dist = module if module in dists else (dists[0] if dists else None)
        if dist:
            requirements.append(f"{dist}=={metadata.version(dist)}")
    return sorted(set(requirements))


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
