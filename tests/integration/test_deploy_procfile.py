"""The Procfile, run as is by honcho against the simulator: a card payment completes, and the
process group stops cleanly on SIGTERM.

Real processes throughout: ``honcho start web worker scheduler sim`` with a ``.env`` file
(keys generated now, private ones as mode-0600 files read through ``*_FILE``), a private
redis-server, SQLite in a temporary directory, timers scaled by 0.01. The payment is created
from this process through ``PaymentService``, the cashier page is "paid", and the order must
reach SUCCESS through the simulator's notification → ``web`` → ``worker``.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq import Worker

from worker.bootstrap import build_runtime
from worker.config import Settings
from worker.devtools.demo.redis_server import RedisServer, free_port
from worker.gateway.signing import generate_portal_key_pair
from worker.runtime import Timers
from worker.scheduler import LEASE_KEY
from worker.service import PaymentService

ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"
SIM_PORT = 8090  # the Procfile's sim line: `checus-worker sim --port 8090`
PROCESSES = ("web", "worker", "scheduler", "sim")
APP_ID, MERCHANT_NO = "PROCFILE_APP", "PROCFILE_MERCHANT"
START_TIMEOUT = 25.0
PAYMENT_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
HONCHO_SIGTERM_RC = 143  # what honcho exits with after a SIGTERM it handled (honcho.manager.SIGNALS)

# Inherited variables that would change what the processes read (the .env file must be the only source).
_PRODUCT_VARIABLES = re.compile(r"^(CHECUS_|REDIS_URL$|DATABASE_URL$|LOG_LEVEL$)")


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    return path


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    """A honcho/foreman ``.env``: one ``NAME='value'`` a line."""
    path.write_text("".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items()))


def _wait(condition: Callable[[], bool], *, timeout: float, what: str, log: Path,
          honcho: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if honcho is not None and honcho.poll() is not None:
            pytest.fail(f"honcho exited ({honcho.returncode}) while waiting for {what}:\n{_tail(log)}")
        try:
            if condition():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} not within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 60) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no output)"
    return "\n".join(text.splitlines()[-lines:])


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def test_procfile_under_honcho_completes_a_card_payment_and_stops_cleanly(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """`honcho start web worker scheduler sim` with the Procfile as is: a paid order reaches SUCCESS."""
    if not _port_is_free(SIM_PORT):
        pytest.fail(f"127.0.0.1:{SIM_PORT} is taken: the Procfile's sim line listens on --port {SIM_PORT}; "
                    f"stop whatever holds it (ss -ltnp 'sport = :{SIM_PORT}')")
    merchant, platform = generate_portal_key_pair(), generate_portal_key_pair()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    sim_url = f"http://127.0.0.1:{SIM_PORT}"
    settings_env = {
        "CHECUS_GATEWAY_URL": sim_url,
        "CHECUS_APP_ID": APP_ID,
        "CHECUS_MERCHANT_NO": MERCHANT_NO,
        "CHECUS_MERCHANT_PRIVATE_KEY_FILE": str(_write_private(keys / "merchant_private_key.txt",
                                                               merchant.private_key)),
        "CHECUS_PLATFORM_PUBLIC_KEYS": platform.public_key,
        "CHECUS_NOTIFY_BASE_URL": web_url,
        "CHECUS_RECEIVER_HOST": "127.0.0.1",
        "CHECUS_RECEIVER_PORT": str(web_port),
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'checus.db'}",
        "CHECUS_TIME_SCALE": "0.01",
        "LOG_LEVEL": "INFO",
    }
    sim_env = {
        "CHECUS_SIM_APP_ID": APP_ID,
        "CHECUS_SIM_MERCHANT_NO": MERCHANT_NO,
        "CHECUS_SIM_MERCHANT_PUBLIC_KEYS": merchant.public_key,
        "CHECUS_SIM_PLATFORM_PRIVATE_KEY_FILE": str(_write_private(keys / "platform_private_key.txt",
                                                                   platform.private_key)),
        "CHECUS_SIM_TIME_SCALE": "0.01",
    }
    env_file = tmp_path / ".env"
    _write_env_file(env_file, settings_env | sim_env)
    # The console scripts of this environment first on PATH; no inherited product setting.
    base_env = {k: v for k, v in os.environ.items() if not _PRODUCT_VARIABLES.match(k)}
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}"
    honcho_cmd = [sys.executable, "-m", "honcho", "--no-colour", "-f", str(PROCFILE), "-e", str(env_file)]

    upgrade = subprocess.run([*honcho_cmd, "run", "checus-worker", "db", "upgrade"], cwd=tmp_path, env=base_env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "schema at revision" in upgrade.stdout

    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen([*honcho_cmd, "start", *PROCESSES], cwd=tmp_path, env=base_env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    settings = Settings.from_env(settings_env)
    rt = build_runtime(settings, timers=Timers().scaled(settings.time_scale))
    redis = Redis.from_url(redis_server.url)
    try:
        _wait(lambda: _ok(f"{web_url}/healthz"), timeout=START_TIMEOUT, what="web /healthz", log=log, honcho=honcho)
        _wait(lambda: _ok(f"{sim_url}/__sim/health"), timeout=START_TIMEOUT, what="the simulator", log=log,
              honcho=honcho)
        _wait(lambda: Worker.count(connection=redis) >= 1, timeout=START_TIMEOUT, what="an rq worker",
              log=log, honcho=honcho)
        _wait(lambda: redis.exists(LEASE_KEY) == 1, timeout=START_TIMEOUT, what="the scheduler's lease",
              log=log, honcho=honcho)

        payments = PaymentService(rt)
        result = payments.create_card_payment(
            out_trade_no="PROCFILE_ORDER_1", amount=Decimal("12.34"), currency="USD", user_id="user_procfile",
            subject="Procfile", front_callback_url="https://shop.example/return")
        assert result.redirect_url, f"no cashier URL: {result}"
        paid = httpx.post(result.redirect_url, data={"action": "success"}, timeout=10)
        assert paid.status_code == 200, paid.text

        def succeeded() -> bool:
            view = payments.get_order("PROCFILE_ORDER_1")
            return view is not None and view.order.state == "SUCCESS"

        _wait(succeeded, timeout=PAYMENT_TIMEOUT, what="order PROCFILE_ORDER_1 in SUCCESS", log=log, honcho=honcho)
        attempts = httpx.get(f"{sim_url}/__sim/notifications", params={"key": "PROCFILE_ORDER_1"},
                             timeout=5).json()["attempts"]
        assert any(a["acked"] and a["url"].startswith(web_url) for a in attempts), \
            f"the web process did not acknowledge the payment notification: {attempts}"
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)
        try:
            returncode = honcho.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
            pytest.fail(f"honcho did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM:\n{_tail(log)}")
        finally:
            rt.engine.dispose()
            redis.close()

    output = log.read_text(errors="replace")
    assert returncode == HONCHO_SIGTERM_RC, f"honcho exited {returncode}:\n{_tail(log)}"
    assert "SIGKILL" not in output, f"a process had to be killed:\n{_tail(log)}"
    assert "Traceback" not in output, _tail(log)
    for name in PROCESSES:
        stopped = re.search(rf"\| {name}\.1 stopped \(rc=(-?\d+)\)", output)
        assert stopped, f"{name} did not stop:\n{_tail(log)}"
        # 0, or -15: honcho runs each line through `sh -c`, and the shell itself dies of the SIGTERM
        # honcho sends to the line's process group; the product process then finishes on its own.
        assert stopped.group(1) in {"0", "-15"}, f"{name} exited {stopped.group(1)}:\n{_tail(log)}"
    # Each role shut down gracefully rather than dying of the signal:
    assert re.search(r"web\.1 +\| .*Finished server process", output), f"web did not shut down:\n{_tail(log)}"
    redis = Redis.from_url(redis_server.url)
    try:
        assert Worker.count(connection=redis) == 0, "the rq worker did not deregister (warm shutdown)"
        assert redis.exists(LEASE_KEY) == 0, "the scheduler did not release its lease"
    finally:
        redis.close()


ENV_EXAMPLE = ROOT / ".env.example"


def _example_settings() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


def test_env_example_as_shipped_runs_every_procfile_role_against_the_simulator(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """`cp .env.example .env; checus-worker keys dev; db upgrade; honcho start`: a paid order reaches SUCCESS.

    Only addresses are moved (a private Redis, a temporary store, free ports for web and api); the ids,
    key files and gateway URL are the example's."""
    if not _port_is_free(SIM_PORT):
        pytest.fail(f"127.0.0.1:{SIM_PORT} is taken: the Procfile's sim line listens on --port {SIM_PORT}")
    example = _example_settings()
    web_port = free_port()
    moved = {"REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite:///{tmp_path / 'checus.db'}",
             "CHECUS_RECEIVER_PORT": str(web_port), "CHECUS_NOTIFY_BASE_URL": f"http://127.0.0.1:{web_port}",
             "CHECUS_API_PORT": str(free_port())}
    assert set(moved) <= set(example), f".env.example lacks {set(moved) - set(example)}"
    text = ENV_EXAMPLE.read_text()
    for name, value in moved.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
    (tmp_path / ".env").write_text(text)
    base_env = {k: v for k, v in os.environ.items() if not _PRODUCT_VARIABLES.match(k)}
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}"
    honcho_cmd = [sys.executable, "-m", "honcho", "--no-colour", "-f", str(PROCFILE)]  # reads ./.env
    for command in (["keys", "dev"], ["db", "upgrade"]):
        done = subprocess.run([*honcho_cmd, "run", "checus-worker", *command], cwd=tmp_path, env=base_env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / example["CHECUS_MERCHANT_PRIVATE_KEY_FILE"]).stat().st_mode & 0o077 == 0

    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        honcho = subprocess.Popen([*honcho_cmd, "start"], cwd=tmp_path, env=base_env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    settings_env = {**example, **moved}
    for name in ("CHECUS_MERCHANT_PRIVATE_KEY_FILE", "CHECUS_PLATFORM_PUBLIC_KEYS_FILE"):
        settings_env[name] = str(tmp_path / example[name])  # relative to where honcho runs
    settings = Settings.from_env(settings_env)
    rt = build_runtime(settings, timers=Timers())
    try:
        web_url, sim_url = moved["CHECUS_NOTIFY_BASE_URL"], example["CHECUS_GATEWAY_URL"]
        for what, url in (("web", f"{web_url}/healthz"), ("the simulator", f"{sim_url}/__sim/health"),
                          ("api", f"http://127.0.0.1:{moved['CHECUS_API_PORT']}/healthz")):
            _wait(functools.partial(_ok, url), timeout=START_TIMEOUT, what=what, log=log, honcho=honcho)
        _wait(lambda: Worker.count(connection=rt.redis) >= 1, timeout=START_TIMEOUT, what="an rq worker",
              log=log, honcho=honcho)
        payments = PaymentService(rt)
        result = payments.create_card_payment(
            out_trade_no="EXAMPLE_ORDER_1", amount=Decimal("3.21"), currency="USD", user_id="user_example",
            subject="Example", front_callback_url="https://shop.example/return")
        assert result.redirect_url, f"no cashier URL: {result}"
        assert httpx.post(result.redirect_url, data={"action": "success"}, timeout=10).status_code == 200

        def succeeded() -> bool:
            view = payments.get_order("EXAMPLE_ORDER_1")
            return view is not None and view.order.state == "SUCCESS"

        _wait(succeeded, timeout=PAYMENT_TIMEOUT, what="order EXAMPLE_ORDER_1 in SUCCESS", log=log, honcho=honcho)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        rt.engine.dispose()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output and "not_configured" not in output, _tail(log)
