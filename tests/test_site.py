"""The built book in a real browser: headless Chromium loads pages served on localhost and reports
console errors, failed requests, broken images and broken links.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte on file descriptors 3 and 4), which needs nothing beyond the standard
library. Skips when no Chromium/Chrome is installed or the book has not been built (``make book``).
Screenshots of the pages are left in ``_build/screenshots/`` for people to look at.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chromium-headless-shell")
# Chapter 7 draws the recorded model's attention only on real test images: with the q75 copy
# built (make book on a machine with ../shared) it has 4 figures, without it a line saying so.
REAL_DATA = (ROOT / "data-q75" / "cifar-100-python" / "meta").is_file()
# (page, minimum number of figures in its article, text that must be on the page)
PAGES = [
    ("book/intro.html", 1, "CIFAR-100"),
    ("notebooks/06_training.html", 2, "recorded run"),
    ("notebooks/07_attention.html", 4, "attention") if REAL_DATA else ("notebooks/07_attention.html", 0, "not drawn"),
    # The stem x attention grid: its curves need only the records; sharpness also real images.
    ("notebooks/02_convolutional_stems.html", 2, "side by side"),
    ("notebooks/03_spt_and_lsa.html", 4 if REAL_DATA else 2, "SPT and LSA, trained"),
    ("book/results.html", 0, "Stem x attention"),
]


def _browser() -> str | None:
    return os.environ.get("CHROME") or next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _above_nine(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends move above 9, so that the redirections below never clobber them.
        to_browser_r, from_browser_w = (_above_nine(fd) for fd in (to_browser_r, from_browser_w))
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,1600",
                "--hide-scrollbars", "about:blank"]  # fmt: skip
        # The browser expects the pipe on descriptors 3 (commands in) and 4 (replies out).
        shell = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", shell, binary, *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise TimeoutError("no reply from the browser in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"the browser closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._read_message(deadline))

    def drain(self, seconds: float) -> None:
        """Collect the events of the next ``seconds`` (late requests, scripts run after load)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    if not (SITE / "book" / "intro.html").is_file():
        pytest.skip(f"the book is not built ({SITE} has no book/intro.html): run `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # The browser may drop a request it no longer needs (a closed tab): not a site problem.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    binary = _browser()
    if binary is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}; or set CHROME)")
    with tempfile.TemporaryDirectory() as profile:
        tools = DevTools(binary, Path(profile))
        try:
            yield tools
        finally:
            tools.close()


def _problems(events: list[dict[str, Any]], session: str) -> list[str]:
    """Console errors, uncaught exceptions and failed requests reported for ``session``."""
    found = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            found.append(f"{entry['source']}: {entry['text']} ({entry.get('url', '')})")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            found.append(f"request failed: {params.get('errorText')} ({params.get('type')})")
    return found


PAGE_REPORT = """(() => {
  const article = document.querySelector("article") || document.body;
  const captionOf = img => {
    const figcaption = img.closest("figure") && img.closest("figure").querySelector("figcaption");
    return figcaption ? figcaption.textContent : "";
  };
  const images = Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, inArticle: article.contains(img), complete: img.complete,
    width: img.naturalWidth, height: img.naturalHeight, alt: img.getAttribute("alt") || "", caption: captionOf(img)}));
  const links = Array.from(document.querySelectorAll("a[href]")).map(a => a.href);
  const code = document.querySelector("div.cell_input pre");
  const note = article.querySelector("div.admonition");
  return {title: document.title, heading: (article.querySelector("h1") || {}).textContent || "",
          text: article.innerText, height: document.documentElement.scrollHeight, images, links,
          searches: Array.from(document.querySelectorAll(".search-button__button"))
            .filter(el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden").length,
          codeWrap: code ? getComputedStyle(code).whiteSpace : null,
          note: note ? note.innerText : null};
})()"""


