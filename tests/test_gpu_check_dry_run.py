"""The prepared GPU check (benchmarks/gpu/), on this CPU machine.

* ``check.sh --cpu-dry-run``: the same steps as on the GPU (parity against the official
  SamPredictor, fp16 against fp32, the benchmark, TensorRT or why not) with the CPU provider
  and the tiny model; every output file must be there, parse, and say what the GPU run's
  would say: the parity and fp16 steps passed against the CPU tests' tolerances.
* ``prepare.sh``'s parts, on small fake wheels (no network): split, checksums, verification
  between carries, reassembly byte for byte, and the refusals of a corrupt, missing or
  mixed-up part.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tolerances import FP16_MIN_MASK_IOU, PARITY_MIN_MASK_IOU

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
STEP_FILES = [
    "step0_env.json",
    "step1_parity.json",
    "step2_fp16.json",
    "step3_bench.json",
    "step4_tensorrt.json",
]
IMPLEMENTATIONS = {("samrt", "fp32"), ("samrt", "fp16"), ("official", "fp32"), ("official", "bf16")}
CASES = {"set_image", "predict_1", "predict_low_res", "predict_batch", "generate"}
# The dry run's own budget (check.sh --budget-s) and the test's bound around it.
DRY_RUN_BUDGET_S = 240
DRY_RUN_TIMEOUT_S = DRY_RUN_BUDGET_S + 60


def _bash(
    *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *map(str, args)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


# ---------------------------------------------------------------------------------------
# check.sh --cpu-dry-run


@pytest.fixture(scope="module")
def dry_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("gpu-check")
    out = root / "out"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    result = subprocess.run(
        [
            "bash",
            str(GPU / "check.sh"),
            "--cpu-dry-run",
            "--out",
            str(out),
            "--work",
            str(root / "work"),
            "--budget-s",
            str(DRY_RUN_BUDGET_S),
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=DRY_RUN_TIMEOUT_S,
        env={**env, "PYTHON": sys.executable},
    )
    return out, result


def _load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_dry_run_writes_every_file(dry_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = dry_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*STEP_FILES, "summary.json", "check.log"]
    )
    for name in STEP_FILES:
        data = _load(out, name)
        assert data["mode"] == "cpu-dry-run" and data["seconds"] >= 0, name
        assert data["status"] in ("done", "passed", "skipped"), (name, data.get("error"))
    summary = _load(out, "summary.json")
    assert summary["ok"] is True and summary["problems"] == []
    assert summary["mode"] == "cpu-dry-run" and summary["targets_apply"] is False
    assert [s["stage"] for s in summary["setup_stages"]] == ["check_imports", "engine"]
    assert {name: s["status"] for name, s in summary["steps"].items()} == {
        "env": "done",
        "parity": "passed",
        "fp16": "passed",
        "bench": "done",
        "tensorrt": "skipped",
    }
    # The log holds what the run printed, the steps' lines too.
    log = (out / "check.log").read_text()
    assert "step parity: passed" in log and "summary: ok=True" in log


def test_dry_run_env_names_the_cpu_provider(
    dry_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    env = _load(dry_run[0], "step0_env.json")
    assert "CPUExecutionProvider" in env["onnxruntime"]["providers"]
    assert (
        env["mode_config"]["model_type"] == "tiny"
        and env["mode_config"]["backend"] == "onnxruntime-cpu"
    )
    assert env["image"] == {"name": "dog.jpg", "height": 534, "width": 800}


def test_dry_run_parity_matches_official(
    dry_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    parity = _load(dry_run[0], "step1_parity.json")
    assert (
        parity["status"] == "passed" and parity["backend"] == "onnxruntime (CPUExecutionProvider)"
    )
    assert parity["tolerances"]["min_mask_iou"] == PARITY_MIN_MASK_IOU
    assert parity["embedding_max_abs_diff_rel"] <= parity["tolerances"]["embedding_atol_rel"]
    assert {
        "single_point_multimask",
        "box",
        "return_logits",
        "mask_input_from_previous_call",
        "mask_input_alone",
        "no_prompt",
    } <= set(parity["cases"])
    for name, case in parity["cases"].items():
        assert case["passed"] and case["shapes_equal"], name
        assert case["min_mask_iou"] >= PARITY_MIN_MASK_IOU, name
        assert case["score_max_abs_diff"] <= parity["tolerances"]["score_atol"], name
    assert "logits_max_abs_diff_rel" in parity["cases"]["return_logits"]


def test_dry_run_fp16_matches_fp32(dry_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    fp16 = _load(dry_run[0], "step2_fp16.json")
    assert fp16["status"] == "passed" and fp16["tolerances"]["min_mask_iou"] == FP16_MIN_MASK_IOU
    assert fp16["min_mask_iou"] >= FP16_MIN_MASK_IOU
    assert all(case["passed"] for case in fp16["cases"].values())
    assert {"mask_input_multimask_False", "mask_input_multimask_True"} <= set(fp16["cases"])


def test_dry_run_bench_has_every_case(
    dry_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    bench = _load(dry_run[0], "step3_bench.json")
    assert bench["status"] == "done" and bench["skipped"] == {}
    rows = bench["results"]
    assert {(r["kind"], r["precision"], r["case"]) for r in rows} == {
        (k, p, c) for k, p in IMPLEMENTATIONS for c in CASES
    }
    for r in rows:
        assert r["runs"] == len(r["times_s"]) >= 1
        assert 0 < r["min_s"] <= r["median_s"] <= max(r["times_s"])
        # No nvidia-smi on a CPU machine: said so, not made up.
        assert r["gpu_memory"] == {"source": None, "reason": "nvidia-smi not found"}
        if r["kind"] == "samrt":
            official = next(
                o
                for o in rows
                if o["kind"] == "official" and o["precision"] == "fp32" and o["case"] == r["case"]
            )
            assert r["speedup_vs_official_fp32"] == pytest.approx(
                official["median_s"] / r["median_s"]
            )
        if r["case"] == "generate":
            assert r["masks"] >= 0
    targets = bench["targets"]
    assert set(targets) == {
        "set_image_samrt_fp16_vs_official_fp32",
        "generate_samrt_fp16_vs_official_fp32",
    }
    assert all(t["applies"] is False and t["ratio"] > 0 for t in targets.values())


def test_dry_run_says_why_tensorrt_was_skipped(
    dry_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt imports here: the dry run then tries to build (no GPU: an error)")
    trt = _load(dry_run[0], "step4_tensorrt.json")
    assert trt["status"] == "skipped" and trt["reason"].startswith(
        "tensorrt not importable: skipped ("
    )


def test_summary_reports_unfinished_steps(
    dry_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    # As after a time-out in the benchmark: its file and TensorRT's are missing.
    out = tmp_path / "out"
    shutil.copytree(dry_run[0], out)
    (out / "step3_bench.json").unlink()
    (out / "step4_tensorrt.json").unlink()
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(GPU / "check.py"),
            "summarize",
            "--mode",
            "gpu",
            "--work",
            str(work),
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    summary = _load(out, "summary.json")
    assert summary["ok"] is False and summary["all_steps_finished"] is False
    assert summary["steps"]["bench"]["status"] == "missing"
    assert (
        "step bench missing" in summary["problems"]
        and "step tensorrt missing" in summary["problems"]
    )
    assert summary["steps"]["parity"]["status"] == "passed"


# ---------------------------------------------------------------------------------------
# prepare.sh's parts, on fake wheels


def _fake_wheel(folder: Path, name: str, payload: int, seed: int) -> Path:
    """A wheel-shaped zip with an incompressible payload of ``payload`` bytes."""
    import random

    path = folder / f"{name}-1.0-py3-none-any.whl"
    data = random.Random(seed).randbytes(payload)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        wheel.writestr(f"{name}/payload.bin", data)
        wheel.writestr(
            f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
        )
    return path


@pytest.fixture()
def fake_parts(tmp_path: Path) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels, "big", 2_400_000, seed=1)
    _fake_wheel(wheels, "small", 5_000, seed=2)
    parts = tmp_path / "parts"
    result = _bash(
        GPU / "prepare.sh",
        "--wheels-from",
        wheels,
        "--part-mib",
        "1",
        "--xz-level",
        "0",
        "--parts",
        parts,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return wheels, parts, result


def test_prepare_splits_into_ordered_parts(
    fake_parts: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    _, parts, result = fake_parts
    folders = sorted(p.name for p in parts.iterdir() if p.is_dir())
    assert folders == ["part-1-of-3", "part-2-of-3", "part-3-of-3"]
    for folder in folders:
        assert sorted(p.name for p in (parts / folder).iterdir()) == ["SHA256SUMS", "chunk"]
        assert (parts / folder / "chunk").stat().st_size <= 1024 * 1024
        assert (parts / folder / "SHA256SUMS").read_bytes() == (parts / "SHA256SUMS").read_bytes()
    sums = (parts / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == [
        "wheels/big-1.0-py3-none-any.whl",
        "wheels/small-1.0-py3-none-any.whl",
        "gpu-wheels.tar.xz",
        "part-1-of-3/chunk",
        "part-2-of-3/chunk",
        "part-3-of-3/chunk",
    ]
    # The order of the carries, one part folder per run, the check with the last.
    order = (parts / "ORDER.txt").read_text()
    assert order in result.stdout
    runs = [line.strip() for line in order.splitlines() if line.strip().startswith("run ")]
    # (a parts folder outside the checkout is named by its absolute path)
    assert [r.split('carry=["')[1].split('"]')[0] for r in runs] == [
        f"{parts}/part-{k}-of-3" for k in (1, 2, 3)
    ]
    assert "--receive" in runs[0] and "--receive" in runs[1] and "--receive" not in runs[2]
    assert "round trip ok" in result.stdout and "working tree" in result.stdout


def test_unpack_gives_the_wheels_back(
    fake_parts: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    wheels, parts, _ = fake_parts
    result = _bash(GPU / "check.sh", "--unpack-only", "--parts", parts, "--work", tmp_path / "work")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["big-1.0-py3-none-any.whl", "small-1.0-py3-none-any.whl"]
    for wheel in wheels.iterdir():
        assert (
            tmp_path / "work" / "unpacked" / "wheels" / wheel.name
        ).read_bytes() == wheel.read_bytes()


def test_receive_lists_missing_parts_and_passes(
    fake_parts: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    _, parts, _ = fake_parts
    # As between the first and the second carry: only part 1 has arrived.
    arrived = tmp_path / "arrived"
    arrived.mkdir()
    shutil.copytree(parts / "part-1-of-3", arrived / "part-1-of-3")
    result = _bash(GPU / "check.sh", "--receive", "--parts", arrived)
    assert result.returncode == 0, result.stderr
    assert "part-1-of-3: ok" in result.stdout
    assert "part-2-of-3: missing" in result.stdout and "part-3-of-3: missing" in result.stdout
    # Reassembly needs them all, and says which are missing.
    result = _bash(
        GPU / "check.sh", "--unpack-only", "--parts", arrived, "--work", tmp_path / "work"
    )
    assert result.returncode != 0 and "2 part(s) missing" in result.stderr


def test_corrupt_part_is_refused(
    fake_parts: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    _, parts, _ = fake_parts
    chunk = parts / "part-2-of-3" / "chunk"
    data = bytearray(chunk.read_bytes())
    data[1000] ^= 0xFF
    chunk.write_bytes(bytes(data))
    result = _bash(GPU / "check.sh", "--receive", "--parts", parts)
    assert result.returncode == 1
    assert "part-2-of-3: CORRUPT" in result.stdout and "carry it again" in result.stdout
    result = _bash(GPU / "check.sh", "--unpack-only", "--parts", parts, "--work", tmp_path / "work")
    assert result.returncode != 0 and "corrupt" in result.stderr
    assert not (tmp_path / "work" / "unpacked" / "wheels").exists()


def test_parts_of_two_preparations_are_refused(
    fake_parts: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    _, parts, _ = fake_parts
    other_wheels = tmp_path / "other"
    other_wheels.mkdir()
    _fake_wheel(other_wheels, "big", 2_400_000, seed=3)
    other = tmp_path / "other-parts"
    result = _bash(
        GPU / "prepare.sh",
        "--wheels-from",
        other_wheels,
        "--part-mib",
        "1",
        "--xz-level",
        "0",
        "--parts",
        other,
    )
    assert result.returncode == 0, result.stderr
    shutil.rmtree(parts / "part-3-of-3")
    shutil.copytree(other / "part-3-of-3", parts / "part-3-of-3")
    result = _bash(GPU / "check.sh", "--receive", "--parts", parts)
    assert result.returncode != 0 and "two runs of prepare.sh" in result.stderr


# ---------------------------------------------------------------------------------------
# check.py's GPU-only pieces, against a stand-in nvidia-smi and made-up timings


def _check_module() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", GPU / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_memory_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in nvidia-smi: the device's used memory grows by 100 MiB per query; this
    # process is listed with 500 MiB, another with 7.
    counter = tmp_path / "count"
    counter.write_text("0")
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"""#!/usr/bin/env bash
case "$*" in
  *--query-gpu=memory.used*) n=$(cat {counter}); echo $((n + 1)) > {counter}; echo $((1000 + n * 100)) ;;
  *--query-compute-apps*) echo "{os.getpid()}, 500"; echo "1, 7" ;;
