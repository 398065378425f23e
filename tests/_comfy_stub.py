"""Stubbed ComfyUI for node tests: small stand-ins for ``folder_paths``, ``comfy.model_management``, ``comfy.utils``,
``comfy.samplers`` and ``comfy.sample``, and a loader for the node pack under a private package name (never as the
bare module ``nodes``, which ComfyUI owns). One copy, used by every node test module.

Usage in a test module::

    from _comfy_stub import ComfyStub, Interrupted, installed, loaded_pack

    @pytest.fixture(scope="module")
    def comfy(tmp_path_factory):
        with installed(ComfyStub(tmp_path_factory.mktemp("models"))) as state:
            yield state

    @pytest.fixture(scope="module")
    def pack(comfy):
        with loaded_pack("cartoonseg_pack_mytest") as module:
            yield module

Cancel: the stub's ``throw_exception_if_processing_interrupted`` raises :class:`Interrupted` once
``interrupted`` is set (then clears it, as ComfyUI does); ``cancel_after = n`` sets it when the progress bar
reaches ``n`` steps, i.e. "the user pressed Cancel while step n ran"; ``cancel_at_check = n`` sets it at the n-th
cancel check, for library loops that check cancel between units without advancing a bar.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "ComfyStub", "Interrupted", "installed", "load_pack", "loaded_pack", "write_tiny_released_weights"]


class Interrupted(Exception):
    """Stand-in for comfy.model_management.InterruptProcessingException."""


class ComfyStub:
    """State shared by the stubs.

    Attributes:
        models_dir: ``folder_paths.models_dir``.
        updates: progress-bar steps so far (``ticks`` is the same number).
        cancel_after: set ``interrupted`` when ``updates`` reaches this (None: never).
        cancel_at_check: set ``interrupted`` at this cancel check (1 = the first; None: never).
        checks: cancel checks so far.
        interrupted: the Cancel flag.
        empty_cache_calls: ``soft_empty_cache`` calls.
        sample_calls: arguments of every ``comfy.sample.sample`` call.
        cancel_in_sampler: press Cancel during the second sampler step.
    """

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self.empty_cache_calls = 0
        self.sample_calls: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self.updates = 0
        self.checks = 0
        self.cancel_after: int | None = None
        self.cancel_at_check: int | None = None
        self.interrupted = False
        self.sample_calls.clear()
        self.cancel_in_sampler = False

    @property
    def ticks(self) -> int:
        return self.updates

    @ticks.setter
    def ticks(self, value: int) -> None:
        self.updates = value

    def modules(self) -> dict[str, types.ModuleType]:
        state = self
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.models_dir)
        fp.folder_names_and_paths = {}

        def get_folder_paths(key):
            return list(fp.folder_names_and_paths[key][0])

        def get_filename_list(key):
            dirs, exts = fp.folder_names_and_paths.get(key, ([], set()))
            out = set()
            for d in dirs:
                for root, _, files in os.walk(d):
                    for f in files:
                        if not exts or os.path.splitext(f)[1] in exts:
                            out.add(os.path.relpath(os.path.join(root, f), d).replace(os.sep, "/"))
            return sorted(out)

        def get_full_path(key, name):
            for d in fp.folder_names_and_paths.get(key, ([], set()))[0]:
                p = os.path.join(d, name)
                if os.path.isfile(p):
                    return p
            return None

        fp.get_folder_paths = get_folder_paths
        fp.get_filename_list = get_filename_list
        fp.get_full_path = get_full_path

        comfy = types.ModuleType("comfy")
        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = Interrupted
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")

        def soft_empty_cache(force=False):
            state.empty_cache_calls += 1

        def throw_exception_if_processing_interrupted():
            state.checks += 1
            if state.cancel_at_check is not None and state.checks >= state.cancel_at_check:
                state.cancel_at_check = None
                state.interrupted = True
            if state.interrupted:
                state.interrupted = False
                raise Interrupted()

        mm.soft_empty_cache = soft_empty_cache
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

        # model management, with the semantics of ComfyUI 2025 (the stricter generation): load_models_gpu puts a
        # ModelPatcher's model on its load device and lists it; the list holds the patcher only weakly, and a
        # finalizer on the model removes dead entries; unloading calls unpatch_model(offload, True) and pops the
        # unloaded entries by index afterwards (as free_memory does)
        import weakref

        patcher_mod = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device
                self.size = size or sum(t.numel() * t.element_size() for t in model.state_dict().values())
                if not hasattr(model, "device"):
                    model.device = offload_device  # as ComfyUI does: bookkeeping written onto the module

            def model_size(self):
                return self.size

            def patch_model(self, device_to=None, *args, **kwargs):
                if device_to is not None:
                    self.model.to(device_to)
                    self.model.device = device_to
                return self.model

            def unpatch_model(self, device_to=None, unpatch_weights=True):
                if unpatch_weights and device_to is not None:
                    self.model.to(device_to)
                    self.model.device = device_to

            def partially_unload(self, device_to, memory_to_free=0):
                """Moves leaf modules to ``device_to`` until ``memory_to_free`` bytes are freed; returns the bytes
                moved (the model stays listed when that was enough)."""
                freed = 0
                for m in self.model.modules():
                    own = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
                    if freed >= memory_to_free:
                        break
                    if own and own[0].device != torch.device(device_to):
                        m.to(device_to)
                        freed += sum(t.numel() * t.element_size() for t in own)
                return freed

        def cleanup_models():
            mm.current_loaded_models[:] = [lm for lm in mm.current_loaded_models if lm.real_model() is not None]

        class LoadedModel:
            def __init__(self, model):
                self._model = weakref.ref(model)
                self.device = model.load_device
                self.real_model = weakref.ref(model.model)
                self.model_finalizer = weakref.finalize(model.model, cleanup_models)

            @property
            def model(self):
                return self._model()

            def model_unload(self, memory_to_free=None, unpatch_weights=True):
                if memory_to_free is not None and memory_to_free < self.model.model_size():
                    if self.model.partially_unload(self.model.offload_device, memory_to_free) >= memory_to_free:
                        return False  # partly unloaded: stays listed
                self.model.unpatch_model(self.model.offload_device, unpatch_weights=unpatch_weights)
                self.model_finalizer.detach()
                return True

        mm.current_loaded_models = []
        mm.load_calls = []

        def load_models_gpu(models, memory_required=0, force_full_load=False, **kwargs):
            mm.load_calls.append({"count": len(models), "force_full_load": force_full_load})
            for m in models:
                if any(lm.model is m for lm in mm.current_loaded_models):
                    continue
                m.patch_model(m.load_device)
                mm.current_loaded_models.insert(0, LoadedModel(m))

        def unload_all_models():
            unloaded = [i for i in range(len(mm.current_loaded_models) - 1, -1, -1)
                        if mm.current_loaded_models[i].model_unload()]
            for i in sorted(unloaded, reverse=True):
                mm.current_loaded_models.pop(i)  # IndexError if an entry vanished meanwhile (as in ComfyUI)

        def free_memory(memory_required, device=None, keep_loaded=()):
            """Frees ``memory_required`` bytes (the 2025 smart-memory path): a model larger than that is only
            partly unloaded when moving some of its layers frees enough."""
            unloaded = [i for i in range(len(mm.current_loaded_models) - 1, -1, -1)
                        if mm.current_loaded_models[i] not in keep_loaded
                        and mm.current_loaded_models[i].model_unload(memory_required)]
            for i in sorted(unloaded, reverse=True):
                mm.current_loaded_models.pop(i)
            if unloaded:
                soft_empty_cache()

        mm.LoadedModel = LoadedModel
        mm.free_memory = free_memory
        mm.load_models_gpu = load_models_gpu
        mm.unload_all_models = unload_all_models
        patcher_mod.ModelPatcher = ModelPatcher

        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update(self, value):
                state.updates += value
                if state.cancel_after is not None and state.updates >= state.cancel_after:
                    state.interrupted = True  # the user pressed Cancel while this step ran

            def update_absolute(self, value, total=None, preview=None):
                pass

        utils.ProgressBar = ProgressBar

        samplers = types.ModuleType("comfy.samplers")

        class KSampler:
            SAMPLERS = ("euler", "dpmpp_2m", "dpmpp_2m_sde")
            SCHEDULERS = ("normal", "karras", "simple")

        samplers.KSampler = KSampler

        sample = types.ModuleType("comfy.sample")

        def prepare_noise(latent, seed, noise_inds=None):
            g = torch.Generator().manual_seed(int(seed))
            return torch.randn(latent.shape, generator=g)

        def sample_fn(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
                      noise_mask=None, callback=None, disable_pbar=False, seed=None, **kwargs):
            """Like ComfyUI: the latent changes only where the noise mask is set (as KSampler's denoise_mask)."""
            state.sample_calls.append({"model": model, "steps": steps, "cfg": cfg, "sampler_name": sampler_name,
                                       "scheduler": scheduler, "positive": positive, "negative": negative,
                                       "latent": latent_image, "denoise": denoise, "noise_mask": noise_mask,
                                       "seed": seed})
            for i in range(steps):
                if state.cancel_in_sampler and i == 1:
                    state.interrupted = True
                if callback is not None:
                    callback(i, latent_image, latent_image, steps)
            if noise_mask is None:
                return latent_image + 0.5 * denoise * noise
            m = F.interpolate(noise_mask.reshape(-1, 1, *noise_mask.shape[-2:]), size=latent_image.shape[-2:],
                              mode="bilinear")
            return latent_image * (1 - m) + (latent_image + 0.5 * denoise * noise) * m

        sample.prepare_noise = prepare_noise
        sample.sample = sample_fn
        comfy.model_management, comfy.utils, comfy.samplers, comfy.sample = mm, utils, samplers, sample
        comfy.model_patcher = patcher_mod
        return {"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils,
                "comfy.samplers": samplers, "comfy.sample": sample, "comfy.model_patcher": patcher_mod}


@contextmanager
def installed(state: ComfyStub) -> Iterator[ComfyStub]:
    """Put ``state``'s stub modules in ``sys.modules`` for the block; restore what was there afterwards."""
    stubs = state.modules()
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        yield state
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def load_pack(name: str) -> types.ModuleType:
    """Import the pack's root ``__init__.py`` as package ``name`` (as ComfyUI loads a custom node folder)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def loaded_pack(name: str) -> Iterator[types.ModuleType]:
    """:func:`load_pack` for the block; the package and its submodules are removed from ``sys.modules`` after."""
    try:
        yield load_pack(name)
    finally:
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]


def write_tiny_released_weights(models_dir: Path) -> Path:
    """``models_dir/cartoonseg/{rtmdetl_e60.ckpt, refine_last.ckpt}``: tiny random networks (seed 0) in the released
    file layouts (mmengine detector checkpoint, flat refiner state dict). Returns ``models_dir``."""
    import cartoonseg
    from _checkpoint_writers import save_flat_refiner_checkpoint, save_mmengine_detector_checkpoint

    torch.manual_seed(0)
    folder = Path(models_dir) / "cartoonseg"
    save_mmengine_detector_checkpoint(cartoonseg.build_detector("tiny"), folder / "rtmdetl_e60.ckpt")
    save_flat_refiner_checkpoint(cartoonseg.build_refiner("tiny"), folder / "refine_last.ckpt")
    return Path(models_dir)
