"""Run-directory safety: strict JSON, checkpoints that load tensors and plain values only (a
pickle payload executes nothing), and one process at a time per run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from avi.runs.rundir import json_text, read_json, write_json


def test_json_text_writes_non_finite_numbers_as_null() -> None:
    obj = {
        "nan": math.nan,
        "inf": math.inf,
        "rows": [{"val": -math.inf, "ok": 1.5}, (np.float32("nan"), np.float64(2.0), np.int64(3))],
        "tensor": torch.tensor(float("nan")),
        "finite_tensor": torch.tensor(0.25),
        "flag": True,
        "text": "NaN",
    }
    text = json_text(obj, indent=2)
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "rows": [{"val": None, "ok": 1.5}, [None, 2.0, 3]],
        "tensor": None,
        "finite_tensor": 0.25,
        "flag": True,
        "text": "NaN",
    }


def test_write_json_output_parses_strictly(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json(path, {"val_elbo": math.nan, "train_elbo": -1.0})

    def refuse(token: str) -> float:
        raise AssertionError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"val_elbo": None, "train_elbo": -1.0}
    assert read_json(path)["val_elbo"] is None
