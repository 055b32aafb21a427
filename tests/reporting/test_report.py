"""`make report` end to end: registered models in a temp store -> report.html / report.md /
figures -> an MLflow run; the HTML checked as a file and in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from gymchurn import report as report_command
from gymchurn.config import compose_config
from gymchurn.errors import GymchurnError
from gymchurn.outputs import REPORT_MARKER, REPORT_MARKER_TEXT
from gymchurn.tracking import setup_experiment
from tests.lifecycle.helpers import (
    CLASSIFIER,
    copy_store,
    register_segmentation,
    run_module,
    trained_store,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
UMASK = 0o027


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report built by `python -m gymchurn.report` from a store with @champion classifier
    version 1 and a segmentation that has no champion (the report must fall back and say so)."""
    root = trained_store(tmp_path_factory)
    folder = tmp_path_factory.mktemp("report")
    overrides = copy_store(root, folder / "store")
    uri = overrides[-1].split("=", 1)[1]
    mlflow.set_tracking_uri(uri)
    MlflowClient().set_registered_model_alias(CLASSIFIER, "champion", "1")
    customers = pd.read_csv(root / "customers.csv")
    register_segmentation(customers, 3, {"clustered_columns": "Lifetime,Contract_period"})
    mlflow.set_tracking_uri(None)
    # A report as written before the marker existed (experiments/retention-strategy/ as
    # committed): the report must recognise it as its own and replace it.
    out = folder / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old_figure.png").write_bytes(b"\x89PNG old")
    (out / "report.html").write_text("<html>old report</html>")
    (out / "report.md").write_text("# old report")
    # umask 027, not the usual 022: files must get 0666 & ~umask like any new file.
    result = subprocess.run([sys.executable, "-m", "gymchurn.report", *overrides,
                             f"output_dir={out}", "permutation_repeats=2"],
                            capture_output=True, text=True, timeout=900, umask=UMASK)
    return {"result": result, "out": out, "uri": uri}


