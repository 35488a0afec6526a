"""Library code draws figures without process-wide state: no backend selection, no pyplot."""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "avi"


def test_no_module_under_src_avi_selects_a_matplotlib_backend_or_uses_pyplot() -> None:
    # matplotlib.use(...) and pyplot's global figure manager belong to the program that runs
    # avi, not to the library: figures are matplotlib.figure.Figure objects saved directly
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}"
        for path in sorted(SOURCE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bmatplotlib\s*\.\s*use\s*\(|\bpyplot\b", line)
    ]
    assert len(list(SOURCE.rglob("*.py"))) > 50  # the search looked at the package
    assert offenders == []
