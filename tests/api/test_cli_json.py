"""The CLI held to the API's contract: ``--json`` prints JSON only on stdout (logs go to stderr); ``--version``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from worker.cli import main
from worker.devtools.demo.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]


def test_pay_and_tokens_list_json_are_pure_json(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway call's log lines go to stderr: a script can parse stdout as it is."""
    capsys.readouterr()
    assert main(["pay", "CLI_JSON_1", "5.00", "--user", "u_json", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["state"] == "PENDING"
    assert main(["tokens", "list", "u_json", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_version() -> None:
    answer = subprocess.run([sys.executable, "-m", "worker", "--version"], capture_output=True, text=True,
                            cwd=ROOT, check=False, timeout=60)
    assert answer.returncode == 0 and answer.stdout.strip() == f"checus-worker {version('checus-payment-worker')}"


def test_every_command_has_a_help_text() -> None:
    import click

    from worker.cli import cli

    def commands(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
        found: list[tuple[str, click.Command]] = []
        for name, command in group.commands.items():
            found.append((f"{path} {name}", command))
            if isinstance(command, click.Group):
                found += commands(command, f"{path} {name}")
        return found

    assert [path for path, command in commands(cli, "checus-worker") if not command.help] == []


def test_a_negative_amount_is_refused_as_an_amount(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    """`pay X -1` is one line naming the amount's problem (it was "No such option '-1'"), and stores nothing."""
    capsys.readouterr()
    assert main(["pay", "CLI_NEG", "-1", "--user", "u_neg"]) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: invalid_request: ") and "positive" in line
    assert stack.service.get_order("CLI_NEG") is None


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process's runtime built anew from the environment: a store never upgraded, a Redis nobody runs."""
    from worker import bootstrap
    from worker.devtools.demo.redis_server import free_port

    monkeypatch.setattr(bootstrap, "_process_runtime", None)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    return tmp_path


def test_a_store_without_its_schema_is_one_line_naming_db_upgrade(fresh_process: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["order", "show", "ANY"]) == 78
    assert capsys.readouterr().err.splitlines() == [
        "error: store_not_ready: the store has no schema yet; run `checus-worker db upgrade`"]


def test_redis_down_during_status_is_one_line(fresh_process: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["status"]) == 69
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: redis_unavailable: ") and line.endswith("start it or fix REDIS_URL")


def test_tokens_take_the_user_as_pay_does(stack: EmbeddedStack, capsys: pytest.CaptureFixture[str]) -> None:
    """`--user U` like `pay`; the older positional form still works; neither is a usage error."""
    capsys.readouterr()
    assert main(["tokens", "list", "--user", "u_opt", "--json", "--no-sync"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["tokens", "list", "u_opt", "--json", "--no-sync"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["tokens", "list", "--json"]) == 2
    assert main(["tokens", "remove", "7", "--user", "u_opt"]) == 3  # no such card of this user: refused
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: token_not_found"
