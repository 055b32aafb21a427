"""Batch scoring: `make predict input=new_customers.csv output=scores.csv` / `python -m gymchurn.predict`.

read (pyarrow) -> validate with the training schema -> churn probability, flag at the model's
threshold, risk band -> segment (when a segmentation model is registered) -> top-3 reasons
(exact SHAP contributions, for the flagged customers by default) -> write to a temp file and
rename it, so a failed run leaves no partial output.

Columns the model does not use (a customer id, the target if present) are carried through
untouched; CSV columns outside the schema are read as text so an id like 007 stays 007.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from gymchurn.config import CONFIG_DIR, register_resolvers
from gymchurn.errors import GymchurnError, exit_on_user_error
from gymchurn.reasons import (
    REASON_COLUMNS,
    contribution_method,
    contributions,
    model_input,
    top_reasons,
)

# MLflow, skops (which imports all of scikit-learn), Optuna and pandera take seconds to import:
# `score` imports them (gymchurn.registry, .tracking, .data) while the input file is being
# read in another thread, instead of before it.

FILE_TYPES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
REASON_CHOICES = ("flagged", "all", "none")
SCORE_COLUMNS = ["churn_probability", "churn_flag", "risk_band", "segment", "segment_name",
                 *REASON_COLUMNS]


# ---------------------------------------------------------------- options


def file_type(path: Path, what: str) -> str:
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise GymchurnError(
            f"unknown file type '{path.suffix or path.name}' for the {what} {path}: "
            "use a .csv or .parquet file."
        )
    return kind


def output_path(cfg: DictConfig, source: Path) -> Path:
    if cfg.output:
        return Path(str(cfg.output)).expanduser()
    return source.with_name(f"{source.stem}_scores{source.suffix}")


def check_options(cfg: DictConfig) -> tuple[Path, Path]:
    """Every option a user can get wrong, checked before the model or the data is touched."""
    if OmegaConf.is_missing(cfg, "input") or not cfg.input:
        raise GymchurnError("give the customers to score: input=path/to/customers.csv (or .parquet).")
    source = Path(str(cfg.input)).expanduser()
    file_type(source, "input")
    if not source.is_file():
        raise GymchurnError(f"input file not found: {source}. Check the path.")
    target = output_path(cfg, source)
    file_type(target, "output")
    if not target.parent.is_dir():
        raise GymchurnError(f"the output folder {target.parent} does not exist. Create it first.")
    if target.resolve() == source.resolve():
        raise GymchurnError(f"output {target} is the input file; choose another output path.")
    if cfg.reasons not in REASON_CHOICES:
        raise GymchurnError(f"reasons={cfg.reasons} is not an option: use one of {REASON_CHOICES}.")
    return source, target


def band_cuts(risk_bands: Mapping, threshold: float) -> tuple[list[str], np.ndarray]:
    """Band labels and their starting probabilities, `threshold` replaced by the model's."""
    labels, cuts = [], []
    for label, cut in risk_bands.items():
        value = threshold if cut == "threshold" else cut
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise GymchurnError(
                f"risk_bands.{label}={cut}: use a probability between 0 and 1, or `threshold`."
            )
        labels.append(str(label))
        cuts.append(float(value))
    if not labels or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        shown = ", ".join(f"{lab} from {c:.3f}" for lab, c in zip(labels, cuts, strict=True))
        raise GymchurnError(
            f"risk bands must start at increasing probabilities; with this model's threshold "
            f"{threshold:.3f} they are: {shown}. Change risk_bands in conf/predict.yaml."
        )
    return labels, np.asarray(cuts)


