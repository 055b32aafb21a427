"""Retention-strategy report: `make report` / `python -m gymchurn.report`.

registry (@champion of the churn classifier and the segmentation, else their newest versions)
-> the customer table -> the five sections of gymchurn.report_sections -> report.html
(self-contained: figures embedded), report.md + figures/*.png -> an MLflow run of
`gym-churn-report` -> the output folder, replaced in one rename so a failed run leaves the
previous report as it was.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import hydra
import jinja2
import markupsafe
import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gymchurn.compare import leaderboard
from gymchurn.config import CONFIG_DIR, register_resolvers, resolve_path
from gymchurn.data import feature_columns, load_customers, split_holdout, table_digest
from gymchurn.errors import GymchurnError, exit_on_user_error
from gymchurn.predict import assign_segments, band_cuts, describe_version
from gymchurn.registry import alias_or_newest, load_fitted_pipeline, load_version, open_registry
from gymchurn.report_sections import (
    Figure,
    Section,
    Table,
    Text,
    churn_drivers,
    customer_portraits,
    data_overview,
    model_performance,
    plt,
    recommendations,
)
from gymchurn.tracking import git_commit, quiet_libraries, setup_experiment, ui_hint

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gymchurn", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)


# ---------------------------------------------------------------- inputs


def find_model(name: str, alias: str, kind: str, command: str):
    """(ModelVersion, how it was chosen), or an error saying which command registers one."""
    try:
        return alias_or_newest(name, (alias,))
    except GymchurnError as err:
        raise GymchurnError(
            f"the report needs a registered {kind} ('{name}') and there is none: run `{command}` "
            f"first. ({err})"
        ) from None


def check_scenarios(cfg: DictConfig) -> None:
    """Each what-if sets known columns to values conf/data/gym.yaml allows."""
    columns = cfg.data.columns
    for scenario in cfg.what_if:
        for column, value in scenario.set.items():
            rule = columns.get(column)
            allowed = rule is not None and column != cfg.data.target and (
                value in rule["values"] if rule.get("values") else rule.min <= value <= rule.max)
            if not allowed:
                raise GymchurnError(
                    f"what-if '{scenario.name}' sets {column}={value}, which the data rules do not "
                    "allow (conf/data/gym.yaml). Fix `what_if` in conf/report.yaml."
                )


def holdout_split(cfg: DictConfig, df: pd.DataFrame, version, digest: str):
    """The classifier version's own holdout (its recorded split seed and size) and a note."""
    tags = version.tags or {}
    seed = int(tags.get("split_seed", cfg.holdout.seed))
    size = float(tags.get("test_size", cfg.holdout.test_size))
    _, X_test, _, y_test = split_holdout(df, cfg.data, size, seed)
    if tags.get("data_digest") == digest and "split_seed" in tags:
        note = (f"Its holdout is re-drawn exactly as in training (split seed {seed}, "
                f"{size:.0%} of the table): customers the model never saw.")
    else:
        note = (f"It was trained on another table or did not record its split, so this holdout "
                f"(split seed {seed}, {size:.0%}) may include customers it trained on: read its "
                "metrics as optimistic.")
    return X_test, y_test, note


def family_runs(version, digest: str) -> pd.DataFrame | None:
    """Each family's best run (by CV) on this table, from the champion's MLflow experiment."""
    run_id = (version.tags or {}).get("run_id") or version.run_id
    if not run_id:
        return None
    run = mlflow.get_run(run_id)
    return leaderboard(run.info.experiment_id, digest, run.data.tags.get("tuned_metric", "roc_auc"))


def segment_labels(name: str, version, customers: pd.DataFrame, columns) -> tuple:
    """(labels, names, clustered columns) of the segmentation version for every customer."""
    assigned = assign_segments(load_version(name, version.version), customers[columns])
    names = dict(zip(assigned["segment"].astype(int), assigned["segment_name"], strict=True))
    clustered = [c for c in (version.tags or {}).get("clustered_columns", "").split(",") if c]
    return assigned["segment"].to_numpy(), names, clustered


# ---------------------------------------------------------------- building


def build_sections(cfg: DictConfig, printer=print) -> tuple[list[Section], dict]:
    """Every section of the report, and what it was built from."""
    check_scenarios(cfg)
    open_registry(cfg.tracking)
    churn_version, churn_how = find_model(cfg.classifier, cfg.alias, "churn model",
                                          "make experiment")
    segment_version, segment_how = find_model(cfg.segmentation, cfg.alias, "segmentation",
                                              "make segment")
    for version, how in ((churn_version, churn_how), (segment_version, segment_how)):
        printer(f"using {describe_version(version)}: {how}")

    df, _ = load_customers(cfg.data)
    digest = table_digest(df)
    target, columns = cfg.data.target, feature_columns(cfg.data)
    pipeline, threshold = load_fitted_pipeline(cfg.classifier, churn_version.version)
    X_test, y_test, holdout_note = holdout_split(cfg, df, churn_version, digest)
    labels, names, clustered = segment_labels(cfg.segmentation, segment_version, df, columns)
    phrases = OmegaConf.to_container(cfg.data.phrases) if "phrases" in cfg.data else {}
    data_columns = OmegaConf.to_container(cfg.data.columns)
    bands, cuts = band_cuts(cfg.risk_bands, threshold)

    champion = f"{describe_version(churn_version)}, {churn_how}"
    sections = []
    timed = time.monotonic()

    def done(section: Section) -> Section:
        nonlocal timed
        printer(f"  {section.title:<28} {time.monotonic() - timed:5.1f} s")
        timed = time.monotonic()
        sections.append(section)
        return section

    proba = pipeline.predict_proba(df[columns])[:, 1]  # every customer: sections 2 and 5
    overview = done(data_overview(df, target, data_columns, float(cfg.strong_correlation)))
    done(model_performance(pipeline, threshold, X_test, y_test, proba, champion,
                           holdout_note, family_runs(churn_version, digest)))
    drivers = done(churn_drivers(
        pipeline, X_test, y_test, df, target, data_columns, phrases,
        OmegaConf.to_container(cfg.patterns), int(cfg.top_drivers), int(cfg.permutation_repeats),
        int(cfg.seed)))
    done(customer_portraits(df, target, labels, names, clustered, phrases,
                            f"{describe_version(segment_version)}, {segment_how}",
                            int(cfg.portrait_features)))
    done(recommendations(
        pipeline, threshold, df, proba, target, columns, labels, names, bands, cuts,
        OmegaConf.to_container(cfg.what_if), drivers.numbers["permutation_importance"],
        overview.numbers["strong_pairs"], int(cfg.target_groups), float(cfg.min_drop),
        float(cfg.negligible_importance)))
    sources = {
        "classifier": f"{cfg.classifier} v{churn_version.version}, {churn_how}",
        "segmentation": f"{cfg.segmentation} v{segment_version.version}, {segment_how}",
        "classifier_version": churn_version.version, "segmentation_version": segment_version.version,
        "data_digest": digest, "n_customers": len(df),
    }
    return sections, sources


