"""The monthly check: `make monitor input=customers_2026-12.csv` / `python -m gymchurn.monitor`.

check options (input, output folder, rules) -> read the month while the libraries import ->
validate it with the training schema (Churn optional: with it, realised performance) -> load
the judged version and its reference statistics (and the segmentation's) -> the core
(gymchurn.monitoring.month.judge_month) and the call list (gymchurn.reporting.call_list, scored
as `make predict` scores) -> report sections and call_list.csv rendered into a staging folder ->
recorder (a run of `gym-churn-monitoring`: drift metrics also linked to the judged model, the
verdict as a tag, the report as artifacts) -> the output folder replaced in one rename ->
one-screen verdict. The output folder must be new, empty or a previous monitoring report
(checked before any work): any other folder is refused, never replaced.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gymchurn.config import PROJECT_ROOT, hydra_main, resolve_path
from gymchurn.errors import GymchurnError, exit_on_user_error, looked_for

MIN_CUSTOMERS = 20  # fewer and no distribution, decile or interval means anything


def month_name(cfg: DictConfig, source: Path) -> tuple[str, str]:
    """(the month's name as shown, the folder name it gets): name= or the input's stem; the
    folder keeps letters, digits, '.', '_' and '-' (anything else becomes '-')."""
    name = str(cfg.name) if cfg.name else source.stem
    folder = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not folder:
        raise GymchurnError(f"name={name!r} leaves no usable folder name; give name= with letters "
                            "or digits, or output_dir=.")
    return name, folder


def check_options(cfg: DictConfig) -> tuple[Path, str, Path]:
    """Every option a user can get wrong, before the data or the registry is touched."""
    from gymchurn.churn import check_reasons
    from gymchurn.churn.actions import load_catalogue
    from gymchurn.data import file_type
    from gymchurn.monitoring.verdict import check_rules
    from gymchurn.outputs import check_monitoring_folder

    if OmegaConf.is_missing(cfg, "input") or not cfg.input:
        raise GymchurnError("give the month's customers: input=path/to/customers.csv (or .parquet).")
    source = Path(str(cfg.input)).expanduser()
    file_type(source, "input")
    if not source.is_file():
        raise GymchurnError(f"input file not found: {looked_for(source)}. Check the path.")
    name, folder = month_name(cfg, source)
    target = resolve_path(cfg.output_dir) if cfg.output_dir else \
        PROJECT_ROOT / "experiments" / "monitoring" / folder
    target = check_monitoring_folder(target)
    check_rules(OmegaConf.to_container(cfg.rules, resolve=True))
    check_reasons(cfg.reasons)
    load_catalogue(OmegaConf.to_container(cfg.measures))
    return source, name, target


def month_outcomes(raw, X, target: str):
    """The month's Churn column when the file has one, checked to hold leavers and stayers."""
    if target not in raw.columns:
        return None
    churn = X[target]
    if churn.nunique() < 2:
        only = int(churn.iloc[0])
        raise GymchurnError(
            f"the {target} column holds only {only}s: realised performance needs both leavers "
            f"and stayers. Drop the {target} column to check drift only, or use a month with both."
        )
    return churn


def load_reference(cfg: DictConfig):
    """(version, pipeline, reference) of the judged churn model; an error naming the fix when
    the version was logged before monitoring statistics existed."""
    from gymchurn.registry import load_churn_model, resolve_version

    version = resolve_version(cfg.model_name, alias=cfg.alias, version=cfg.version)
    model = load_churn_model(cfg.model_name, version.version)
    reference = (getattr(model, "settings", None) or {}).get("reference")
    if not reference:
        raise GymchurnError(
            f"{cfg.model_name} version {version.version} has no reference statistics (it was "
            "registered before monitoring existed). Register a new version with `make "
            "experiment`, promote it, and monitor again, or give version= of one that has them."
        )
    return version, model.pipeline, reference


def segments_of(cfg: DictConfig, X):
    """(segments per customer, the segmentation's reference shares, a note) or Nones."""
    if not cfg.segmentation.enabled:
        return None, None, "segments off (segmentation.enabled=false)"
    from gymchurn.registry import find_segmentation_model
    from gymchurn.segments.model import assign_segments

    model, note = find_segmentation_model(cfg.segmentation.model_name)
    if model is None:
        return None, None, note
    settings = getattr(model.unwrap_python_model(), "settings", None) or {}
    return assign_segments(model, X), settings.get("reference"), note


def month_call_list(cfg: DictConfig, raw, X, churn, pipeline, reference, segments, labels: dict):
    """Whom to call: the month's customers still members (all of them before outcomes, those
    with Churn = 0 after), riskiest first, with reasons, segment, suggested action and their
    own columns (gymchurn.reporting.call_list), scored as `make predict` scores them."""
    import numpy as np

    from gymchurn.churn.actions import check_catalogue, load_catalogue
    from gymchurn.churn.reasons import REASON_COLUMNS
    from gymchurn.churn.score import score_customers
    from gymchurn.reporting.call_list import ranked_call_list

    catalogue = load_catalogue(OmegaConf.to_container(cfg.measures))
    features = X.drop(columns=[cfg.data.target], errors="ignore")
    check_catalogue(catalogue, features)
    negative = OmegaConf.to_container(cfg.data.negative_labels) \
        if "negative_labels" in cfg.data else {}
    active = np.ones(len(X), bool) if churn is None else churn.to_numpy() == 0
    scores = score_customers(pipeline, float(reference["threshold"]), features[active],
                             features.iloc[:0, :0], cfg.risk_bands, catalogue, cfg.reasons.rows,
                             int(cfg.n_jobs), int(cfg.reason_batch_rows), labels=labels,
                             negative_labels=negative, reason_method=cfg.reasons.method)
    # Back to one entry per row of the table: the list names customers by their row in it.
    proba = np.zeros(len(X))
    proba[active] = scores.table["churn_probability"].to_numpy()
    reasons = [np.full(len(X), None, dtype=object) for _ in REASON_COLUMNS]
    for texts, column in zip(reasons, REASON_COLUMNS, strict=True):
        if column in scores.table:  # none with reasons.rows=none
            texts[active] = scores.table[column].to_numpy()
    names = {} if segments is None else dict(zip(segments["segment"], segments["segment_name"],
                                                 strict=True))
    return ranked_call_list(
        raw.drop(columns=[cfg.data.target], errors="ignore").reset_index(drop=True), active,
        proba, reasons, float(reference["threshold"]),
        None if segments is None else segments["segment"].to_numpy(), names, catalogue)


def run(cfg: DictConfig, printer=print) -> dict:
    started = time.monotonic()
    source, name, target = check_options(cfg)
    from gymchurn.data import read_customers

    with ThreadPoolExecutor(1) as pool:  # read while the heavy libraries import
        reading = pool.submit(read_customers, source, list(cfg.data.columns))
        from gymchurn.data import table_digest, validate_customers
        from gymchurn.monitoring.month import judge_month
        from gymchurn.monitoring.sections import build_sections, calls_section
        from gymchurn.outputs import MONITORING_MARKER, MONITORING_MARKER_TEXT, check_monitoring_folder
        from gymchurn.redact import mask_credentials
        from gymchurn.registry import describe_version, open_registry, version_model_id
        from gymchurn.reporting.render import publish, write_report
        from gymchurn.tracking import RunRecord, record, tracked_run

        open_registry(cfg.tracking, writable=True)  # the check is recorded as a run
        raw = reading.result()  # a bad file fails here, before the model is loaded
    target_col = cfg.data.target
    X, _ = validate_customers(raw, cfg.data.columns, target_col, require_target=False)
    if len(X) < MIN_CUSTOMERS:
        raise GymchurnError(f"{source} holds {len(X)} customers; monitoring needs at least "
                            f"{MIN_CUSTOMERS} to say anything about a month.")
    churn = month_outcomes(raw, X, target_col)
    version, pipeline, reference = load_reference(cfg)
    model_label = describe_version(version)
    printer(f"model:    {model_label}")
    printer(f"month:    {name}: {len(X):,} customers from {source}"
            + (f", {int(churn.sum()):,} leavers known" if churn is not None else ", no outcomes yet"))
    segments, segment_reference, segment_note = segments_of(cfg, X.drop(columns=[target_col],
                                                                        errors="ignore"))
    settings = OmegaConf.to_container(cfg, resolve=True)
    result = judge_month(name, pipeline, reference, X, churn, settings,
                         OmegaConf.to_container(cfg.risk_bands), segments, segment_reference)
    labels = OmegaConf.to_container(cfg.data.labels) if "labels" in cfg.data else {}
    calls = month_call_list(cfg, raw, X, churn, pipeline, reference, segments, labels)
    calls_part = calls_section(calls, float(reference["threshold"]), float(cfg.capacity),
                               int(cfg.call_list_show), churn is not None, model_label)
    sections = build_sections(result, settings, labels, calls_part)
    digest = table_digest(X)
    sources = {"name": name, "note": cfg.note, "n_customers": len(X), "verdict": result.verdict,
               "input": mask_credentials(str(source)), "data_digest": digest, "model": model_label}

    def log(staging: Path):
        tags = {"run_type": "monitoring", "verdict": result.verdict,
                "rules_fired": ",".join(f.rule for f in result.findings) or "none",
                "model_name": cfg.model_name, "model_version": str(version.version),
                "model_aliases": ",".join(sorted(version.aliases or [])),
                "has_outcomes": str(result.has_outcomes).lower(), "data_digest": digest,
                "input": str(source), "segments": segment_note}
        with tracked_run(cfg.tracking, name, tags, experiment=cfg.record_experiment) as run:
            record(RunRecord(
                params={"capacity": cfg.capacity, "psi_watch": cfg.drift.psi_watch,
                        "psi_drift": cfg.drift.psi_drift, "alpha": cfg.drift.alpha,
                        "bootstrap_replicates": cfg.bootstrap.replicates, "seed": cfg.seed},
                metrics=result.metrics(), texts={"config.yaml": OmegaConf.to_yaml(cfg, resolve=True)},
                folders={"report": staging}, model_id=version_model_id(version)))
        return run

    marker = (MONITORING_MARKER, MONITORING_MARKER_TEXT)
    run = publish(target, check_monitoring_folder, lambda staging: write_report(
        sections, sources, staging, template="monitoring", marker=marker), log)
    summary = {"verdict": result.verdict, "findings": result.findings, "result": result,
               "folder": target, "run_id": run.run_id, "experiment_id": run.experiment_id,
               "experiment": cfg.record_experiment, "model": model_label, "name": name,
               "calls": calls_part.numbers, "seconds": time.monotonic() - started}
    printer(summary_text(summary))
    return summary


def summary_text(s: dict) -> str:
    from gymchurn.tracking import ui_hint

    r, line = s["result"], "=" * 78
    rows = [line, f"monitoring {s['name']}: {r.n:,} customers against {s['model']}", line,
            f"VERDICT    {s['verdict'].upper()}"]
    rows += [f"  {f.verdict:<8} {f.rule}: {f.reason}" for f in s["findings"]] or \
        ["  no rule fired"]
    drifted = r.features[r.features["status"] != "ok"]
    rows.append(f"features   {(r.features['status'] == 'drift').sum()} drifted, "
                f"{(r.features['status'] == 'watch').sum()} to watch"
                + (": " + ", ".join(f"{x.feature} {x.psi:.2f}" for x in drifted.head(5).itertuples())
                   if len(drifted) else ""))
    rows.append(f"scores     flagged {r.flagged['now']:.1%} (holdout {r.flagged['then']:.1%}); "
                f"expected leavers {r.leavers['expected']:,.0f}; score PSI {r.scores['psi']:.3f}")
    if r.has_outcomes:
        auc = r.performance.loc["roc_auc"]
        rows.append(f"outcomes   {r.leavers['observed']:,} left; ROC AUC {auc['value']:.3f} "
                    f"(holdout {auc['holdout']:.3f}, expected {auc['expected_low']:.3f}–"
                    f"{auc['expected_high']:.3f} for a month like this)")
    else:
        rows.append("outcomes   none in this file: rerun with the Churn column when known")
    c = s["calls"]
    rows.append(f"calls      {c['active']:,} customers ranked, riskiest first: the first "
                f"{c['calls_possible']:,} fill the calling capacity; {c['at_risk']:,} at risk")
    rows += [f"call list  {s['folder'] / 'call_list.csv'}",
             f"report     {s['folder'] / 'report.html'}  (+ report.md)",
             f"run        {s['run_id']}  (experiment '{s['experiment']}')",
             *ui_hint(s["experiment_id"], s["run_id"]),
             f"time       {s['seconds']:.1f} s", line]
    return "\n".join(rows)


@hydra_main("monitor")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