def band_index(proba: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Each probability's band (index into the labels): the last band whose cut it reaches; a
    probability below the first cut is in the first band."""
    return np.clip(np.searchsorted(cuts, proba, side="right") - 1, 0, len(cuts) - 1)


# ---------------------------------------------------------------- reading and writing


def read_customers(path: Path, schema_columns: list[str]) -> pd.DataFrame:
    """Read a CSV or Parquet file with pyarrow (multi-threaded); one clear error per failure."""
    kind = file_type(path, "input")
    try:
        if kind == "parquet":
            return pq.read_table(path).to_pandas()
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if not header:
            raise GymchurnError(f"{path} is empty: expected a header row and at least one customer.")
        # Columns outside the schema (ids, notes) are text: carried through exactly as written.
        text = {name: pa.string() for name in header if name not in schema_columns}
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=text))
        return table.to_pandas()
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GymchurnError(
            f"could not read {path} as {kind.upper()}: {first_line}. "
            "Check that the file is a complete table with a header row."
        ) from err


def write_atomically(table: pd.DataFrame, path: Path) -> None:
    """Write to a temp file beside `path`, then rename: readers never see a partial file."""
    kind = file_type(path, "output")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        if kind == "parquet":
            pq.write_table(arrow, tmp)
        else:
            pacsv.write_csv(arrow, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- models


def describe_version(version) -> str:
    tags = version.tags or {}
    aliases = "".join(f" @{a}" for a in sorted(version.aliases or []))
    what = "/".join(tags[k] for k in ("model_family", "feature_set") if k in tags)
    return f"{version.name} version {version.version}{aliases}" + (f" ({what})" if what else "")


def find_segmentation_model(name: str):
    """(pyfunc model, description) of the segmentation model to use, or (None, why not)."""
    from gymchurn.registry import alias_or_newest, load_version

    try:
        version, how = alias_or_newest(name, ("champion", "challenger"))
    except GymchurnError as err:
        return None, f"segment columns left out: {err}"
    return load_version(name, version.version), f"{describe_version(version)} ({how})"


def assign_segments(model, X: pd.DataFrame) -> pd.DataFrame:
    """Segment id and name per customer from the segmentation pyfunc."""
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        doubles = [s.name for s in schema.inputs if str(s.type) in ("double", "DataType.double")]
        X = X.astype({c: "float64" for c in doubles if c in X.columns})
    result = model.predict(X)
    missing = {"segment", "segment_name"} - set(result.columns)
    if missing:
        raise GymchurnError(
            f"the segmentation model returned columns {list(result.columns)}, without "
            f"{sorted(missing)}; re-register it with the current segment_model.py."
        )
    return result[["segment", "segment_name"]].reset_index(drop=True)


# ---------------------------------------------------------------- scoring


def set_threads(estimator, n_jobs: int) -> None:
    """Score with `n_jobs` threads whatever the model was trained with."""
    if "n_jobs" in estimator.get_params():
        estimator.set_params(n_jobs=n_jobs)


def probabilities(estimator, values: np.ndarray, features: pd.DataFrame, n_jobs: int) -> np.ndarray:
    """Churn probability per row. A LightGBM model is asked through its booster (the same
    numbers as `predict_proba`, without scikit-learn's checks of a 1,000,000-row frame)."""
    booster = getattr(estimator, "booster_", None)
    if type(estimator).__module__.startswith("lightgbm") and booster is not None:
        return booster.predict(values, num_threads=n_jobs)
    return estimator.predict_proba(features)[:, 1]


def score(cfg: DictConfig, printer=print) -> dict:
    """Score a file of customers; return the output path, model version, counts and timings."""
    started = time.monotonic()
    source, target_path = check_options(cfg)
    # pyarrow reads (GIL released) while this thread imports the heavy libraries.
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_customers, source, list(cfg.data.columns))
        from gymchurn.data import validate_customers
        from gymchurn.registry import load_fitted_pipeline, open_registry, resolve_version
        from gymchurn.tracking import quiet_libraries

        quiet_libraries()
        open_registry(cfg.tracking)
        version = resolve_version(cfg.model_name, alias=cfg.alias, version=cfg.version)
        t = time.monotonic()
        raw = reading.result()  # the data first: a bad file fails before the model is loaded
    timings = {"read": time.monotonic() - t}  # the part not hidden behind the imports
    t = time.monotonic()
    target = cfg.data.target
    X, extra = validate_customers(raw, cfg.data.columns, target, require_target=False)
    carried = [c for c in raw.columns if c in extra or c == target]
    clashes = sorted(set(carried) & set(SCORE_COLUMNS))
    if clashes:
        raise GymchurnError(
            f"input column(s) {clashes} would be overwritten by the scores; rename them."
        )
    timings["validate"] = time.monotonic() - t

    t = time.monotonic()
    pipeline, threshold = load_fitted_pipeline(cfg.model_name, version.version)
    labels, cuts = band_cuts(cfg.risk_bands, threshold)
    estimator = pipeline[-1]
    method_name, method = contribution_method(estimator) if cfg.reasons != "none" else (None, None)
    set_threads(estimator, int(cfg.n_jobs))
    timings["load_model"] = time.monotonic() - t
    printer(f"model:    {describe_version(version)}, threshold {threshold:.4f}")
    printer(f"input:    {source}: {len(X):,} customers"
            + (f"; carried through untouched: {', '.join(carried)}" if carried else ""))

    t = time.monotonic()
    features = model_input(pipeline, X)
    values = features.to_numpy(dtype=np.float64)  # also the reasons' input
    proba = probabilities(estimator, values, features, int(cfg.n_jobs))
    flag = proba >= threshold
    band = band_index(proba, cuts)
    out = raw[carried].reset_index(drop=True)
    out["churn_probability"] = proba
    out["churn_flag"] = flag.astype(np.int8)
    out["risk_band"] = pd.Categorical.from_codes(band, categories=labels)
    timings["score"] = time.monotonic() - t
    shares = np.bincount(band, minlength=len(labels)) / len(band)
    printer(f"scored:   {int(flag.sum()):,} flagged at risk ({flag.mean():.1%}); bands: "
            + ", ".join(f"{lab} {s:.1%}" for lab, s in zip(labels, shares, strict=True)))

    segment_note = "segments off (segmentation.enabled=false)"
    if cfg.segmentation.enabled:
        t = time.monotonic()
        segment_model, segment_note = find_segmentation_model(cfg.segmentation.model_name)
        if segment_model is not None:
            segments = assign_segments(segment_model, X.drop(columns=[target], errors="ignore"))
            out["segment"] = segments["segment"].to_numpy()
            out["segment_name"] = segments["segment_name"].to_numpy()
        timings["segments"] = time.monotonic() - t
    printer(f"segments: {segment_note}")

    n_reasons = 0
    if cfg.reasons != "none":
        t = time.monotonic()
        rows = np.flatnonzero(flag) if cfg.reasons == "flagged" else np.arange(len(X))
        n_reasons = len(rows)
        texts = [[]] * len(REASON_COLUMNS)
        if n_reasons:
            chosen = pd.DataFrame(values[rows], columns=features.columns)
            effects = contributions(
                method, chosen, n_jobs=int(cfg.n_jobs), batch_rows=int(cfg.reason_batch_rows),
                progress=lambda done, total: printer(f"          reasons {done:,}/{total:,}"),
            )
            texts = top_reasons(effects, chosen)
        for column, column_texts in zip(REASON_COLUMNS, texts, strict=True):
            filled = np.full(len(out), None, dtype=object)
            filled[rows] = column_texts
            out[column] = filled
        timings["reasons"] = time.monotonic() - t
        printer(f"reasons:  top {len(REASON_COLUMNS)} for {n_reasons:,} {cfg.reasons} customers "
                f"({method_name}, {cfg.n_jobs} threads) in {timings['reasons']:.1f} s")

    t = time.monotonic()
    write_atomically(out, target_path)
    timings["write"] = time.monotonic() - t
    timings["total"] = time.monotonic() - started
    printer(f"output:   {target_path} ({len(out):,} rows, {len(out.columns)} columns) in "
            f"{timings['total']:.1f} s ("
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timings.items()
                        if k != "total") + ")")
    return {
        "output": target_path, "model_name": cfg.model_name, "version": version.version,
        "threshold": threshold, "n_rows": len(out), "n_flagged": int(flag.sum()),
        "n_reasons": n_reasons, "columns": list(out.columns), "timings": timings,
    }


register_resolvers()


@hydra.main(config_path=str(CONFIG_DIR), config_name="predict", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    score(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