esac
""")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    check = _check_module()
    memory = check.GpuMemory(period=0.05)  # type: ignore[attr-defined]
    assert memory.read() == {"device_mib": 1000.0, "process_mib": 500.0}
    with memory.sampled() as record:
        import time

        time.sleep(0.3)
    queries = int(counter.read_text())
    assert record["source"] == "nvidia-smi"
    assert record["before_device_mib"] == 1100.0
    assert record["peak_device_mib"] == 1000.0 + (queries - 1) * 100
    assert record["peak_device_mib_above_before"] == record["peak_device_mib"] - 1100.0
    assert record["before_process_mib"] == record["peak_process_mib"] == 500.0


def test_targets_are_samrt_fp16_against_official_fp32() -> None:
    check = _check_module()
    mode = check.MODES["gpu"]  # type: ignore[attr-defined]

    def row(kind: str, precision: str, case: str, median: float) -> dict:
        return {"kind": kind, "precision": precision, "case": case, "median_s": median}

    rows = [
        row("official", "fp32", "set_image", 0.30),
        row("official", "bf16", "set_image", 0.12),
        row("samrt", "fp16", "set_image", 0.10),
        row("samrt", "fp32", "set_image", 0.2),
        row("official", "fp32", "generate", 4.0),
        row("samrt", "fp16", "generate", 1.0),
    ]
    check.speedups(rows)  # type: ignore[attr-defined]
    assert rows[2]["speedup_vs_official_fp32"] == pytest.approx(3.0)
    assert rows[2]["speedup_vs_official_bf16"] == pytest.approx(1.2)
    assert rows[5]["speedup_vs_official_bf16"] is None
    targets = check.evaluate_targets(rows, mode)  # type: ignore[attr-defined]
    assert targets["set_image_samrt_fp16_vs_official_fp32"] == {
        "ratio": pytest.approx(3.0),
        "target": 2.0,
        "met": True,
        "applies": True,
    }
    assert targets["generate_samrt_fp16_vs_official_fp32"]["ratio"] == pytest.approx(4.0)
    assert targets["generate_samrt_fp16_vs_official_fp32"]["met"] is False
    # No samrt fp16 row (the benchmark was cut short): no ratio, and not met.
    assert (
        check.evaluate_targets(rows[:2], mode)["set_image_samrt_fp16_vs_official_fp32"]["met"]
        is None
    )  # type: ignore[attr-defined]
