"""samrt-bench as a user runs it: a subprocess, its JSON report validated against BENCH_SCHEMA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema

from samrt.bench import BENCH_SCHEMA


def test_bench_json_matches_its_schema(tiny_model: Any, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "samrt.bench", str(tiny_model.engine_dir), "--checkpoint", str(tiny_model.checkpoint),
         "--repeat", "1", "--warmup", "0", "--skip", "generate,predict_batch_256", "--json", str(report_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    jsonschema.validate(report, BENCH_SCHEMA)
    cases = {(r["implementation"].split(" ")[0], r["case"]) for r in report["results"]}
    assert ("onnxruntime", "set_image") in cases and ("onnxruntime", "predict_batch_64") in cases
    assert "predict_1" in result.stdout  # the terminal table


def test_bench_rejects_unknown_case() -> None:
    result = subprocess.run([sys.executable, "-m", "samrt.bench", "--random-weights", "--skip", "nope"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "unknown case" in result.stderr