def test_report_writes_html_markdown_figures_and_an_mlflow_run(report):
    result, out = report["result"], report["out"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gym-churn-classifier version 1 @champion" in result.stdout
    assert "newest version: no @champion yet" in result.stdout  # the segmentation's fallback
    md = (out / "report.md").read_text()
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings == [
        "Summary for the head of customer relations", "1. Who to call",
        "2. How many to call, and what it is worth", "3. Who leaves: groups to target",
        "4. What to try", "5. Caveats", "A. Data at a glance", "B. How well the model predicts",
        "C. What drives churn", "D. Customer portraits (segments)", "E. Measures in detail",
        "F. The model's what-ifs and other patterns"]
    # Page one speaks to people: no run ids, SHAP or log-odds before the appendix.
    main, appendix = md.split("# Appendix: the technical detail")
    assert "SHAP" not in main and "log-odds" not in main and "MLflow" not in main
    assert not re.search(r"\b[0-9a-f]{8,32}\b", main)  # no run ids
    assert "@challenger @champion" not in md  # one alias: the one used
    assert "SHAP" in appendix
    calls = pd.read_csv(out / "call_list.csv")
    assert (calls["priority_rank"] == range(1, len(calls) + 1)).all()
    assert calls["churn_probability"].is_monotonic_decreasing
    # A built feature named in the reasons is defined in the report.
    reasons = " ".join(calls.filter(like="reason_").fillna("").to_numpy().ravel())
    if "this month's visits against the average" in reasons:
        assert "this month's visits against the average is this month's visits per week" in main
    linked = {line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")}
    files = {f"figures/{p.name}" for p in (out / "figures").glob("*.png")}
    assert linked == files and len(files) >= 10
    assert not list(out.parent.glob(".out.*"))  # no staging folder left behind
    assert not (out / "figures" / "old_figure.png").exists()  # the previous report replaced
    assert (out / REPORT_MARKER).read_text() == REPORT_MARKER_TEXT  # the next run may replace it
    assert out.stat().st_mode & 0o777 == 0o777 & ~UMASK == (out / "figures").stat().st_mode & 0o777
    for path in [out / "report.html", out / "report.md", *(out / "figures").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK, path

    mlflow.set_tracking_uri(report["uri"])
    runs = mlflow.search_runs(experiment_names=["gym-churn-report"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["classifier_version"] == "1"
    assert run.data.metrics["data.n_customers"] == 600
    logged = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/figures"} <= logged
    assert run.info.run_id in result.stdout


class _Checker(HTMLParser):
    """Collects what a self-contained, well-formed page must not have."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base"}

    def __init__(self):
        super().__init__()
        self.stack, self.problems, self.images, self.doctype = [], [], [], False

    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link", "iframe", "object", "embed"):
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if value and name in ("src", "href", "srcset", "action", "data") and not (
                    value.startswith("data:") or value.startswith("#")):
                self.problems.append(f"{tag} {name}={value[:60]}")
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if "url(" in data or "@import" in data:
            self.problems.append(f"CSS fetch: {data.strip()[:60]}")


def test_html_is_well_formed_and_self_contained(report):
    html = (report["out"] / "report.html").read_text()
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.doctype and not checker.stack and not checker.problems, checker.problems
    assert len(checker.images) >= 10
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html


def test_a_folder_that_is_not_a_report_is_refused_before_any_work(tmp_path):
    """`make report args="output_dir=mlruns"` once replaced the MLflow store and the Optuna
    study with the report: the store's folder is refused, exit 2, and left exactly as it was."""
    store = tmp_path / "mlruns"
    (store / "artifacts" / "1").mkdir(parents=True)
    (store / "artifacts" / "1" / "model.skops").write_bytes(b"weights")
    (store / "mlflow.db").write_bytes(b"SQLite format 3\0 the runs")
    (store / "optuna.db").write_bytes(b"SQLite format 3\0 a study")
    before = {str(p.relative_to(store)): p.read_bytes() if p.is_file() else None
              for p in store.rglob("*")}
    done = run_module("gymchurn.report", f"tracking.uri=sqlite:///{tmp_path}/other.db",
                      f"output_dir={store}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith(f"error: the output_dir {store} is a folder that is not a "
                                  "previous report"), done.stderr
    assert "artifacts, mlflow.db, optuna.db" in done.stderr and "Traceback" not in done.stderr
    assert {str(p.relative_to(store)): p.read_bytes() if p.is_file() else None
            for p in store.rglob("*")} == before
    # Before any work: no store opened (other.db), no section built, no staging folder.
    assert done.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["mlruns"]


def test_report_without_any_registered_model_says_run_make_experiment(tmp_path, customers_csv):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    setup_experiment({"uri": uri}, "gym-churn")  # a store, but no registered model
    out = tmp_path / "out"
    cfg = compose_config("report", overrides=[
        f"tracking.uri={uri}", f"data.path={customers_csv}", "data.shared_path=null",
        "data.url=null", f"output_dir={out}"])
    with pytest.raises(GymchurnError, match="run `make experiment` first"):
        report_command.run(cfg)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert mlflow.search_runs(experiment_names=["gym-churn-report"]).empty


def test_a_what_if_outside_the_data_rules_is_refused_before_any_work(tmp_path):
    cfg = compose_config("report", overrides=[
        f"tracking.uri=sqlite:///{tmp_path}/none.db", f"output_dir={tmp_path / 'out'}",
        "what_if=[{name: younger, set: {Age: -5}}]",
    ])
    with pytest.raises(GymchurnError, match="what-if 'younger' sets Age=-5"):
        report_command.run(cfg)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a real browser


class DevTools:
    """The least of the Chrome DevTools protocol: send a command, collect events."""

    def __init__(self, ws_url: str):
        import websocket

        # No Origin header: Chromium refuses DevTools connections from an origin it was not
        # told to allow (some builds do, some do not), and a local client has none to give.
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.next_id, self.events = 0, []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            assert time.monotonic() < deadline, f"no {method} in {timeout} s"
            self.events.append(json.loads(self.ws.recv()))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; "
                                              ".ci/run installs it)")
def test_report_renders_in_headless_chromium_without_leaving_the_page(report, tmp_path):
    page_file = (report["out"] / "report.html").resolve()
    profile = tmp_path / "profile"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,2000",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 180
        while not (port_file.exists() and port_file.read_text().strip()):
            assert browser.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        page = None
        while page is None:  # the page target may appear a little after the port file
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=(5, 30)).json()
                page = next((t for t in targets if t["type"] == "page"), None)
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert browser.poll() is None and time.monotonic() < deadline, "no chromium page target"
            if page is None:
                time.sleep(0.2)
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.send("Network.enable")
        tools.send("Page.enable")
        tools.send("Page.navigate", url=page_file.as_uri())
        tools.wait_for("Page.loadEventFired")

        requested = [e["params"]["request"]["url"] for e in tools.events
                     if e.get("method") == "Network.requestWillBeSent"]
        assert requested and all(u.startswith(("file://", "data:")) for u in requested), requested
        images = tools.send("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"))["result"]["value"]
        assert len(images) >= 10 and all(done and width > 0 for done, width in images), images

        shot = tools.send("Page.captureScreenshot", format="png")["data"]
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(shot)), format="png")
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot))
        assert pixels.shape[0] > 500 and pixels.shape[1] > 500
        # Not blank: text and figures give many colours and a spread of brightness.
        assert pixels[..., :3].std() > 0.05
        assert len(np.unique(pixels[..., :3].reshape(-1, 3).round(2), axis=0)) > 50

        # Printed to A4 by the same browser: the main part (before the appendix) fits on at
        # most four pages; the appendix starts on a page of its own.
        def pdf_pages() -> int:
            pdf = base64.b64decode(tools.send("Page.printToPDF", preferCSSPageSize=True,
                                              printBackground=True)["data"])
            assert pdf.startswith(b"%PDF")
            return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))

        whole = pdf_pages()
        tools.send("Runtime.evaluate", expression="document.querySelector('.appendix').remove()")
        main = pdf_pages()
        assert 1 <= main <= 4 and whole > main, (main, whole)
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            browser.kill()
