"""Cancel on every long node (issue 11, "Interruption"), with the shared stubbed ComfyUI (tests/_comfy_stub.py).

For each node that loops over frames, instances, PatchMatch iterations, sampler steps or rendered frames, Cancel is
pressed while the first unit of work runs; the node must raise ComfyUI's interrupt exception before the second
unit starts, and leave no file behind (none of these nodes writes files; the models folder and the working folder
are compared before and after). The style-editing node's per-pass cancel is tested in tests/test_style_node.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _comfy_stub import Interrupted, write_tiny_released_weights

import cartoonseg.inpaint.patchmatch as inpaint_lib
from cartoonseg import Instances

PACK = "cartoonseg_pack_cancel_test"
H, W = 48, 64


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    from test_nodes_depth_inpaint import _tiny_depth_model
    from test_tagger_nodes import write_tagger

    root = write_tiny_released_weights(tmp_path_factory.mktemp("models"))
    write_tagger(root / "cartoonseg" / "tagger" / "tiny")
    _tiny_depth_model(root / "cartoonseg" / "depth" / "tiny-depth-anything")
    return root


def _frames(b: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, H, W, 3, generator=g)


def _instances(n: int, width: int = 5) -> Instances:
    masks = torch.zeros(n, H, W, dtype=torch.bool)
    boxes = []
    for k in range(n):
        x1, y1 = 2 + width * (k % 10), 2 + 20 * (k // 10)
        masks[k, y1 : y1 + 16, x1 : x1 + width] = True
        boxes.append([x1, y1, x1 + width, y1 + 16])
    return Instances(boxes=torch.tensor(boxes, dtype=torch.float32), scores=torch.linspace(0.9, 0.5, n),
                     masks=masks.float(), ids=torch.arange(1, n + 1))


class Counter:
    """Wraps a function and counts its calls (the units of work done)."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _files(*roots: Path) -> set[str]:
    return {os.path.join(r, f) for root in roots for r, _, fs in os.walk(root) for f in fs}


# Each case: set up the node, arm Cancel to fire during the first unit, and return (run, units) where ``run``
# calls the node and ``units()`` says how many units of work were started.
def case_segment(nodes, comfy, monkeypatch):
    from cartoonseg.models.isnet import ISNetDIS

    (model,) = nodes["CartoonSegModelLoader"]().load("rtmdetl_e60.ckpt", "refine_last.ckpt", "cpu", "fp32", False,
                                                     False)
    refined = Counter(ISNetDIS.predict_logits)  # called once per refined instance (refine batch 1 on the CPU)
    monkeypatch.setattr(ISNetDIS, "predict_logits", lambda self, *a, **k: refined(self, *a, **k))
    comfy.cancel_after = 1  # pressed while the first instance of frame 1 was refined
    node = nodes["CartoonSegSegment"]()
    return (lambda: node.segment(model, _frames(3), 0.0, 3, 128, 0.3, True, 64, "binary", False)), lambda: refined.calls


def case_depth_estimate(nodes, comfy, monkeypatch):
    from cartoonseg.depth import DepthEstimator

    (model,) = nodes["CartoonSegDepthLoader"]().load("tiny-depth-anything", "fp32", False)
    calls = Counter(DepthEstimator.__call__)
    monkeypatch.setattr(DepthEstimator, "__call__", lambda self, *a, **k: calls(self, *a, **k))
    comfy.cancel_after = 1
    node = nodes["CartoonSegDepthEstimate"]()
    return (lambda: node.estimate(model, _frames(3))), lambda: calls.calls


def case_depth_pool(nodes, comfy, monkeypatch):
    import cartoonseg.depth as idl

    pool = Counter(idl.pool_instance_depth)
    monkeypatch.setattr(idl, "pool_instance_depth", pool)
    comfy.cancel_after = 1
    node = nodes["CartoonSegDepthPool"]()
    frames = [_instances(2) for _ in range(3)]
    return (lambda: node.pool(_frames(3), frames)), lambda: pool.calls


def case_tag_instances(nodes, comfy, monkeypatch):
    (handle,) = nodes["CartoonSegTaggerLoader"]().load("tiny", "cpu", "fp32", False)
    handle.tagger.batch_size = 2  # 5 instances + background = 3 forward batches in one frame
    forward = Counter(handle.tagger.logits)
    monkeypatch.setattr(handle.tagger, "logits", forward)
    comfy.cancel_at_check = 3  # checks: node start, before batch 1, before batch 2 (Cancel pressed during batch 1)
    node = nodes["CartoonSegTagInstances"]()
    return (lambda: node.tag(handle, _frames(1), [_instances(5)], 0.35, 0.85, False, False, "", True)), \
        lambda: forward.calls


def _count_patchmatch_iterations(monkeypatch) -> Counter:
    rounds = Counter(inpaint_lib._patchmatch_rounds)
    monkeypatch.setattr(inpaint_lib, "_patchmatch_rounds", rounds)
    return rounds


def _hole(b: int) -> torch.Tensor:
    mask = torch.zeros(b, H, W)
    mask[:, 12:36, 20:44] = 1.0
    return mask


def case_patchmatch(nodes, comfy, monkeypatch):
    rounds = _count_patchmatch_iterations(monkeypatch)
    comfy.cancel_at_check = 3  # node start, EM iteration 1, EM iteration 2 <- Cancel pressed during iteration 1
    node = nodes["CartoonSegInpaintPatchMatch"]()
    return (lambda: node.inpaint(_frames(1), _hole(1), "patchmatch", 3, 0, 3)), lambda: rounds.calls


