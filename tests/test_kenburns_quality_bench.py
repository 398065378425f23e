"""The Ken Burns quality benchmark's estimator-like depth (bench/bench_kenburns_quality.py ``--depth``): the exact
depth of its procedural scenes degraded as a monocular depth estimator's output is (blurred depth edges, noise, an
unknown affine disparity transform), deterministically per scene."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    import bench_kenburns_quality as bench
finally:
    sys.path.pop(0)


def _near():
    layers = bench.make_scene(0, 1.5, 48.0)
    _, near, _, _ = bench.scene_inputs(layers, (64, 96))
    return near


def test_degrade_depth_is_deterministic_positive_and_estimator_like():
    near = _near()
    assert torch.equal(bench.degrade_depth(near, 0), near)  # nothing asked: the exact depth
    est = bench.degrade_depth(near, 0, **bench.ESTIMATOR_LIKE)
    assert est.shape == near.shape and est.dtype == near.dtype
    assert bool(torch.isfinite(est).all()) and float(est.min()) > 0
    assert torch.equal(est, bench.degrade_depth(near, 0, **bench.ESTIMATOR_LIKE))  # same scene: same depth
    assert not torch.equal(est, bench.degrade_depth(near, 1, **bench.ESTIMATOR_LIKE))  # another scene: another draw
    # blur: depth edges become ramps (the largest step between neighbours shrinks), the mean stays
    blurred = bench.degrade_depth(near, 0, blur=1.5)
    assert float(blurred.diff(dim=1).abs().max()) < 0.7 * float(near.diff(dim=1).abs().max())
    assert abs(float(blurred.mean() - near.mean())) < 0.01 * float(near.mean())
    # noise: multiplicative, of the asked relative size, smooth over the asked scale (neighbours nearly agree)
    noisy = torch.log(bench.degrade_depth(near, 0, noise=0.03) / near)
    assert 0.02 < float(noisy.std()) < 0.04
    assert float(noisy.diff(dim=1).std()) < 0.5 * float(noisy.std())
    # affine: disparity scaled and shifted (plus a slight tilt): the nearest/farthest ratio shrinks (flatter)
    flat = bench.degrade_depth(near, 0, affine=True)
    assert float(flat.min() / flat.max()) > float(near.min() / near.max()) + 0.01
    with pytest.raises(ValueError, match="noise"):
        bench.degrade_depth(near, 0, noise=0.7)


def test_quick_run_accepts_the_estimator_like_depth(tmp_path):
    """--quick with --depth estimator-like runs, records the depth settings and scores other figures than the exact
    depth gives (the renderer sees another depth; the true views are the exact scene's); bad values are one usage
    error."""
    common = ["--quick", "--fills", "far-side", "--plates", "truth"]
    exact, est = tmp_path / "exact.json", tmp_path / "est.json"
    assert bench.main([*common, "--json", str(exact)]) == 0
    assert bench.main([*common, "--depth", "estimator-like", "--depth-noise", "0.05", "--json", str(est)]) == 0
    a, b = json.loads(exact.read_text()), json.loads(est.read_text())
    assert b["settings"]["depth"] == "estimator-like" and b["settings"]["depth_noise"] == 0.05
    assert b["settings"]["depth_degradation"] == dict(bench.ESTIMATOR_LIKE, noise=0.05)  # the preset, overridden
    assert a["settings"]["depth_degradation"]["blur"] == 0 and not a["settings"]["depth_degradation"]["affine"]
    sa, sb = a["summary"]["truth/far-side"], b["summary"]["truth/far-side"]
    assert sb["disoccluded"]["pixels"] > 0  # (the auto camera's path depends on the depth: other pixels)
    assert sa["elsewhere"]["psnr"] != sb["elsewhere"]["psnr"]
    for bad in (["--depth-noise", "0.5"], ["--depth-blur", "-1"], ["--depth-noise-scale", "0"]):
        with pytest.raises(SystemExit) as err:
            bench.main(["--quick", *bad])
        assert err.value.code == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_refine_leaves_exact_depth_whole_and_refines_the_estimators(seed):
    """The depth-edge refinement's gate on the benchmark's scenes (the reduced run's three, at its size): the exact
    depth is returned whole, also scene 0's, where a few steeply slanted narrow surfaces look like ramps (3 % of its
    step windows hold a column of ramp); the estimator-like depth is refined (two thirds of them do)."""
    from cartoonseg.kenburns.depth_edges import refine_depth_edges

    layers = bench.make_scene(seed, 256 / 170, 128.0)
    image, near, _, _ = bench.scene_inputs(layers, (170, 256))
    rgb = image.permute(2, 0, 1)
    exact = near / near.max()
    assert torch.equal(refine_depth_edges(exact, rgb), exact)
    est = bench.degrade_depth(near, seed, **bench.ESTIMATOR_LIKE)
    est = est / est.max()
    assert int((refine_depth_edges(est, rgb) != est).sum()) > 1000
