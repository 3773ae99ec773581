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


def test_quick_mode_says_why_there_is_no_official_column(tiny_model: Any, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "samrt.bench", str(tiny_model.engine_dir), "--quick", "--json", str(report_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    jsonschema.validate(report, BENCH_SCHEMA)
    assert {r["runs"] for r in report["results"] if r["case"] != "predict_1"} == {1}  # --repeat 1
    assert "generate" not in {r["case"] for r in report["results"]}
    assert report["official_skipped"] == "not asked for (--quick)"
    assert "vs official: none, not asked for (--quick)" in result.stdout
    # The full backend name, not cut to the column.
    names = {r["implementation"] for r in report["results"]}
    assert all(name in result.stdout for name in names), result.stdout
    assert result.stderr == ""  # no progress in a pipe


def test_without_a_checkpoint_the_reason_is_given(tiny_model: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "samrt.bench", str(tiny_model.engine_dir), "--repeat", "1", "--warmup", "0",
         "--skip", "generate,predict_batch_64,predict_batch_256,predict_1,set_image"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "vs official: none, no checkpoint: pass --checkpoint FILE" in result.stdout


def test_peak_rss_is_the_case_peak_where_it_can_be_reset() -> None:
    import numpy as np

    from samrt import bench

    big = bench._measure_case(lambda: np.ones(2**27, dtype=np.uint8).sum(), 1, 0)  # 128 MiB
    small = bench._measure_case(lambda: None, 1, 0)
    assert big[2] == small[2]
    if small[2] == "case":
        assert big[1] - small[1] > 100  # MB: the earlier case's peak is not carried over
