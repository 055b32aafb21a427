"""Retention-strategy report: `make report` / `python -m gymchurn.report`.

compose config -> open the registry -> gymchurn.reporting.build (the five sections from both
@champion models and the customer table) -> render into a staging folder (report.html,
report.md, figures/) -> recorder (a run of `gym-churn-report` with the folder as artifacts)
-> the output folder replaced in one rename, so a failed run leaves the previous report as it
was -> one-screen summary. `output_dir` must be new, empty or a previous report (checked before
any work, gymchurn.outputs): any other folder is refused, never replaced.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from gymchurn.config import hydra_main, resolve_path
from gymchurn.errors import exit_on_user_error


def run(cfg: DictConfig, printer=print) -> dict:
    from gymchurn.outputs import check_report_folder

    started = time.monotonic()
    # Before any work (and the seconds of imports): the folder is replaced as a whole, so it
    # must be new, empty or a previous report.
    target = check_report_folder(Path(resolve_path(cfg.output_dir)))
    from gymchurn.registry import open_registry
    from gymchurn.reporting.build import build_sections, check_scenarios
    from gymchurn.reporting.render import headline_metrics, publish, write_report
    from gymchurn.tracking import RunRecord, record, tracked_run

    check_scenarios(cfg)  # a bad what-if is refused before any work
    open_registry(cfg.tracking, writable=True)  # the report is recorded as a run
    sections, sources = build_sections(cfg, printer)

    def log(staging: Path):
        tags = {"run_type": "report", "classifier_version": str(sources["classifier_version"]),
                "segmentation_version": str(sources["segmentation_version"]),
                "data_digest": sources["data_digest"]}
        with tracked_run(cfg.tracking, "retention-strategy", tags,
                         experiment=cfg.record_experiment) as run:
            record(RunRecord(params={"classifier": sources["classifier"],
                                     "segmentation": sources["segmentation"]},
                             metrics=headline_metrics(sections), folders={"report": staging}))
        return run

    run = publish(target, check_report_folder,
                  lambda staging: write_report(sections, sources, staging), log)
    result = {"run_id": run.run_id, "experiment_id": run.experiment_id, "folder": target,
              "experiment": cfg.record_experiment,
              "seconds": time.monotonic() - started, "sections": sections, "sources": sources}
    printer(summary_text(result))
    return result


def summary_text(result: dict) -> str:
    from gymchurn.tracking import ui_hint

    folder = result["folder"]
    return "\n".join([
        "", "=" * 72, "retention-strategy report", "-" * 72,
        f"models     {result['sources']['classifier']}",
        f"           {result['sources']['segmentation']}",
        f"html       {folder / 'report.html'}   (self-contained: open it in any browser)",
        f"markdown   {folder / 'report.md'}   (+ figures/)",
        f"run        {result['run_id']}  (experiment '{result['experiment']}')",
        *ui_hint(result["experiment_id"], result["run_id"]),
        f"time       {result['seconds']:.1f} s", "=" * 72,
    ])


@hydra_main("report")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
