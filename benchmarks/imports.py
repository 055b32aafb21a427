"""Start-up cost of each command: what importing it costs, against the third-party libraries it
truly needs. `python benchmarks/imports.py [--runs N]` prints the table; `make bench` includes
it in experiments/benchmarks.md.

For each command, three imports are timed, each in a fresh interpreter (median of N runs, after
one warm-up so the OS file cache and __pycache__ are filled):
- the entrypoint module alone (`import gymchurn.report`): what `--help`, a bad override or a
  bad option pays before it is refused;
- everything the command imports when it runs: its entrypoint, the gymchurn modules its
  `run()` imports, and the libraries they import later, inside the functions that need them
  (pandera when the table is validated, the model family's library when the pipeline is built,
  shap when the report explains the model);
- those third-party libraries alone (every one of their modules the run loaded): the floor no
  restructuring of ours can go below.
The ratio of the last two is the target: within 1.2x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

# What each command's run() imports (see src/gymchurn/<command>.py), and the libraries imported
# later inside functions on its usual path.
COMMANDS = {
    "experiment": (["gymchurn.experiment", "gymchurn.churn.fit", "gymchurn.data", "gymchurn.tracking",
                    "gymchurn.tuning", "gymchurn.plots", "gymchurn.registry"],
                   ["pandera.pandas", "lightgbm", "mlflow.pyfunc"]),
    "segment": (["gymchurn.segment", "gymchurn.segments.fit", "gymchurn.segments.figures",
                 "gymchurn.segments.portraits", "gymchurn.segments.selection", "gymchurn.data",
                 "gymchurn.tracking", "gymchurn.registry"],
                ["pandera.pandas", "mlflow.pyfunc"]),
    "promote": (["gymchurn.promote", "gymchurn.lifecycle.promotion", "gymchurn.registry"],
                ["mlflow.pyfunc"]),
    "predict": (["gymchurn.predict", "gymchurn.churn.score", "gymchurn.data", "gymchurn.registry",
                 "gymchurn.segments.model"],
                ["pandera.pandas", "lightgbm", "mlflow.pyfunc"]),
    "report": (["gymchurn.report", "gymchurn.reporting.build", "gymchurn.reporting.render",
                "gymchurn.registry", "gymchurn.tracking"],
               ["pandera.pandas", "lightgbm", "mlflow.pyfunc", "shap"]),
    "monitor": (["gymchurn.monitor", "gymchurn.data", "gymchurn.monitoring.month",
                 "gymchurn.monitoring.sections", "gymchurn.monitoring.figures", "gymchurn.outputs",
                 "gymchurn.registry", "gymchurn.reporting.render", "gymchurn.tracking",
                 "gymchurn.segments.model"],
                ["pandera.pandas", "lightgbm", "mlflow.pyfunc", "scipy.stats"]),
}
# Top-level packages that count as "third-party libraries a command needs" when they appear.
LIBRARIES = ["hydra", "omegaconf", "numpy", "pandas", "pyarrow", "pandera", "sklearn", "scipy",
             "optuna", "sqlalchemy", "mlflow", "skops", "matplotlib", "jinja2", "lightgbm",
             "xgboost", "shap", "numba", "threadpoolctl"]


def third_party(modules: list[str]) -> list[str]:
    """Every module of the LIBRARIES that importing `modules` loads (submodules included, in
    load order): importing exactly these is the cost of the libraries, without our code."""
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {LIBRARIES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def timed_import(modules: list[str], runs: int) -> dict:
    """Median, min and max wall time of importing `modules` in a fresh process each time (a
    module that cannot be imported on its own, e.g. a private one, is skipped)."""
    code = ("import importlib\n"
            f"for m in {modules!r}:\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except Exception:\n        pass\n")
    command = [sys.executable, "-c", code]
    subprocess.run(command, check=True, capture_output=True)  # warm-up: file cache, __pycache__
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def measure(runs: int = 7, say=print, commands: dict | None = None) -> dict:
    """Timings of `commands` (name -> (our modules, libraries imported later); default COMMANDS)."""
    out = {"floor": timed_import(["sys"], runs), "commands": {}}
    for command, (ours, later) in (COMMANDS if commands is None else commands).items():
        say(f"imports: {command} ...")
        needed = third_party(ours + later)
        out["commands"][command] = {
            "entry": timed_import([ours[0]], runs),
            "run": timed_import(ours + later, runs),
            "libraries": timed_import(needed, runs),
            "needed": [m for m in LIBRARIES if m in needed],
        }
    return out


def markdown(m: dict, runs: int) -> list[str]:
    lines = [
        "| command | `import gymchurn.<command>` | everything it imports to run | the third-party "
        "libraries it needs, alone | ratio | libraries |",
        "|---|---|---|---|---|---|",
    ]
    for command, r in m["commands"].items():
        ratio = r["run"]["median"] / r["libraries"]["median"]
        lines.append(f"| {command} | {r['entry']['median']:.2f} s | {r['run']['median']:.2f} s | "
                     f"{r['libraries']['median']:.2f} s | {ratio:.2f}× | {', '.join(r['needed'])} |")
    lines += ["", f"Median of {runs} fresh interpreters each (after one warm-up); `python -c pass` "
              f"takes {m['floor']['median']:.2f} s."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("\n".join(markdown(measure(args.runs), args.runs)))


if __name__ == "__main__":
    main()
