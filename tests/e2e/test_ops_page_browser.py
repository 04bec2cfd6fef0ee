"""The ops page in a real browser: headless Chromium renders it, and the screenshot is checked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image, ImageStat

from tests.e2e.test_operations import TOKEN
from tests.e2e.test_payment_flows import first_payment
from worker.devtools.demo.stack import EmbeddedStack
from worker.devtools.serving import serve_in_thread
from worker.receiver.web import receiver_app

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1280,900"]
HEADER_RGB = (0x1D, 0x27, 0x33)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed (apt-get install chromium; .ci/system-deps installs it)"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=90, check=False)


def test_ops_page_renders_in_chromium(stack: EmbeddedStack, tmp_path: Path) -> None:
    first_payment(stack, "BROWSER_ORDER")
    stack.rt.settings = stack.rt.settings.with_overrides(ops_token=TOKEN)
    served = serve_in_thread(receiver_app(stack.rt), name="ops-browser")
    try:
        url = f"{served.base_url}/ops/orders/BROWSER_ORDER?token={TOKEN}"
        dom = chromium("--dump-dom", url, profile=tmp_path / "p1").stdout.decode()
        assert "Payment BROWSER_ORDER" in dom and "report_success" in dom and "Timeline" in dom
        shot = tmp_path / "ops-order.png"
        chromium(f"--screenshot={shot}", url, profile=tmp_path / "p2")
        overview = tmp_path / "ops-overview.png"
        chromium(f"--screenshot={overview}", f"{served.base_url}/ops?token={TOKEN}", profile=tmp_path / "p3")
    finally:
        served.stop()
    for path in (shot, overview):
        image = Image.open(path).convert("RGB")
        assert image.size == (1280, 900)
        header = image.getpixel((640, 10))
        assert isinstance(header, tuple)
        assert all(abs(a - b) <= 8 for a, b in zip(header, HEADER_RGB, strict=True)), header  # the dark header bar
        body = image.crop((0, 60, 1280, 600))
        assert max(ImageStat.Stat(body).stddev) > 10  # tables and text were drawn, not a blank page
    artifacts = Path("test-artifacts")
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "ops-order.png")
    shutil.copy(overview, artifacts / "ops-overview.png")
