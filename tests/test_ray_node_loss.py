"""samrt.ray.segment_dataset on a simulated two-node cluster (ray.cluster_utils.Cluster) that
loses a node mid-job, against the single-process run (the oracle)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors
from ray_helpers import (
    TESTS_DIR,
    FakeModelFactory,
    assert_same_results,
    no_temporaries,
    scene_folder,
)
from samrt.ray import segment_dataset
from samrt.segment import RunSummary, SegmentOptions, collect_jobs, segment_local

OPTIONS = SegmentOptions(points_per_side=12, overlay=True)
FAKE = "<fake engine>"


@pytest.fixture
def two_nodes() -> Iterator[tuple[Cluster, Any]]:
    """A head node and a worker node of one CPU each; the driver connected to them."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS_DIR)}})
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_node_removed_mid_job_the_job_completes_equal_to_single_process(
    two_nodes: tuple[Cluster, Any], tmp_path: Path
) -> None:
    cluster, worker = two_nodes
    folder = scene_folder(tmp_path / "images", 24, seed=200, kinds=False)
    reference, out = tmp_path / "reference", tmp_path / "out"
    segment_local(
        collect_jobs([folder]), FAKE, reference, OPTIONS, model_factory=FakeModelFactory()
    )

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["summary"] = segment_dataset(
                [folder], FAKE, out, OPTIONS, actors=2, model_factory=FakeModelFactory()
            )
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.json"))) < 3 and job.is_alive():
        time.sleep(0.01)
    on_worker = [
        a
        for a in list_actors(limit=1000)
        if "SegmentActor" in a.class_name and a.state == "ALIVE" and a.node_id == worker.node_id
    ]
    assert on_worker, "no engine actor ran on the worker node"
    done_at_removal = len(list(out.glob("*.json")))
    cluster.remove_node(worker)
    job.join(timeout=300)
    assert not job.is_alive(), "the job did not finish after the node was removed"
    assert "error" not in result, result.get("error")
    summary: RunSummary = result["summary"]
    n_images = len(collect_jobs([folder]))
    assert done_at_removal < n_images, "the job was over before the node was removed"
    assert (summary.done, summary.failed) == (n_images, 0)
    assert_same_results(out, reference)
    assert no_temporaries(out)
