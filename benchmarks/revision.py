"""Another revision of the package, importable next to this checkout's, for before/after runs.

``import_revision("v1")`` exports ``langgraph_resilient/`` at that git revision into a temporary
folder under another package name (``lgr_<sha>``), with its imports and its Prometheus metric
names rewritten so that both versions load in one process without clashing. The benchmark then
runs that version's savers side by side with this checkout's, in the same run.
"""

from __future__ import annotations

import atexit
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "langgraph_resilient"


def import_revision(rev: str) -> str:
    """Make ``rev``'s package importable; returns its module name."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=10", rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    name = f"lgr_{sha}"
    if name in sys.modules:
        return name
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha, PACKAGE], cwd=ROOT, check=True, capture_output=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="lgr-rev-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / PACKAGE).rename(folder / name)
    for path in (folder / name).rglob("*.py"):
        text = path.read_text()
        text = re.sub(rf"\b{PACKAGE}\b", name, text)
        # Metric names are global to the process: the copy's must not collide with ours.
        text = re.sub(
            r'(["\'])langgraph_(checkpoint|lease|node|breaker|degradation)_', rf"\1{name}_\2_", text
        )
        path.write_text(text)
    sys.path.insert(0, str(folder))
    return name
