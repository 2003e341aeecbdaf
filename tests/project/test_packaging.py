"""The built wheel carries the templates (the library's and the sandbox's), the translations and ``py.typed``;
installed into a fresh virtualenv (dependencies from the package index), it runs the example site -- a copy of
``example_site/`` only, so nothing is imported from this source tree."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_HINTS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                 "No matching distribution found", "Could not find a version", "ConnectTimeout", "ProxyError")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _run(args: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _skip_if_offline(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0 and any(hint in result.stdout + result.stderr for hint in OFFLINE_HINTS):
        pytest.skip(f"{what}: pip cannot reach the package index ({result.stderr.strip().splitlines()[-1]})")
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources (the build leaves no build/ or egg-info in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "flask_patronlock", src / "flask_patronlock",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    result = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                  cwd=tmp, timeout=600)
    _skip_if_offline(result, "building the wheel")
    (built,) = out.glob("flask_patronlock-*.whl")
    return built


def test_the_wheel_carries_templates_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "flask_patronlock/py.typed" in names
    for template in (ROOT / "flask_patronlock").rglob("templates/**/*"):
        if template.is_file():
            assert template.relative_to(ROOT).as_posix() in names
    assert "flask_patronlock/templates/patronlock/banners/_banner.html" in names
    assert "flask_patronlock/sandbox/templates/patronlock_sandbox/authorize.html" in names
    for static in (ROOT / "flask_patronlock").rglob("static/**/*"):
        if static.is_file():
            assert static.relative_to(ROOT).as_posix() in names
    for catalogue in (ROOT / "flask_patronlock" / "translations").rglob("*"):
        if catalogue.is_file():  # the gettext template, each language's .po and its compiled .mo
            assert catalogue.relative_to(ROOT).as_posix() in names
    assert "flask_patronlock/translations/de/LC_MESSAGES/flask_patronlock.mo" in names
    assert not any(n.startswith(("tests/", "example_site/")) for n in names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_example_site_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120).check_returncode()
    python = venv / "bin" / "python"
    result = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                  cwd=tmp_path, timeout=900)
    _skip_if_offline(result, "installing the wheel")

    site = tmp_path / "site"
    shutil.copytree(ROOT / "example_site", site / "example_site",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "instance"))
    where = _run([str(python), "-c", "import flask_patronlock; print(flask_patronlock.__file__)"], cwd=site,
                 timeout=60)
    assert where.returncode == 0 and str(venv) in where.stdout, where

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(site)
    log = (tmp_path / "site.log").open("w")
    proc = subprocess.Popen([str(python), "-m", "example_site", "--port", str(port)], cwd=site, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        index = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                index = requests.get(base + "/", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert index is not None, (tmp_path / "site.log").read_text()
        assert index.status_code == 200 and "Welcome to the studio" in index.text
        locked = requests.get(base + "/posts/process", timeout=10)
        assert locked.status_code == 200
        assert 'data-patronlock-reason="anonymous"' in locked.text and "twenty-step process" not in locked.text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
