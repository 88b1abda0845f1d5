"""Deployments for real: the local stack of `codealign stack` (infra/local_stack.py) (a `prefect server start` on
127.0.0.1, a process work pool with its worker, a Ray head) and the deployments of
deployments/deploy.py.  Runs are started and retried through the REST API exactly as the
UI's buttons do (POST /deployments/{id}/create_flow_run; Retry = set_state AwaitingRetry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from servers import free_port, start_with_retries
from toy_checkpoints import make_checkpoints

from codealign.tasks.artifacts import runs
from codealign.tasks.artifacts.store import ArtifactStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CHROMIUM = "/usr/bin/chromium"  # Debian's package (Playwright cannot download its own browsers here)
ARTIFACTS = REPO / "out" / "test-artifacts"  # kept after the run: the browser's screenshot


class RetryUnavailable(httpx.HTTPTransport):
    """Prefect's server answers 503 when its database is momentarily busy (SQLite on a loaded
    2-core machine; CI saw it once on create_flow_run): such a request was not carried out and
    is sent again, as Prefect's own client does.  A read (GET, or a POST to a ``/filter``
    endpoint) that timed out while a sweep kept the server busy is sent again too.  Any other
    answer is returned as it is."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        reads = request.method == "GET" or request.url.path.endswith("/filter")
        for attempt in range(6):
            try:
                response = super().handle_request(request)
            except httpx.ReadTimeout:
                if not reads:
                    raise
                continue
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(1 + attempt)
        return super().handle_request(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, toy_model_paths):
    root = tmp_path_factory.mktemp("stack")
    state, store = root / "state", root / "store"
    command = [sys.executable, "-m", "codealign", "stack"]

    def start() -> dict:
        up = subprocess.run([*command, "up", "--state-dir", str(state), "--prefect-port", str(free_port()),
                             "--ray-port", str(free_port()), "--cpus", "2", "--store", str(store)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
        if up.returncode != 0:  # e.g. a port taken meanwhile (up stops what it started): try again
            raise RuntimeError(up.stderr[-3000:])
        return json.loads(up.stdout)

    record = start_with_retries("the local stack", start)
    try:
        with httpx.Client(base_url=record["api"], timeout=30, transport=RetryUnavailable()) as api:
            yield {**record, "root": root, "store": ArtifactStore(str(store)), "http": api}
    finally:
        subprocess.run([*command, "down", "--state-dir", str(state)], cwd=REPO, timeout=300)
        assert not (state / "stack.json").exists()


def deployment(api: httpx.Client, flow: str, name: str) -> dict:
    response = api.get(f"/deployments/name/{flow}/{name}")
    response.raise_for_status()
    return response.json()


def run_ids(api: httpx.Client, deployment_id: str) -> list[str]:
    runs_of = api.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}})
    runs_of.raise_for_status()
    return [r["id"] for r in runs_of.json()]


