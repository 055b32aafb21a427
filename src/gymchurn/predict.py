"""Batch scoring: `make predict input=new_customers.csv output=scores.csv` / `python -m gymchurn.predict`.

check options and the measures catalogue's shape -> read the file (gymchurn.data.read_customers)
-> validate with the training schema -> check the catalogue's conditions on the columns -> find
the version in the registry -> load the champion -> gymchurn.churn.score (priority rank,
probability, flag, risk band, segment, reasons in words, suggested action) -> write to a temp
file and rename it, so a failed run leaves no partial output. An existing output is replaced
only when it is a previous scores file (gymchurn.outputs, checked before any work): anyone
else's file is left alone.

Columns the model does not use (a customer id, the target if present) are carried through
untouched; CSV columns outside the schema are read as text so an id like 007 stays 007.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gymchurn.churn import check_reasons
from gymchurn.config import hydra_main
from gymchurn.errors import GymchurnError, exit_on_user_error, looked_for


def check_output(target: Path) -> Path:
    """A new file, an empty one or a previous scores output (gymchurn.outputs): anything else at
    that path is someone's data and is left alone."""
    from gymchurn.outputs import check_file, is_scores_file

    return check_file(target, "output", is_scores_file, "a scores file written by `make predict` "
               "(its last columns are priority_rank, churn_probability, ..., suggested_action)")


def check_options(cfg: DictConfig) -> tuple[Path, Path]:
    """Every option a user can get wrong, checked before the model or the data is touched (the
    catalogue's conditions need the columns: `run` checks them once the file is read)."""
    from gymchurn.churn.actions import load_catalogue
    from gymchurn.data import file_type

    if OmegaConf.is_missing(cfg, "input") or not cfg.input:
        raise GymchurnError("give the customers to score: input=path/to/customers.csv (or .parquet).")
    source = Path(str(cfg.input)).expanduser()
    file_type(source, "input")
    if not source.is_file():
        raise GymchurnError(f"input file not found: {looked_for(source)}. Check the path.")
    target = Path(str(cfg.output)).expanduser() if cfg.output else \
        source.with_name(f"{source.stem}_scores{source.suffix}")
    if target.resolve() == source.resolve():
        raise GymchurnError(f"output {target} is the input file; choose another output path.")
    target = check_output(target)
    file_type(target, "output")
    if not target.parent.is_dir():
        raise GymchurnError(f"the output folder {target.parent} does not exist. Create it first.")
    check_reasons(cfg.reasons)
    load_catalogue(OmegaConf.to_container(cfg.measures))
    return source, target


def import_model_libraries() -> None:
    """MLflow, scikit-learn and skops: seconds of imports, needed from the registry on."""
    import gymchurn.registry  # noqa: F401
    import gymchurn.segments.model  # noqa: F401


def run(cfg: DictConfig, printer=print) -> dict:
    """Score a file of customers; return the output path, model version, counts and timings."""
    started = time.monotonic()
    source, target_path = check_options(cfg)
    from gymchurn.churn.actions import check_catalogue, load_catalogue
    from gymchurn.churn.score import SCORE_COLUMNS, score_customers
    from gymchurn.data import read_customers, validate_customers, write_table

    # pyarrow reads in a thread (GIL released) while this one imports validation's library. A
    # small file is read by then: a bad one is refused before the model libraries import
    # (seconds). A large one is still being read: they import meanwhile.
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_customers, source, list(cfg.data.columns))
        import pandera.pandas  # noqa: F401

        if not reading.done():
            import_model_libraries()
        t = time.monotonic()
        raw = reading.result()
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
    catalogue = load_catalogue(OmegaConf.to_container(cfg.measures))
    check_catalogue(catalogue, X)  # a bad condition stops here, before the model is loaded
    timings["validate"] = time.monotonic() - t

    # The data first, then the registry: a bad file fails before MLflow opens the store.
    from gymchurn.registry import (
        describe_version,
        find_segmentation_model,
        load_fitted_pipeline,
        open_registry,
        resolve_version,
    )

    open_registry(cfg.tracking)
    version = resolve_version(cfg.model_name, alias=cfg.alias, version=cfg.version)
    t = time.monotonic()
    pipeline, threshold = load_fitted_pipeline(cfg.model_name, version.version)
    timings["load_model"] = time.monotonic() - t
    printer(f"model:    {describe_version(version)}, threshold {threshold:.4f}")
    printer(f"input:    {source}: {len(X):,} customers"
            + (f"; carried through untouched: {', '.join(carried)}" if carried else ""))

    segments, segment_note = None, "segments off (segmentation.enabled=false)"
    if cfg.segmentation.enabled:
        t = time.monotonic()
        segment_model, segment_note = find_segmentation_model(cfg.segmentation.model_name)
        if segment_model is not None:
            from gymchurn.segments.model import assign_segments
            segments = assign_segments(segment_model, X.drop(columns=[target], errors="ignore"))
        timings["segments"] = time.monotonic() - t
    labels = OmegaConf.to_container(cfg.data.labels) if "labels" in cfg.data else {}
    negative = OmegaConf.to_container(cfg.data.negative_labels) if "negative_labels" in cfg.data else {}
    scores = score_customers(pipeline, threshold, X, raw[carried], cfg.risk_bands, catalogue,
                             cfg.reasons.rows, int(cfg.n_jobs), int(cfg.reason_batch_rows),
                             segments, labels, printer, negative_labels=negative,
                             reason_method=cfg.reasons.method)
    timings.update(scores.timings)
    printer(f"scored:   {scores.n_flagged:,} flagged at risk ({scores.n_flagged / len(X):.1%}); "
            "bands: " + ", ".join(f"{lab} {s:.1%}" for lab, s in scores.band_shares.items()))
    printer(f"segments: {segment_note}")
    if cfg.reasons.rows != "none":
        printer(f"reasons:  top 3 for {scores.n_reasons:,} {cfg.reasons.rows} customers "
                f"({scores.reason_method}, {cfg.n_jobs} threads) in {timings['reasons']:.1f} s")
    printer("actions:  " + ", ".join(f"{name} {share:.1%}" for name, share in sorted(
        scores.action_shares.items(), key=lambda item: -item[1])) + " (conf/measures/)")

    t = time.monotonic()
    out = scores.table
    check_output(target_path)  # again: the path may have been taken while the customers were scored
    write_table(out, target_path)
    timings["write"] = time.monotonic() - t
    timings["total"] = time.monotonic() - started
    printer(f"output:   {target_path} ({len(out):,} rows, {len(out.columns)} columns) in "
            f"{timings['total']:.1f} s ("
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timings.items()
                        if k != "total") + ")")
    return {
        "output": target_path, "model_name": cfg.model_name, "version": version.version,
        "threshold": threshold, "n_rows": len(out), "n_flagged": scores.n_flagged,
        "n_reasons": scores.n_reasons, "columns": list(out.columns), "timings": timings,
    }


@hydra_main("predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