# ---------------------------------------------------------------- rendering


def png_bytes(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def strong_html(text: str) -> markupsafe.Markup:
    """Escape `text`, then turn its **bold** marks into <strong> (the only markup sentences use)."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped))


def render(sections: list[Section], sources: Mapping, figures: Mapping[str, bytes]) -> tuple[str, str]:
    """(report.html, report.md) of the sections; `figures` maps a figure name to its PNG."""
    html_blocks, md_blocks = [], []
    for section in sections:
        html, md = [], []
        for block in section.blocks:
            if isinstance(block, Text):
                html.append(("text", strong_html(block.text)))
                md.append(block.text)
            elif isinstance(block, Table):
                html.append(("table", block.caption, markupsafe.Markup(
                    block.frame.to_html(index=False, border=0, escape=True))))
                md.append(f"*{block.caption}*\n\n{markdown_table(block.frame)}")
            elif isinstance(block, Figure):
                data = base64.b64encode(figures[block.name]).decode("ascii")
                html.append(("figure", block.caption, f"data:image/png;base64,{data}"))
                md.append(f"![{block.caption}](figures/{block.name}.png)\n\n*{block.caption}*")
        html_blocks.append((section.title, html))
        md_blocks.append((section.title, md))
    context = {"sources": sources,
               "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    return (TEMPLATES.get_template("report.html.j2").render(sections=html_blocks, **context),
            TEMPLATES.get_template("report.md.j2").render(sections=md_blocks, **context))


def write_report(sections: list[Section], sources: Mapping, folder: Path) -> None:
    """report.html, report.md and figures/*.png into `folder` (which must exist)."""
    figures = {}
    (folder / "figures").mkdir()
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Figure):
                figures[block.name] = png_bytes(block.figure)
                (folder / "figures" / f"{block.name}.png").write_bytes(figures[block.name])
    html, md = render(sections, sources, figures)
    (folder / "report.html").write_text(html, encoding="utf-8")
    (folder / "report.md").write_text(md, encoding="utf-8")


def replace_folder(new: Path, target: Path) -> None:
    """Put `new` where `target` is, by renames: a reader sees the old report or the new one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old)


def headline_metrics(sections: list[Section]) -> dict[str, float]:
    """The sections' scalar numbers, for the MLflow run (nested values stay in the report)."""
    return {f"{s.key}.{k}": float(v) for s in sections for k, v in s.numbers.items()
            if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)}


def make_report(cfg: DictConfig, printer=print) -> dict:
    started = time.monotonic()
    quiet_libraries()
    target = Path(resolve_path(cfg.output_dir))
    sections, sources = build_sections(cfg, printer)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the report is for everyone to read
    try:
        write_report(sections, sources, staging)
        experiment_id = setup_experiment(cfg.tracking, cfg.record_experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name="retention-strategy", tags={
            "run_type": "report", "classifier_version": str(sources["classifier_version"]),
            "segmentation_version": str(sources["segmentation_version"]),
            "data_digest": sources["data_digest"], "git_commit": git_commit(),
        }) as run:
            mlflow.log_params({"classifier": sources["classifier"],
                               "segmentation": sources["segmentation"]})
            mlflow.log_metrics(headline_metrics(sections))
            mlflow.log_artifacts(str(staging), "report")
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    result = {"run_id": run.info.run_id, "experiment_id": experiment_id, "folder": target,
              "experiment": cfg.record_experiment,
              "seconds": time.monotonic() - started, "sections": sections, "sources": sources}
    print_summary(result, printer)
    return result


def print_summary(result: Mapping, printer=print) -> None:
    folder = result["folder"]
    rows = [
        "", "=" * 72, "retention-strategy report", "-" * 72,
        f"models     {result['sources']['classifier']}",
        f"           {result['sources']['segmentation']}",
        f"html       {folder / 'report.html'}   (self-contained: open it in any browser)",
        f"markdown   {folder / 'report.md'}   (+ figures/)",
        f"run        {result['run_id']}  (experiment '{result['experiment']}')",
        *ui_hint(result["experiment_id"], result["run_id"]),
        f"time       {result['seconds']:.1f} s", "=" * 72,
    ]
    printer("\n".join(rows))


register_resolvers()


@hydra.main(config_path=str(CONFIG_DIR), config_name="report", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    make_report(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