@pytest.mark.parametrize(("page", "min_figures", "phrase"), PAGES)
def test_page_loads_cleanly_with_its_figures(site_url: str, browser: DevTools, page: str, min_figures: int, phrase: str) -> None:
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable", session=session)
    # A desktop window: the layout a reader of the site meets (and the one that showed two search boxes).
    desktop = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    browser.call("Emulation.setDeviceMetricsOverride", desktop, session=session)
    browser.events.clear()
    browser.call("Page.navigate", {"url": f"{site_url}/{page}"}, session=session)
    browser.wait_for("Page.loadEventFired", timeout=60)
    browser.drain(1.5)
    problems = _problems(browser.events, session)
    report = browser.call("Runtime.evaluate", {"expression": PAGE_REPORT, "returnByValue": True}, session=session)
    info = report["result"]["value"]
    # The whole page in one picture: a viewport as tall as the page (capped), then a plain capture.
    height = min(int(info["height"]), 12000)
    metrics = {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
    shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=session)
    screenshots = ROOT / "_build" / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    (screenshots / (page.replace("/", "_").removesuffix(".html") + ".png")).write_bytes(base64.b64decode(shot["data"]))
    browser.call("Target.closeTarget", {"targetId": target})

    assert not problems, f"{page}: " + "; ".join(problems)
    assert info["heading"].strip() and len(info["text"]) > 500, f"{page} has no content: {info['title']!r}"
    assert phrase in info["text"], f"{page} does not say {phrase!r}"
    assert "/tmp/" not in info["text"] and "/work/" not in info["text"], f"{page} prints a path of the build machine"
    assert info["searches"] == 1, f"{page}: {info['searches']} visible search boxes"
    words = [part.strip().lower() for part in info["title"].split("—")]
    assert len(set(words)) == len(words), f"{page}: the title repeats itself: {info['title']!r}"
    if info["codeWrap"] is not None:  # a chapter: code wraps, and its data is a note at the top
        assert info["codeWrap"] == "pre-wrap", f"{page}: long code lines scroll sideways"
        assert info["note"] and ("CIFAR-100" in info["note"] or "synthetic" in info["note"].lower()), f"{page}: no data note"
    broken = [img["src"][:120] for img in info["images"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"{page}: images that did not load: {broken}"
    figures = [img for img in info["images"] if img["inArticle"] and img["width"] >= 100 and img["height"] >= 100]
    assert len(figures) >= min_figures, f"{page}: {len(figures)} figures, expected at least {min_figures}"
    # Every figure has alt text and its caption as page text (a <figcaption>), not inside the PNG.
    blind = [img["src"][:60] for img in figures if not img["alt"].strip() or img["alt"].endswith(".png")]
    assert not blind, f"{page}: figures without alt text: {blind}"
    uncaptioned = [img["alt"][:60] for img in figures if not img["caption"].strip()]
    assert not uncaptioned, f"{page}: figures without a text caption: {uncaptioned}"
    local = sorted({link.split("#")[0] for link in info["links"] if link.startswith(site_url)})
    dead = [link for link in local if not _reachable(link)]
    assert not dead, f"{page}: broken links: {dead}"


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


LAYOUT_REPORT = """(() => {
  const width = document.documentElement.clientWidth;
  const scrolls = el => {
    for (let e = el.parentElement; e; e = e.parentElement) {
      if (["auto", "scroll", "hidden"].includes(getComputedStyle(e).overflowX)) return true;
    }
    return false;
  };
  const tooWide = el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.right > width + 1 && getComputedStyle(el).visibility !== "hidden" && !scrolls(el);
  };
  // The outermost offenders only: a too-wide table's cells are the table's problem.
  const wide = Array.from(document.querySelectorAll(".bd-article *"))
    .filter(el => tooWide(el) && !(el.parentElement && tooWide(el.parentElement)))
    .map(el => `<${el.tagName.toLowerCase()} class="${el.className}"> ends at ${Math.round(el.getBoundingClientRect().right)} px`);
  const noAlt = Array.from(document.images)
    .filter(img => img.getClientRects().length > 0 && !(img.getAttribute("alt") || "").trim())
    .map(img => (img.currentSrc || img.src).slice(0, 100));
  // How much of each figure's width shows without scrolling sideways: the part of the image inside
  // the viewport and inside every box around it that clips or scrolls.
  const shownShare = el => {
    const r = el.getBoundingClientRect();
    let left = Math.max(r.left, 0), right = Math.min(r.right, width);
    for (let e = el.parentElement; e; e = e.parentElement) {
      if (getComputedStyle(e).overflowX !== "visible") {
        const box = e.getBoundingClientRect();
        left = Math.max(left, box.left);
        right = Math.min(right, box.right);
      }
    }
    return Math.max(0, right - left) / r.width;
  };
  const cut = Array.from(document.querySelectorAll(".bd-article img"))
    .filter(img => img.naturalWidth >= 100 && img.getBoundingClientRect().width > 0)
    .map(img => ({alt: (img.alt || img.src).slice(0, 60), share: shownShare(img)}))
    .filter(f => f.share < 0.9);
  // What a code cell prints (not its code) wraps: no output line runs past its box or the screen.
  const unwrapped = Array.from(document.querySelectorAll("div.cell_output pre"))
    .filter(pre => pre.getClientRects().length > 0)
    .filter(pre => pre.scrollWidth > pre.clientWidth + 1 || pre.getBoundingClientRect().right > width + 1)
    .map(pre => `${pre.scrollWidth} px of output in ${pre.clientWidth} px: ${pre.textContent.trim().slice(0, 60)}`);
  // A tap on a figure opens it full size: the figure, made the page's target by its link, covers
  // the screen with the image at its own width and a close button.
  const figure = document.querySelector("figure.vitlib-figure[id]");
  let zoom = null;
  if (figure) {
    const link = figure.querySelector("a.vitlib-figure-open");
    const img = figure.querySelector("img");
    location.hash = figure.id;
    const close = figure.querySelector("a.vitlib-figure-close");
    zoom = {link: link ? link.getAttribute("href") : null, fixed: getComputedStyle(figure).position === "fixed",
            shown: img.getBoundingClientRect().width, natural: img.naturalWidth, alt: img.alt.slice(0, 60),
            close: close ? close.getClientRects().length > 0 : false};
    location.hash = link ? link.id : "";  // closed again, as its close button does
    history.replaceState(null, "", location.pathname + location.search);
  }
  return {width, scrollWidth: document.documentElement.scrollWidth, wide, noAlt, cut, unwrapped, zoom};
})()"""


def _every_page() -> list[str]:
    return sorted(str(p.relative_to(SITE)) for folder in ("book", "notebooks") for p in (SITE / folder).glob("*.html"))


@pytest.mark.parametrize("width", [412, 1280])
def test_every_page_fits_a_phone_and_a_desktop(site_url: str, browser: DevTools, width: int) -> None:
    """Nothing is wider than the page unless it scrolls in its own box (tables, code on a phone),
    every visible image has alt text and shows at least 90 % of its width without scrolling, what
    the code cells print wraps, and on a phone a tap on a figure opens it full size."""
    pages = _every_page()
    assert pages, f"no pages under {SITE}"
    problems = []
    for page in pages:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.call("Page.enable", session=session)
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}
        browser.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
        browser.events.clear()
        browser.call("Page.navigate", {"url": f"{site_url}/{page}"}, session=session)
        browser.wait_for("Page.loadEventFired", timeout=60)
        info = browser.call("Runtime.evaluate", {"expression": LAYOUT_REPORT, "returnByValue": True}, session=session)["result"]["value"]
        browser.call("Target.closeTarget", {"targetId": target})
        if info["scrollWidth"] > info["width"] + 1:
            problems.append(f"{page}: the page scrolls sideways ({info['scrollWidth']} px wide in {info['width']} px)")
        problems += [f"{page}: {what}" for what in info["wide"][:5]]
        problems += [f"{page}: image without alt text: {src}" for src in info["noAlt"]]
        problems += [f"{page}: {f['share']:.0%} of '{f['alt']}' shows without scrolling" for f in info["cut"]]
        problems += [f"{page}: output that does not wrap: {what}" for what in info["unwrapped"][:5]]
        zoom = info["zoom"]
        if width < 600 and zoom is not None:  # a phone shows a figure at the column's width; a tap, at its own
            if not (zoom["link"] and zoom["fixed"] and zoom["close"] and zoom["shown"] >= zoom["natural"] - 1):
                problems.append(f"{page}: a tap on '{zoom['alt']}' does not open it full size: {zoom}")
    assert not problems, f"at {width} px:\n" + "\n".join(problems)
