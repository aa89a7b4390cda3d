"""The admin dashboard in a real browser: Debian's chromium and chromium-driver through
selenium, against `unlearnd serve` on the embedded default with its demo model.

Screenshots of each view are saved under the test's temporary folder (the path is printed;
``pytest -s`` shows it, and ``/tmp/pytest-of-$USER/pytest-current/dashboard*`` holds the
latest run's).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.network import free_port, service_missing

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ADMIN_KEY = "unlearnd-dev-admin-key-for-the-dashboard-test"
UNLEARND = str(Path(sys.executable).with_name("unlearnd"))


class Server:
    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base, self.env = base, env
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    def create_key(self, scopes: str) -> str:
        """A key of the demo tenant, made by the CLI against the same database."""
        result = subprocess.run(
            [UNLEARND, "keys", "create", "--tenant", "default", "--scopes", scopes],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.strip().splitlines()[-1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("dashboard-server")
    port = free_port()
    env = {
        **os.environ,
        "UNLEARN_STATE_DIR": str(folder / "state"),
        "UNLEARN_DATA_ROOT": str(folder),
        "UNLEARN_DATABASE_URL": "",
        "UNLEARN_BROKER_URL": "",
        "UNLEARN_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "UNLEARN_DEMO_MODEL": "true",
        "UNLEARN_DISPATCH_INTERVAL_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
    }
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [UNLEARND, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(f"http://127.0.0.1:{port}", env)

    def healthy() -> bool:
        try:
            return server.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("unlearnd serve", healthy, timeout=60)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        service_missing("Debian's chromium and chromium-driver (apt-get install them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Without the background-networking flags chromium keeps reaching for the network,
    # which a closed machine turns into stalls.
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ]:
        options.add_argument(flag)
    downloads = tmp_path_factory.mktemp("downloads")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(pytestconfig: pytest.Config) -> Callable[[Any, str], None]:
    """Full-page PNGs in .pytest_cache/d/dashboard-screenshots (pytest's own cache folder:
    the temporary folders of runs in other checkouts on this machine would mix with ours)."""
    folder = pytestconfig.cache.mkdir("dashboard-screenshots")  # type: ignore[union-attr]
    for old in folder.glob("*.png"):
        old.unlink()
    print(f"\ndashboard screenshots: {folder}")

    def save(driver: Any, name: str) -> None:
        time.sleep(0.3)  # let the last render settle
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        (folder / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))

    return save


def text_of(driver: Any, selector: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        return found[0].text if found else ""
    except StaleElementReferenceException:  # re-rendered by a poll meanwhile
        return ""


def click(driver: Any, selector: str) -> None:
    """Click the element once it is there; a poll may re-render it between find and click,
    so a stale element is looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        if not found:
            return False
        try:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", found[0])
            found[0].click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(selector, attempt)


def sign_in(driver: Any, server: Server, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.base}/admin/")
    driver.execute_script("sessionStorage.clear()")  # forget an earlier test's key
    driver.refresh()
    field = wait_for("the sign-in form", lambda: driver.find_elements(By.ID, "api-key"))[0]
    field.send_keys(key)
    click(driver, "#sign-in-form button")
    wait_for("signed in", lambda: "tenant default" in text_of(driver, "#who"))


def drawn_pixels(driver: Any, canvas_id: str) -> int:
    """Pixels of a canvas that are not blank: the chart library really drew there."""
    return int(
        driver.execute_script(
            """
            const canvas = document.getElementById(arguments[0]);
            if (!canvas || !canvas.width) return 0;
            const context = canvas.getContext('2d');
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let drawn = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
            return drawn;
            """,
            canvas_id,
        )
    )


def file_request(server: Server, model_id: str, key: str, subject: str) -> dict[str, Any]:
    body = {"model_id": model_id, "subject_id": subject, "sample_keys": [key]}
    return server.json("POST", "/v1/deletion-requests", json=body)


