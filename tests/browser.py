"""Open a built book in headless Chromium (Debian's chromium + chromium-driver) through selenium."""
from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
from pathlib import Path

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(root: Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def check_in_chromium(html_dir: Path, screenshot: Path):
    """With every address but this machine's unreachable: index and one chapter, every image loads,
    the navigation lists every chapter, the introduction's equations are typeset by the book's own
    MathJax; screenshot."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium / chromedriver missing: `make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, read per page
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp()}",
                 # no network: names other than the loopback do not resolve, and any proxy-able
                 # request goes to a closed port
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(flag)
    server = _serve(html_dir)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        from dnnknn.book import PAGES
        titles = {}
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        for page in ["index.html", "01_knn_during_training.html"]:
            browser.get(f"{base}/{page}")
            if page == "index.html":  # jupyter-book's index redirects to the root page
                WebDriverWait(browser, 20).until(lambda b: b.current_url.endswith("intro.html"))
            try:  # the redirected page may still be loading: wait for its load event and sidebar
                WebDriverWait(browser, 30).until(lambda b: b.execute_script(
                    "return document.readyState === 'complete' && "
                    "document.querySelectorAll('nav.bd-docs-nav a').length > 0"))
            except TimeoutException:
                pass  # the assertions below say what is missing
            broken = browser.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert broken == [], broken
            nav = browser.execute_script(
                "return Array.from(document.querySelectorAll('nav.bd-docs-nav a')).map(a => a.getAttribute('href'))")
            titles[page] = nav
            for _, p, _ in PAGES:
                assert any(p.replace(".ipynb", ".html") in (h or "") for h in nav), (p, nav)
            if page == "index.html":  # the introduction: its display equations typeset offline
                try:
                    WebDriverWait(browser, 30).until(lambda b: b.execute_script(
                        "return document.querySelectorAll('mjx-container').length >= 3"))
                except TimeoutException:
                    pass
                n_math = browser.execute_script("return document.querySelectorAll('mjx-container').length")
                text = browser.execute_script("return document.body.innerText")
                scripts = browser.execute_script(
                    "return Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax'))")
                assert scripts and all(s.startswith(base) for s in scripts), scripts
                assert n_math >= 3 and "\\triangleq" not in text, (n_math, text[:500])
        n_images = browser.execute_script("return document.images.length")
        assert n_images >= 1
        browser.save_screenshot(str(screenshot))
        check_every_page(browser, base, PAGES)
    finally:
        browser.quit()
        server.shutdown()


# the numbered figures each chapter shows (both profiles)
FIGURES = {"01_knn_during_training": 1, "02_knn_across_layers": 1, "03_dnn_as_knn_approximator": 2,
           "04_random_labels": 2, "07_full_batch_gd": 1, "08_random_labels_mc_me": 1}


def check_every_page(browser, base: str, pages):
    """Every chapter: no console error, no visible injected-parameters cell, no table wider than
    its column, and a rerun box naming this page's --only id."""
    browser.get(f"{base}/intro.html")
    # the theme logs "Got invalid theme mode" on a profile's very first visit, before it stores one
    browser.execute_script("localStorage.setItem('mode', 'light'); localStorage.setItem('theme', 'light')")
    for _, page, _ in pages:
        html = page.replace(".ipynb", ".html")
        browser.get_log("browser")  # drop what earlier pages logged
        browser.get(f"{base}/{html}")
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState === 'complete'"))
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], (page, errors)
        text = browser.execute_script("return document.querySelector('main').innerText")
        assert "# Parameters" not in text, page
        wide = browser.execute_script(
            "return Array.from(document.querySelectorAll('main table')).filter(t => "
            "t.getBoundingClientRect().width > t.closest('article, main').getBoundingClientRect().width + 1)"
            ".map(t => t.innerText.slice(0, 60))")
        assert wide == [], (page, wide)
        # the figures (Figures 1, 3, 4 and 7 with their seed bands): there, and loaded
        want = FIGURES.get(page.removeprefix("paper/").removesuffix(".ipynb"), 0)
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('main figure img')).filter(i => i.complete && i.naturalWidth > 0).length")
        assert shown >= want, (page, shown, want)
        from dnnknn.book import page_id
        pid = page_id(page)
        assert pid in {"claims", "fill", "intro"} or pid.removeprefix("paper/")[:2].isdigit(), pid
        assert f"--only {pid}" in browser.execute_script("return document.querySelector('main').textContent"), page