def worker_done(api: httpx.Client, flow_run_id: str, timeout: float = 120) -> None:
    """Wait for the worker's log line that the flow run's process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                "sort": "TIMESTAMP_DESC", "limit": 50})
        logs.raise_for_status()
        if any("Process for flow run" in entry["message"] and "exited" in entry["message"] for entry in logs.json()):
            return
        time.sleep(1)
    raise AssertionError(f"the worker did not report the end of flow run {flow_run_id}'s process in {timeout} s")


def wait(api: httpx.Client, flow_run_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{flow_run_id}").json()
        if run["state_type"] in TERMINAL and run["state_name"] != "AwaitingRetry":
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s: {run['state_name']}")


def test_the_deployments_and_the_nightly_schedule_are_registered(stack):
    api = stack["http"]
    pool = api.get("/work_pools/codealign").json()
    assert pool["type"] == "process"
    nightly = deployment(api, "run-alignment-sweep", "nightly")
    [schedule] = nightly["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"], schedule["active"]) == \
        ("0 2 * * *", "UTC", True)
    assert nightly["work_pool_name"] == "codealign"
    # one night at a time: a night still running when the next is due makes that one wait
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    config = nightly["parameters"]["config"]
    assert config["preset"] == "toy" and config["ray_address"] == stack["ray_address"]
    assert config["store"] == stack["store"].root
    # the UI form: Prefect's schema of the entry flow's typed config
    schema = nightly["parameter_openapi_schema"]
    assert {"models", "pathways", "techniques", "early_stop"} <= set(schema["definitions"]["SweepConfig"]["properties"])
    for flow, name in (("run-alignment-sweep", "on-demand"), ("run-evaluate-checkpoints", "on-demand"),
                       ("resume-run", "by-id")):
        assert deployment(api, flow, name)["work_pool_name"] == "codealign"
    # the server's scheduler service turns the schedule into runs on its next loop (every 60 s)
    deadline, scheduled = time.monotonic() + 180, []
    while not scheduled and time.monotonic() < deadline:
        time.sleep(2)
        scheduled = api.post("/flow_runs/filter",
                             json={"deployments": {"id": {"any_": [nightly["id"]]}},
                                   "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
    assert scheduled and all(r["expected_start_time"][11:16] == "02:00" for r in scheduled)


def test_a_ui_run_that_failed_is_retried_and_only_its_failed_unit_runs_again(stack, tmp_path, toy_model_paths):
    """Run evaluate-checkpoints from its deployment with a filled-in form; one checkpoint is
    corrupt, so one unit fails and the run fails; fix it, press Retry: the run (same run id)
    completes and the unit that had completed was not redone."""
    api, store = stack["http"], stack["store"]
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [10, 20])
    weights = train / "checkpoint-10" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    form = {"config": {"checkpoints": [str(train)], "benchmarks": ["toy"], "modes": ["flow"], "limit": 4, "ks": [1],
                       "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 48}, "workers": 1,
                       "engine": {"max_model_len": 512, "enforce_eager": True}, "store": store.root,
                       "ray_address": stack["ray_address"]}}
    evaluate = deployment(api, "run-evaluate-checkpoints", "on-demand")
    created = api.post(f"/deployments/{evaluate['id']}/create_flow_run", json={"parameters": form})
    created.raise_for_status()
    flow_run = created.json()
    first = wait(api, flow_run["id"])
    assert first["state_type"] == "FAILED", first["state"]
    run_id = "run-" + flow_run["id"].replace("-", "")[:12]
    summary = runs.summarize(store, run_id)
    assert (summary.state, summary.complete, len(summary.failed)) == ("failed", 1, 1)
    [done] = [k for k in store.list("units") if k.endswith("samples.jsonl")]
    kept = store.meta(done)

    weights.write_bytes(good)
    # Retry once the worker is done with the failed run's process, as a person would: a Retry
    # sent while the process is still exiting is overridden by the worker's "crashed" report
    worker_done(api, flow_run["id"])
    retry = api.post(f"/flow_runs/{flow_run['id']}/set_state",  # what the UI's Retry button sends
                     json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"},
                           "force": False})
    assert retry.json()["status"] == "ACCEPT", retry.text
    second = wait(api, flow_run["id"])
    assert second["state_type"] == "COMPLETED", second["state"]
    summary = runs.summarize(store, run_id)
    assert (summary.state, summary.failed) == ("completed", [])
    assert store.meta(done) == kept  # the unit that had completed was not redone
    assert len(runs.read_status(store, run_id).flow_run_ids) == 2  # two attempts of one run
    rows = runs.read_results(store, run_id)
    assert sorted(r["checkpoint"] for r in rows) == ["checkpoint-10", "checkpoint-20"]


def test_a_run_started_from_the_ui_form_in_a_real_browser_completes(stack, tmp_path, toy_model_paths):
    """Headless Chromium (Debian's package, driven by Playwright) opens the deployment's Run
    page of the local server, types the parameters into its form, presses Submit and lands on
    the new flow run, which completes; a screenshot of the finished run is kept."""
    from playwright.sync_api import sync_playwright

    api, store = stack["http"], stack["store"]
    train = make_checkpoints(tmp_path / "train", toy_model_paths, [30])
    form = {"config": {"checkpoints": [str(train)], "benchmarks": ["toy"], "modes": ["flow"], "limit": 3, "ks": [1],
                       "sampling": {"n": 1, "temperature": 0.0, "max_tokens": 48}, "workers": 1,
                       "engine": {"max_model_len": 512, "enforce_eager": True}, "store": store.root,
                       "ray_address": stack["ray_address"]}}
    evaluate = deployment(api, "run-evaluate-checkpoints", "on-demand")
    shots = ARTIFACTS / "ui-finished-run.png"
    shots.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{stack['ui']}/deployments/deployment/{evaluate['id']}/run")
            page.get_by_text("Parameters", exact=True).wait_for(timeout=60_000)
            # the form's own switch to JSON input (the ⋮ menu of "Parameters"), then type into it
            page.locator("button.p-button--outline.max-h-\\[30px\\]").first.click()
            page.get_by_text("Use JSON input").first.click()
            editor = page.locator("textarea.p-code-input__textarea")
            assert json.loads(editor.input_value())["config"]["store"] == store.root  # the deployment's defaults
            editor.fill(json.dumps(form, indent=2))
            before = set(run_ids(api, evaluate["id"]))
            page.get_by_role("button", name="Submit").click()
            page.wait_for_url(f"**/deployments/deployment/{evaluate['id']}*", timeout=60_000)  # back, with a toast
            [flow_run_id] = set(run_ids(api, evaluate["id"])) - before
            finished = wait(api, flow_run_id)
            assert finished["state_type"] == "COMPLETED", finished["state"]
            assert finished["parameters"] == form  # what was typed is what ran
            page.goto(f"{stack['ui']}/runs/flow-run/{flow_run_id}")
            page.get_by_text("Completed").first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots), full_page=True)
        finally:
            browser.close()
    run_id = "run-" + flow_run_id.replace("-", "")[:12]
    [row] = runs.read_results(store, run_id)
    assert row["checkpoint"] == "checkpoint-30" and 0 <= row["pass@1"] <= 1
    assert shots.stat().st_size > 10_000


class WebhookReceiver(ThreadingHTTPServer):
    """A chat service's incoming webhook, on loopback: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.messages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.shutdown()
    receiver.server_close()


def messages_naming(receiver: WebhookReceiver, run_name: str, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := [m for m in receiver.messages if run_name in m["body"]]:
            return found
        time.sleep(1)
    raise AssertionError(f"no message about {run_name} in {timeout} s: {receiver.messages}")


def test_a_failed_and_a_regressed_nightly_each_send_one_message_naming_the_run(stack, tmp_path, webhook):
    """`codealign deploy --notify custom-webhook/NAME` makes the automation; a nightly run that
    fails (a model that is not there) and one that regressed against the night before (same
    cells, its generation cut to a few tokens) each deliver one message to the webhook on
    loopback, naming the run and linking it in the UI."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = stack["http"]
    with temporary_settings({PREFECT_API_URL: stack["api"]}):  # the block holds the URL, never codealign
        CustomWebhookNotificationBlock(name="codealign-alerts", url=webhook.url, allow_private_urls=True,
                                       json_data={"subject": "{{subject}}", "body": "{{body}}"}
                                       ).save("nightly-alerts", overwrite=True)
    deploy = [sys.executable, "-m", "codealign", "deploy", "--store", str(stack["store"].root),
              "--ray-address", stack["ray_address"]]
    env = {**os.environ, "PREFECT_API_URL": stack["api"]}
    wrong = subprocess.run([*deploy, "--notify", "custom-webhook/nobody"], env=env, capture_output=True, text=True)
    assert wrong.returncode != 0 and "no custom-webhook block named 'nobody'" in wrong.stderr
    done = subprocess.run([*deploy, "--notify", "custom-webhook/nightly-alerts"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    [automation] = api.post("/automations/filter", json={}).json()
    assert automation["name"] == "codealign: nightly failed"

    nightly = deployment(api, "run-alignment-sweep", "nightly")
    config = {**nightly["parameters"]["config"], "store": str(tmp_path / "nights"), "pathways": ["fta"],
              "techniques": [], "regression": {"threshold_points": 5}}
    config["evaluation"] = {**config["evaluation"], "modes": ["command"], "limit": 16}

    def night(changes: dict) -> dict:
        created = api.post(f"/deployments/{nightly['id']}/create_flow_run",
                           json={"parameters": {"config": {**config, **changes}}})
        created.raise_for_status()
        return wait(api, created.json()["id"])

    failed = night({"models": [{"name": "toy", "base": "toy-base", "instruct": str(tmp_path / "no-such-model")}]})
    good = night({})
    assert good["state_type"] == "COMPLETED", good["state"]
    cut = {**config["evaluation"], "sampling": {**config["evaluation"]["sampling"], "max_tokens": 2}}
    regressed = night({"evaluation": cut})
    assert failed["state_type"] == "FAILED" and regressed["state_type"] == "FAILED", (failed, regressed)
    assert "regression against " + good["name"] in regressed["state"]["message"]

    for run in (failed, regressed):
        [message] = messages_naming(webhook, run["name"])
        assert message["subject"] == f"codealign nightly {run['name']}: Failed"
        assert f"{stack['ui']}/runs/flow-run/{run['id']}" in message["body"]  # the link into the UI
    assert "regression against" in messages_naming(webhook, regressed["name"])[0]["body"]
    time.sleep(5)  # nothing else arrives: not the completed night, not a second message per run
    assert len(webhook.messages) == 2, webhook.messages
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "webhook-messages.json").write_text(json.dumps(webhook.messages, indent=2))
    nights = runs.list_runs(ArtifactStore(str(tmp_path / "nights")), flow="alignment-sweep")
    assert {r.deployment for r in nights} == {"run-alignment-sweep/nightly"}  # each manifest names its deployment
