"""The static leaderboard in headless Chromium: tables render, headers sort, the scatter has points,
hostile names stay text (no script runs, no alert). Needs Debian's chromium + chromium-driver
(``sudo bash scripts/install_browser.sh``); skipped with the reason when they are absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from leaderboard.entries import load_entries
from leaderboard.html import build_site

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FIXTURES = Path(__file__).parent / "fixtures" / "leaderboard" / "entries"
XSS = '<script>alert(1)</script>&"'
pytestmark = pytest.mark.slow  # starts a headless browser (~5-10 s)

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(f"{CHROMIUM} / {CHROMEDRIVER} not installed: run 'sudo bash scripts/install_browser.sh' "
                "(Debian packages chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install -r requirements/lock.txt")
from selenium.common.exceptions import NoAlertPresentException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboard-site")
    build_site(load_entries(FIXTURES), out)
    return out


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1200", "--allow-file-access-from-files"):
        options.add_argument(arg)
    # an explicit driver path: selenium-manager never tries to download one
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _column(driver, header: str) -> int:
    headers = [th.text.strip() for th in driver.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")]
    return headers.index(header)


def _column_sort_values(driver, col: int) -> list[str]:
    return [row.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-sort")
            for row in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]


def _no_alert(driver) -> None:
    with pytest.raises(TimeoutException):
        WebDriverWait(driver, 1.0).until(expected_conditions.alert_is_present())
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018


def test_dataset_page_renders_sorts_plots_and_escapes(browser, site: Path, tmp_path: Path) -> None:
    browser.get((site / "dataset-sst2_sentence.html").as_uri())
    _no_alert(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
    assert len(rows) == 4
    defenses = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#leaderboard td.defense")]
    assert XSS in defenses  # shown as text
    # only the page's own sorter script exists; the hostile names created no element
    assert browser.execute_script("return document.scripts.length") == 1
    assert browser.execute_script("return document.images.length") == 0
    assert "reproduced" in rows[0].text or any("reproduced" in r.text for r in rows)

    col = _column(browser, "Clean%")
    header = browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")[col]
    header.click()
    ascending = [float(v) for v in _column_sort_values(browser, col)]
    assert ascending == sorted(ascending) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = [float(v) for v in _column_sort_values(browser, col)]
    assert descending == sorted(ascending, reverse=True) and header.get_attribute("aria-sort") == "descending"
    first_defense = browser.find_element(By.CSS_SELECTOR, "#leaderboard tbody tr td.defense").text
    assert first_defense == "finetune"  # minilm-l6's 88.0 is the highest Clean%

    name_col = _column(browser, "Defense")
    browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")[name_col].click()
    names = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#leaderboard td.defense")]
    assert names[0] == XSS  # "<" sorts before letters

    points = browser.find_elements(By.CSS_SELECTOR, "svg#scatter circle.point")
    assert len(points) == 5
    assert all(p.is_displayed() for p in points)
    assert {p.get_attribute("data-attack") for p in points} == {"pwws", "textfooler-offline"}

    shot = tmp_path / "leaderboard-sst2_sentence.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    artifacts = os.environ.get("SUITE_ARTIFACTS_DIR")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    _no_alert(browser)


def test_overview_page_summary_and_links(browser, site: Path) -> None:
    browser.get((site / "index.html").as_uri())
    _no_alert(browser)
    assert "3 of 4 comparable published numbers are reproduced within tolerance" in \
        browser.find_element(By.ID, "summary").text
    judged = browser.find_elements(By.CSS_SELECTOR, "#judged tbody tr")
    assert len(judged) == 4
    statuses = sorted(r.find_elements(By.TAG_NAME, "td")[-1].text for r in judged)
    assert statuses == ["\u2713 reproduced"] * 3 + ["\u2717 deviates"]
    browser.find_element(By.LINK_TEXT, "trec").click()
    assert browser.current_url.endswith("dataset-trec.html")
    browser.find_element(By.LINK_TEXT, "JSON").click()
    assert '"dataset": "trec"' in browser.find_element(By.TAG_NAME, "body").text
