"""core/metrics.py: the multiprocess directory of a process tree (children's numbers summed, directories of
dead processes removed), and the Grafana dashboard (deploy/grafana/joulestream.json) over exactly these metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from core.metrics import Metrics
from tests.prom import parse, value

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "joulestream.json"

TREE = """
import multiprocessing as mp, sys
from pathlib import Path

def child():
    from core.metrics import metrics
    metrics().pipeline_enriched.inc(5)
    metrics().consumer_lag.labels("enrich", "t", "0").set(7)

if __name__ == "__main__":
    from core.metrics import exposition, metrics, process_exited, use_directory
    path = use_directory(Path(sys.argv[1]))
    metrics().pipeline_enriched.inc(2)
    p = mp.get_context("spawn").Process(target=child)
    p.start(); p.join()
    print(exposition()[0].decode())
    print("=====")
    process_exited(p.pid)
    print(exposition()[0].decode())
    print("=====", path)
"""


def test_a_process_tree_shares_one_directory_and_dead_trees_are_removed(tmp_path):
    root = tmp_path / "metrics"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = root / gone.stdout.strip()  # a tree whose process has exited
    stale.mkdir(parents=True)
    (stale / f"counter_{gone.stdout.strip()}.db").write_bytes(b"\0" * 8)
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    out = subprocess.run(
        [sys.executable, str(script), str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    with_child, after_exit, tail = out.stdout.split("=====")
    own = Path(tail.strip())
    assert not stale.exists() and own.parent == root and [p.name for p in root.iterdir()] == [own.name]
    s = parse(with_child)
    assert value(s, "joulestream_pipeline_enriched_total") == 7  # parent 2 + child 5
    assert value(s, "joulestream_pipeline_consumer_lag", agent="enrich", topic="t", partition="0") == 7
    s = parse(after_exit)
    assert value(s, "joulestream_pipeline_enriched_total") == 7  # the exited child's counters stay
    assert (
        "joulestream_pipeline_consumer_lag",
        frozenset({("agent", "enrich"), ("topic", "t"), ("partition", "0")}),
    ) not in s


def _families() -> set[str]:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    Metrics(registry)
    return {f.name for f in registry.collect()}


def test_the_dashboard_is_importable_and_covers_every_metric():
    dash = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    exprs = []
    ids = []
    for panel in dash["panels"]:
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
            exprs.append(t["expr"])
    assert len(ids) == len(set(ids))
    used = set()
    for e in exprs:
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
        for name in re.findall(r"\bjoulestream_[a-z0-9_]+", e):
            used.add(re.sub(r"_(total|bucket|sum|count)$", "", name))
    families = _families()
    assert used <= families, used - families
    assert families - used == {
        "joulestream_org_energy_kwh",
        "joulestream_org_co2e_kg",
    }  # per-org: off by default