def test_an_operator_watches_cancels_flushes_and_reads_the_audit(server, browser, screenshots):
    from selenium.webdriver.common.by import By

    def demo() -> dict[str, Any] | None:
        models = server.json("GET", "/v1/models")["items"]
        return next((m for m in models if m["name"] == "demo" and m["status"] == "ready"), None)

    model = wait_for("the demo model to train", demo, timeout=180)
    # Requests must stay pending until the page cancels or flushes them.
    batching = {"max_requests": 100, "max_wait_seconds": 3600}
    server.json("PATCH", f"/v1/models/{model['id']}", json={"batching": batching})

    sign_in(browser, server, ADMIN_KEY)
    wait_for("the demo model listed", lambda: browser.find_elements(By.LINK_TEXT, "demo"))
    wait_for("the pending count", lambda: text_of(browser, "#count-pending") == "0")
    screenshots(browser, "1-overview")

    browser.execute_script("window.notReloaded = true")
    first = file_request(server, model["id"], "train/00017", "user-8812")
    wait_for("the pending count to change", lambda: text_of(browser, "#count-pending") == "1")
    assert browser.execute_script("return window.notReloaded") is True  # polled, not reloaded
    assert text_of(browser, f"#pending-{model['id']}") == "1"
    assert "left" in text_of(browser, "#nearest-due")
    screenshots(browser, "2-overview-after-a-request")

    click(browser, "a[data-nav=requests]")
    # Listed by its digest: the service keeps no subject in clear.
    assert "user-8812" not in first["subject_digest"]
    shown = first["subject_digest"][:8]
    wait_for("the request listed", lambda: shown in text_of(browser, "#requests-list"))
    screenshots(browser, "3-requests")
    click(browser, f"a[href='#/requests/{first['id']}']")
    wait_for("the request page", lambda: text_of(browser, "#request-status") == "pending")
    click(browser, f"#cancel-{first['id']}")
    browser.switch_to.alert.accept()
    wait_for("the cancellation", lambda: text_of(browser, "#request-status") == "cancelled")
    assert server.json("GET", f"/v1/deletion-requests/{first['id']}")["status"] == "cancelled"
    screenshots(browser, "4-request-cancelled")

    second = file_request(server, model["id"], "train/00042", "user-0031")
    click(browser, "a[data-nav=overview]")
    click(browser, f"a[href='#/models/{model['id']}']")
    click(browser, f"#flush-{model['id']}")
    wait_for(
        "version 2 in the lineage, as head",
        lambda: "HEAD" in text_of(browser, "#lineage-chain li[data-version='2']"),
        timeout=180,
    )
    assert "HEAD" not in text_of(browser, "#lineage-chain li[data-version='1']")
    assert drawn_pixels(browser, "quality-chart") > 500
    screenshots(browser, "5-model-lineage")

    click(browser, "#lineage-chain li[data-version='2'] a.version-title")
    wait_for("the ROC plot", lambda: drawn_pixels(browser, "roc-chart") > 1000, timeout=180)
    roc_points = browser.execute_script(
        "return Chart.getChart('roc-chart').data.datasets[0].data.length"
    )
    assert roc_points >= 2
    histograms = browser.execute_script(
        "return Chart.getChart('entropy-chart').data.datasets.map(d => d.label)"
    )
    assert histograms[:2] == ["forget set (this version)", "held-out data"]
    assert drawn_pixels(browser, "entropy-chart") > 1000
    assert text_of(browser, "#verdict") == "NO REFERENCE"
    # Without references the audit says what it did show, in plain words.
    assert text_of(browser, "#audit-evidence").startswith(
        "not verified against retrained models; the forget set's membership signal"
    )
    screenshots(browser, "6-version-audit")

    click(browser, "#audit-reference")  # retrains K references, then gates the version
    browser.switch_to.alert.accept()
    wait_for(
        "the reference audit's verdict",
        lambda: text_of(browser, "#verdict") in {"PASS", "FAIL", "INCONCLUSIVE"},
        timeout=180,
    )
    gates = browser.find_elements(By.CSS_SELECTOR, "#audit-gates tbody tr")
    assert len(gates) >= 3 and "mia_auc" in text_of(browser, "#audit-gates")
    screenshots(browser, "7-version-audit-against-references")

    # The job that made version 2, and what its method reported doing.
    made_by = server.json("GET", f"/v1/models/{model['id']}/versions/2")["job_id"]
    browser.get(f"{server.base}/admin/#/jobs/{made_by}")
    wait_for("the job's report", lambda: "epochs" in text_of(browser, "#job-report"))
    assert "stopped_by" in text_of(browser, "#job-report")

    completed = wait_for(
        "the request to complete",
        lambda: (
            server.json("GET", f"/v1/deletion-requests/{second['id']}")["status"] == "completed"
        ),
        timeout=60,
    )
    assert completed
    browser.get(f"{server.base}/admin/#/requests/{second['id']}")
    wait_for("the request page", lambda: text_of(browser, "#request-status") == "completed")
    click(browser, "#certificate-download")
    wait_for("the certificate", lambda: "met deadline" in text_of(browser, "#certificate-summary"))
    downloaded = browser.downloads / f"certificate-{second['id']}.json"
    wait_for("the certificate file", downloaded.exists, timeout=10)
    screenshots(browser, "8-request-certificate")

    # For the person accountable: a printable certificate, the register, the chain.
    browser.get(f"{server.base}/admin/#/requests/{second['id']}/certificate")
    wait_for("the printable certificate", lambda: text_of(browser, "#certificate-evidence"))
    page = text_of(browser, "#certificate-page")
    assert "Certificate of erasure" in page and second["subject_digest"] in page
    assert "user-0031" not in page
    screenshots(browser, "8b-printable-certificate")
    browser.get(f"{server.base}/admin/#/requests")
    click(browser, "#register-export")
    register = browser.downloads / "deletion-register.csv"
    wait_for("the register file", register.exists, timeout=10)
    exported = register.read_text()
    assert exported.startswith("request_id,subject_digest,") and second["id"] in exported
    click(browser, "a[data-nav=audit-log]")
    wait_for(
        "the log's entries", lambda: "deletion_request" in text_of(browser, "#audit-log-entries")
    )
    click(browser, "#verify-chain")
    wait_for("the verification", lambda: text_of(browser, "#chain-result").startswith("Intact"))
    screenshots(browser, "8c-audit-log-verified")

    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert problems == []  # no script error, no refused resource (the CSP)


