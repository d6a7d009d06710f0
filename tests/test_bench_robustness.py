"""`vigil bench robustness` on a small subset: every stage writes its files, a stage re-runs
alone, the metrics are sane (the robust tier finds the crops and embeddings PDQ misses, without
false matches), and the plots are real PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vigil.bench.robustness import CORPUS, Config, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict[str, float]]:
    if not (CORPUS / "images").is_dir():
        pytest.skip(f"the media corpus is not at {CORPUS}")
    cfg = Config(
        out=tmp_path_factory.mktemp("bench"),
        quick=True,
        n_refs=4,
        n_neg_images=6,
        neg_edits_per_image=3,
        logo_refs=1,
        logo_queries_per_logo=3,
        scale_sizes=(50,),
        families=("crop", "pip", "reencode"),
    )
    return cfg, run(cfg)


def test_every_stage_leaves_its_files(bench_out):
    cfg, took = bench_out
    assert list(took) == ["references", "queries", "signals", "matches", "metrics", "scale"]
    for name in ("references.json", "queries.jsonl", "signals.jsonl", "bank.json",
                 "matches.jsonl", "metrics.json", "table.md", "scale.json", "timing.json"):
        assert (cfg.out / name).is_file(), name
    queries = [json.loads(x) for x in (cfg.out / "queries.jsonl").read_text().splitlines()]
    # 4 references x 15 crop/pip/reencode edits; 3 logo queries; the logo carrier is not queried
    assert sum(q["kind"] == "pos" for q in queries) == 60
    refs = json.loads((cfg.out / "references.json").read_text())
    assert not any(q["src"] in refs["logo_base"] for q in queries if q["kind"] != "logo")
    assert sum(q["kind"] == "logo" for q in queries) == 3
    assert all(Path(q["path"]).is_file() for q in queries)
    assert not set(refs["references"]) & set(refs["negatives"])
    for name in ("roc.png", "det.png"):
        with Image.open(cfg.out / name) as im:
            assert im.format == "PNG" and im.width >= 300
        assert (cfg.out / name).stat().st_size < 200_000


def test_metrics_are_sane(bench_out):
    cfg, _ = bench_out
    m = json.loads((cfg.out / "metrics.json").read_text())
    tiers = m["tiers"]
    # the robust tier recovers what PDQ loses to crops and picture-in-picture
    assert tiers["vigil"]["recall_at_default"] > tiers["pdq"]["recall_at_default"] + 0.2
    assert tiers["vigil"]["recall_at_default"] >= 0.8
    assert tiers["vigil"]["false_matches_at_default"] == 0
    assert m["negatives_by_kind_false_at_default"]["logo"]["vigil"] == 0
    g = m["groups"]["pip/scale-55%"]
    assert g["positives"] == 4 and g["pdq_default_recall"] <= 0.25
    assert 0 < m["robust_ms_median"] < 2000
    assert 0 < m["robust_ms_median_negatives"] <= m["robust_ms_p90_negatives"]
    # every robust hit names the pass that found it
    assert sum(m["robust_hits_by_pass"].values()) > 0
    assert set(m["robust_hits_by_pass"]) <= {"robust", "robust+flip-x", "robust+region", "pdq+region"}
    scale = json.loads((cfg.out / "scale.json").read_text())["sizes"]["50"]
    assert scale["index_bytes_per_picture"] <= 16 * 1024 and scale["recall_of_sample"] > 0.5
    assert scale["false_matches_of_sample"] == 0 and scale["query_ms_median_negatives"] > 0
    assert "| crop | edge-25%* |" in (cfg.out / "table.md").read_text()


def test_a_stage_reruns_alone(bench_out):
    cfg, _ = bench_out
    before = (cfg.out / "metrics.json").read_text()
    (cfg.out / "metrics.json").unlink()
    took = run(Config(out=cfg.out, quick=True), ["metrics"])
    assert list(took) == ["metrics"]
    assert json.loads((cfg.out / "metrics.json").read_text()) == json.loads(before)


def test_later_stages_take_the_runs_own_seed(bench_out):
    """The queries' edits and placements derive from the seed the references stage recorded: a
    later stage run alone takes that seed, and one asked to run with another fails before
    touching anything."""
    from vigil.errors import UsageError

    cfg, _ = bench_out
    before = (cfg.out / "metrics.json").read_text()
    other = Config(out=cfg.out, quick=True, seed=cfg.seed + 1)
    with pytest.raises(UsageError, match=f"seed {cfg.seed}"):
        run(other, ["metrics"], seed_given=True)
    assert (cfg.out / "metrics.json").read_text() == before
    assert list(run(other, ["metrics"])) == ["metrics"] and other.seed == cfg.seed
