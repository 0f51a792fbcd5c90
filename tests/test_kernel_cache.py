"""The compiled kernels' on-disk cache: where it goes when the installed package cannot be written to.

bayes/'s numba kernels are compiled with ``cache=True``.  numba looks for a cache directory in this
order: ``NUMBA_CACHE_DIR`` when set, the package's own ``__pycache__`` when writable, else the user's
cache directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``).  These tests install a copy of the
package read-only and check that the kernels are cached in the user's directory and loaded from there
by the next process — so a read-only install (a system site-packages, a container image) compiles
once per user, not at every first ``sample()``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# one small kernel of fastdens (its numba locator is the module's, as for every kernel there)
CHILD = """
import json, sys
import numpy as np
from bayesmix.bayes import fastdens
assert fastdens.__file__.startswith(sys.argv[1]), fastdens.__file__
value = fastdens._dot(np.arange(3.0), np.arange(3.0))
stats = fastdens._dot.stats
print(json.dumps({"value": value, "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                  "cache_path": fastdens._dot._cache.cache_path}))
"""


def _read_only_copy(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(ROOT / "bayesmix", site / "bayesmix", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [site, *site.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return site


def _run(site: Path, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-c", CHILD, str(site)]
    if os.geteuid() == 0:  # root writes through file modes: make the copy a read-only mount instead
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare(1): cannot make the package copy read-only")
        script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" || exit 97; exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(site), *command]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=home, check=False)
    if proc.returncode == 97 or (os.geteuid() == 0 and "unshare:" in proc.stderr):
        pytest.skip(f"running as root and cannot mount the package copy read-only: {proc.stderr.strip()[-200:]}")
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_read_only_install_caches_the_kernels_in_the_user_cache_directory(tmp_path):
    site = _read_only_copy(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    first = _run(site, home)
    assert first["value"] == 5.0
    assert first["misses"] == 1 and first["hits"] == 0  # compiled ...
    user_cache = home / ".cache" / "numba"
    assert Path(first["cache_path"]).is_relative_to(user_cache)
    written = sorted(p.name for p in user_cache.rglob("fastdens._dot-*"))
    assert any(n.endswith(".nbi") for n in written) and any(n.endswith(".nbc") for n in written), written
    assert not list(site.rglob("*.nbi"))  # ... and nothing written into the package
    second = _run(site, home)
    assert second["value"] == 5.0
    assert second["hits"] == 1 and second["misses"] == 0  # the next process loads it from the user's cache
