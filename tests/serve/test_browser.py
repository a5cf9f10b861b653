"""The page of `pyairir serve`, driven in a real headless browser (Chromium via Selenium): upload a
photo, restore it with the demo model, compare the image the page offers for download with
pyairir.eval.restore, and see the message a truncated file gets. The screenshot it takes is
docs/serve.jpg when PYAIRIR_SCREENSHOT names that file.

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver) and selenium
(the test extra). Without them the test is skipped, except under CI (the CI variable set), where a
missing browser is an error."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyairir.data.io import read_image, to_uint8, write_image
from pyairir.demo import load_demo_model, sample_photo
from pyairir.eval import restore
from tests.serve.server_process import serve

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def browser():
    missing = [what for what, found in (("chromium", BROWSER), ("chromedriver", DRIVER)) if not found]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"the browser test needs {', '.join(missing)} (see the README's Quick start)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1500",
                     "--disable-gpu"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(DRIVER), options=options)  # explicit paths: Selenium downloads nothing


@pytest.fixture(scope="module")
def page():
    with serve() as (url, process):
        driver = browser()
        try:
            driver.get(url)
            yield url, driver
        finally:
            driver.quit()


def restore_on_page(driver, path: Path, degradation: str = "none") -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.find_element(By.ID, "degradation").find_elements(By.TAG_NAME, "option"))
    Select(driver.find_element(By.ID, "degradation")).select_by_value(degradation)
    driver.find_element(By.ID, "image").send_keys(str(path))
    wait.until(ready.element_to_be_clickable((By.ID, "restore"))).click()
    wait.until(lambda d: d.find_element(By.ID, "result").is_displayed()
               or d.find_element(By.ID, "error").is_displayed())


def test_restores_a_photo_in_the_browser(page, tmp_path):
    from selenium.webdriver.common.by import By

    url, driver = page
    photo = tmp_path / "chelsea.png"
    write_image(photo, sample_photo("chelsea"))
    restore_on_page(driver, photo)
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    with urllib.request.urlopen(driver.find_element(By.ID, "download").get_attribute("href")) as response:
        (tmp_path / "downloaded.png").write_bytes(response.read())
    downloaded = np.asarray(Image.open(tmp_path / "downloaded.png"))
    assert np.array_equal(downloaded, to_uint8(restore(load_demo_model(), read_image(photo))))
    summary = driver.find_element(By.ID, "summary").text
    assert summary.startswith("451x300 restored by the demo model (nafnet_demo, pyairir/weights) in ")
    assert driver.find_element(By.ID, "before").get_attribute("naturalWidth") == "451"

    restore_on_page(driver, photo, "noise")  # then degraded synthetically first: PSNR/SSIM shown
    rows = driver.find_elements(By.CSS_SELECTOR, "#metrics tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows[1:]] == ["before", "restored"]
    before, after = (float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows[1:])
    assert after > before + 3
    screenshot = Path(os.environ.get("PYAIRIR_SCREENSHOT") or tmp_path / "serve.jpg")
    driver.find_element(By.ID, "slider").send_keys(*["\ue012"] * 15)  # left arrow: more of the restored side
    assert driver.save_screenshot(str(tmp_path / "screenshot.png"))
    Image.open(tmp_path / "screenshot.png").convert("RGB").save(screenshot, quality=85)  # JPEG: small for the README
    assert screenshot.stat().st_size > 10_000


def test_a_truncated_file_gets_a_message_on_the_page(page, tmp_path):
    from selenium.webdriver.common.by import By

    url, driver = page
    whole = tmp_path / "whole.png"
    write_image(whole, sample_photo("coffee"))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[:5000])
    restore_on_page(driver, truncated)
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and error.text == ("the uploaded image could not be read (corrupt or not an image): "
                                                   "image file is truncated")
    assert not driver.find_element(By.ID, "result").is_displayed()
