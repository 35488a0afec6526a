"""``avi fit --precision``: bf16 where the hardware has it, a one-line fallback where not."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from avi.precision import bf16_supported
from tests.runs.conftest import small_job


def test_fit_precision_flag(run_avi, tmp_path: Path) -> None:
    """``avi fit --precision bf16`` trains in bf16 where the CPU has it and says it falls back
    otherwise; the summary records the precision used."""
    config = tmp_path / "job.toml"
    config.write_text(small_job(2))
    run = tmp_path / "bf16"
    fitted = run_avi("fit", str(config), "--precision", "bf16", "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    summary = json.loads((run / "summary.json").read_text())
    expected = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    assert summary["precision"] == expected
    assert ("running in fp32" in fitted.stderr) == (expected == "fp32")
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "bf16"
    bad = run_avi("fit", str(config), "--precision", "fp8", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "precision" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