def test_a_key_without_a_scope_sees_the_view_refuse(server, browser, screenshots):
    from selenium.webdriver.common.by import By

    model = wait_for(
        "the demo model",
        lambda: next(
            (m for m in server.json("GET", "/v1/models")["items"] if m["name"] == "demo"), None
        ),
    )
    reader = server.create_key("models:read,requests:read")
    sign_in(browser, server, reader)
    browser.get(f"{server.base}/admin/#/models/{model['id']}/versions/1")
    refusal = wait_for(
        "the refusal", lambda: browser.find_elements(By.CSS_SELECTOR, "#audit-verdict .refused")
    )[0]
    assert "audit:read" in refusal.text
    assert text_of(browser, "#version-details")  # the version itself is readable
    assert not browser.find_elements(By.ID, "audit-reference")  # admin actions are not offered
    screenshots(browser, "9-audit-refused-without-audit-read")

    browser.get(f"{server.base}/admin/#/")
    wait_for("the overview", lambda: text_of(browser, "#count-pending") != "")
    assert not browser.find_elements(By.CSS_SELECTOR, "button[id^=flush-], button[id^=cancel-]")

    no_models = server.create_key("requests:read")
    sign_in(browser, server, no_models)
    browser.get(f"{server.base}/admin/#/")
    refusal = wait_for(
        "the overview's refusal",
        lambda: browser.find_elements(By.CSS_SELECTOR, "#overview-requests .refused"),
    )[0]
    assert "models:read" in refusal.text
    screenshots(browser, "10-overview-refused-without-models-read")


def test_the_api_docs_render_under_their_policy(server, browser, screenshots):
    """Swagger UI, served by the service, draws every operation with nothing refused by
    the page's Content-Security-Policy and nothing fetched from elsewhere."""
    from selenium.webdriver.common.by import By

    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{server.base}/docs/")
    operations = wait_for(
        "the operations", lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    )
    paths = {element.get_attribute("data-path") or element.text for element in operations}
    assert "/v1/deletion-requests" in paths
    screenshots(browser, "11-api-docs")
    refused = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"
    ]
    assert not refused, refused
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(url.startswith(server.base) for url in loaded), loaded
