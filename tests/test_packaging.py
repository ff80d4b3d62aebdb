"""A regular wheel install: one `xlsearch` namespace, nothing else at the top of site-packages."""
from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, text=True)
    (found,) = out.glob("xlsearch-*.whl")
    return found


def test_wheel_holds_one_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"xlsearch"}
    for module in ("xlsearch/__init__.py", "xlsearch/indexer/writing/writer.py", "xlsearch/search/searcher.py",
                   "xlsearch/api/cli/main.py", "xlsearch/api/http/app.py"):
        assert module in names


@pytest.mark.slow
def test_installed_wheel_searches_from_anywhere(wheel, tmp_path, sample_index):
    """Installed into a fresh environment (dependencies from this one), run from a folder that is
    not the checkout: `import xlsearch` and the `xlsearch` script come from the wheel."""
    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, text=True)
    run = dict(cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    where = subprocess.run([str(python), "-c", "import xlsearch; print(xlsearch.__file__)"], **run)
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout and str(REPO) not in where.stdout
    found = subprocess.run([str(env_dir / "bin" / "xlsearch"), "search", "--index", str(sample_index),
                            "volcano", "--mode", "lexical", "--json", "-k", "1"], **run)
    assert found.returncode == 0, found.stderr
    assert '"hits": [{' in found.stdout