def case_diffusion_init(nodes, comfy, monkeypatch):
    from test_nodes_depth_inpaint import ToyClip, ToyVAE

    rounds = _count_patchmatch_iterations(monkeypatch)
    comfy.cancel_at_check = 3  # inside the PatchMatch fill that starts the diffusion pass: no sampling happens
    node = nodes["CartoonSegInpaintDiffusion"]()

    def run():
        try:
            return node.refine(object(), ToyClip(), ToyVAE(), _frames(1), _hole(1), init="patchmatch")
        finally:
            assert comfy.sample_calls == []

    return run, lambda: rounds.calls


def case_diffusion_steps(nodes, comfy, monkeypatch):
    from test_nodes_depth_inpaint import ToyClip, ToyVAE

    comfy.cancel_in_sampler = True  # pressed during sampler step 2 of frame 1
    node = nodes["CartoonSegInpaintDiffusion"]()
    return (lambda: node.refine(object(), ToyClip(), ToyVAE(), _frames(2), _hole(2), init="telea")), \
        lambda: len(comfy.sample_calls)


def case_kenburns(nodes, comfy, monkeypatch, fill="far-side"):
    """Frames (far-side: no key views, so the first unit is a frame) or, with ``fill="patchmatch"``, the key views
    inpainted before the frames: Cancel during the first key view renders no frame."""
    import cartoonseg.kenburns as kb

    (camera,) = nodes["CartoonSegCameraPath"]().make(preset="pan-right", frames=6, playback=False)
    comfy.cancel_after = 1  # pressed while the first unit (a key view, else a frame) ran
    node = nodes["CartoonSegKenBurns"]()
    depth = torch.linspace(0, 1, W).expand(1, H, W)[..., None].expand(1, H, W, 3).contiguous()
    seen = []
    real = kb.render_kenburns

    def render(*args, callback=None, key_view_progress=None, **kwargs):
        def cb(done, total):
            seen.append(done)
            callback(done, total)

        def views(done, total):
            assert fill != "far-side", "far-side has no key views"
            key_view_progress(done, total)

        return real(*args, callback=cb, key_view_progress=views, **kwargs)

    monkeypatch.setattr(kb, "render_kenburns", render)
    return (lambda: node.render(_frames(1), depth, camera=camera, fill=fill)), lambda: len(seen)


def case_kenburns_key_views(nodes, comfy, monkeypatch):
    return case_kenburns(nodes, comfy, monkeypatch, fill="patchmatch")


def case_alpha_matte(nodes, comfy, monkeypatch):
    import cartoonseg.matting as matting

    solves = Counter(matting.solve_alpha)  # one solve per instance
    monkeypatch.setattr(matting, "solve_alpha", solves)
    comfy.cancel_after = 1  # pressed while the first instance was matted
    node = nodes["CartoonSegAlphaMatte"]()
    # 12 px wide: a trimap with a certain inside (narrower instances keep their masks, no solve)
    return (lambda: node.matte(_frames(1), [_instances(4, width=12)], 0, "cf", True)), lambda: solves.calls


def case_track(nodes, comfy, monkeypatch):
    from cartoonseg.tracking import InstanceTracker

    update = Counter(InstanceTracker.update)
    monkeypatch.setattr(InstanceTracker, "update", lambda self, *a, **k: update(self, *a, **k))
    comfy.cancel_after = 1  # pressed while frame 0 was tracked (minutes for a long full-HD clip)
    node = nodes["CartoonSegTrack"]()
    return (lambda: node.track([_instances(2) for _ in range(3)], 0.3, 5, "mask")), lambda: update.calls


CASES = {
    "track-frames": (case_track, 1),
    "segment-instances": (case_segment, 1),
    "depth-frames": (case_depth_estimate, 1),
    "depth-pool-frames": (case_depth_pool, 1),
    "tagger-instance-batches": (case_tag_instances, 1),
    "patchmatch-iterations": (case_patchmatch, 1),
    "diffusion-patchmatch-init": (case_diffusion_init, 1),
    "diffusion-sampler-steps": (case_diffusion_steps, 1),
    "kenburns-frames": (case_kenburns, 1),
    "kenburns-key-views": (case_kenburns_key_views, 0),  # Cancel in the first key view: no frame is rendered
    "alpha-matte-instances": (case_alpha_matte, 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cancel_during_first_unit_stops_before_the_second(name, nodes, comfy, models_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make, expected_units = CASES[name]
    run, units = make(nodes, comfy, monkeypatch)
    before = _files(models_dir, tmp_path)
    with pytest.raises(Interrupted):
        run()
    assert units() == expected_units, f"{name}: {units()} units started after Cancel during the first"
    assert _files(models_dir, tmp_path) == before  # nothing half-written left behind
    assert not comfy.interrupted  # the flag was consumed by the raise, as in ComfyUI


def test_uncancelled_runs_do_every_unit(nodes, comfy, monkeypatch):
    """The counters above measure real work: without Cancel the same PatchMatch fill runs many iterations."""
    rounds = _count_patchmatch_iterations(monkeypatch)
    (out,) = nodes["CartoonSegInpaintPatchMatch"]().inpaint(_frames(1), _hole(1), "patchmatch", 3, 0, 3)
    assert out.shape == (1, H, W, 3) and rounds.calls > 2
