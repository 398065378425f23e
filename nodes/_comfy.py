"""The only module of the pack that touches ComfyUI internals.

Every other node module imports ComfyUI services from here, so the pack degrades cleanly (and tests can run)
when ComfyUI modules are absent: ``folder_paths``, ``comfy.model_management`` and ``comfy.utils`` are imported
lazily and each helper has a plain fallback.

Tensor layouts: ComfyUI IMAGE is ``float32 [B,H,W,3]`` RGB in [0,1]; MASK is ``float32 [B,H,W]`` in [0,1].
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from cartoonseg.style.diffusers_backend import SCHEDULERS

MODEL_FOLDER = "cartoonseg"
CATEGORY = "CartoonSeg"
# the device widget of the loaders and renderers: auto = ComfyUI's device (torch_device()); node-only, the library
# takes torch devices
DEVICES: tuple[str, ...] = ("auto", "cpu")


class TypeUnion(str):
    """An input type that links from any of several output types, e.g. ``TypeUnion("BOUNDING_BOX", "BBOX")``.

    It is the string ``"BOUNDING_BOX,BBOX"``: ComfyUI's union syntax, read by both frontends' link check
    (LiteGraph ``isValidConnection`` splits on commas) and by the 2025 executor's ``validate_node_input`` (overlap
    of the comma-separated sets). The 2024 executor compares a link's type with ``received != declared``; Python
    asks this subclass's ``__ne__`` first, which answers by the same overlap, so linking works there too.
    """

    def __new__(cls, *types: str):
        return super().__new__(cls, ",".join(types))

    def __ne__(self, other) -> bool:
        if not isinstance(other, str):
            return True
        mine = {t.strip() for t in str(self).split(",")}
        return not mine & {t.strip() for t in str(other).split(",")}

    __hash__ = str.__hash__


#: Refine's box input: core ComfyUI BOUNDING_BOX dicts and the BBOX lists of other packs (and Convert Boxes)
BOXES_INPUT = TypeUnion("BOUNDING_BOX", "BBOX")


def register_model_folder() -> None:
    """Register ``models/cartoonseg`` with folder_paths, keeping entries users added (extra_model_paths.yaml)."""
    try:
        import folder_paths
    except ImportError:
        return
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    known = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if known is None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = (
            [default],
            {".ckpt", ".pth", ".pt", ".safetensors", ".bin"},
        )
    else:
        paths, exts = known[0], known[1]
        if default not in paths:
            paths.append(default)
        if isinstance(exts, set):
            exts.update({".ckpt", ".pth", ".pt", ".safetensors", ".bin"})


def model_dirs() -> list[str]:
    """Folders searched for cartoonseg weights (first one is where downloads go)."""
    try:
        import folder_paths
    except ImportError:
        return [os.path.join(os.getcwd(), "models", MODEL_FOLDER)]
    register_model_folder()
    return list(folder_paths.get_folder_paths(MODEL_FOLDER))


def list_model_files() -> list[str]:
    try:
        import folder_paths
    except ImportError:
        return []
    register_model_folder()
    return sorted(folder_paths.get_filename_list(MODEL_FOLDER))


def safe_model_name(name, what: str = "model") -> str:
    """A loader widget value as a name *relative to* ComfyUI's model folders. Absolute paths, drive letters, ``..``
    parts and NUL bytes are refused with a ``ValueError``: loaders read only inside the ``cartoonseg`` model folders
    (``models/cartoonseg`` and the folders ``extra_model_paths.yaml`` adds), never elsewhere on the server."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty name, got {name!r}")
    norm = name.strip().replace("\\", "/")
    if ("\0" in norm or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":")
            or any(part == ".." for part in norm.split("/"))):
        raise ValueError(f"{what} {name!r} is not a name inside the model folders ({', '.join(model_dirs())}); "
                         f"place the file there and pick it from the list")
    return norm


def find_in_model_dirs(name: str, subfolder: str = "", *, folder: bool = False, what: str = "model") -> str | None:
    """Full path of ``name`` (see :func:`safe_model_name`) under ``<model folder>/<subfolder>``, the first model
    folder that has it (a file, or with ``folder=True`` a folder); None when none does."""
    rel = safe_model_name(name, what)
    for d in model_dirs():
        base = os.path.normpath(os.path.join(d, subfolder)) if subfolder else os.path.normpath(d)
        path = os.path.normpath(os.path.join(base, rel))
        if os.path.commonpath([path, base]) == base and (os.path.isdir(path) if folder else os.path.isfile(path)):
            return path
    return None


def model_file_path(name: str) -> str | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths.get_full_path(MODEL_FOLDER, name)


def torch_device() -> torch.device:
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return mm.get_torch_device()


def resolve_device(device) -> torch.device:
    """The device widget's value (:data:`DEVICES`) as a torch device: ``"auto"`` -> ComfyUI's compute device
    (:func:`torch_device`, respects ``--cpu``), ``"cpu"`` -> the CPU. Callers outside the UI (API prompts, scripts)
    may also name a torch device (``"cuda"``, ``"cuda:1"``, ``"mps"``), used as asked; one that is not there, or
    any other value, raises ``ValueError`` naming it: never a quiet fallback to the CPU."""
    if device == "auto":
        return torch.device(torch_device())
    from cartoonseg._cli import check_device  # the one device rule, shared with every CLI's --device

    allowed = f"{', '.join(DEVICES)} or an available torch device such as 'cuda:0'"
    try:
        return torch.device(check_device(str(device), what="device"))
    except ValueError as exc:
        raise ValueError(f"device {device!r} is not available here or not a device ({exc}); use {allowed}") from None


def offload_device() -> torch.device:
    try:
        import comfy.model_management as mm
    except ImportError:
        return torch.device("cpu")
    return mm.unet_offload_device()


def soft_empty_cache() -> None:
    """Release cached accelerator memory after models were moved off the GPU (no-op outside ComfyUI/CUDA)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    mm.soft_empty_cache()


# ---------------------------------------------------------------- models: the ONE holder, on ComfyUI's model management
_log = logging.getLogger("cartoonseg")


class CartoonSegNetworks(torch.nn.Module):
    """What ComfyUI's ``ModelPatcher`` wraps for a :class:`ModelHolder` (the name shows in ComfyUI's log as
    "Requested to load CartoonSegNetworks"). The patcher writes bookkeeping attributes (``device``, ...) onto the
    module it wraps, which our networks expose as read-only properties, hence this plain container."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net


_PATCHER_CLASS: dict[type, type] = {}  # ComfyUI's ModelPatcher -> our subclass of it


def _patcher_class() -> type | None:
    """``comfy.model_patcher.ModelPatcher`` subclass that tells its holder when ComfyUI unloads the weights (both
    ComfyUI generations call ``unpatch_model(offload_device, unpatch_weights=True)`` then); None outside ComfyUI."""
    try:
        import comfy.model_management  # noqa: F401
        from comfy.model_patcher import ModelPatcher
    except ImportError:
        return None
    if ModelPatcher not in _PATCHER_CLASS:

        class CartoonSegPatcher(ModelPatcher):
            holder_ref: Callable[[], ModelHolder | None] | None = None

            def _holder_computing(self) -> bool:
                holder = self.holder_ref() if self.holder_ref is not None else None
                return holder is not None and holder._computing_with(self)

            def unpatch_model(self, device_to=None, unpatch_weights=True, *args, **kwargs):
                if unpatch_weights and self._holder_computing():
                    # a node computes with these weights right now (ComfyUI unloads to make room for another
                    # model it loads meanwhile): moving them to the offload device would make the node's next layer
                    # fail on mixed devices; they stay until the node's block ends, which frees them
                    device_to = None
                out = super().unpatch_model(device_to, unpatch_weights, *args, **kwargs)
                holder = self.holder_ref() if self.holder_ref is not None else None
                if holder is not None and unpatch_weights:
                    holder._unloaded(self)
                return out

            def partially_unload(self, device_to, memory_to_free=0, *args, **kwargs):
                if self._holder_computing():
                    return 0  # none moved: ComfyUI then unloads the model whole (the path above)
                return super().partially_unload(device_to, memory_to_free, *args, **kwargs)

        _PATCHER_CLASS[ModelPatcher] = CartoonSegPatcher
    return _PATCHER_CLASS[ModelPatcher]


def files_stamp(paths: Sequence[str]) -> tuple:
    """``(real path, size, mtime_ns)`` of each file of ``paths`` (a folder: every file below it, hidden entries such
    as download caches skipped; a missing path: ``(path, None, None)``; empty paths skipped): what a loader's result
    depends on, for :meth:`ModelHolder.payload` and the loaders' ``IS_CHANGED``."""
    out = []
    for path in paths:
        if not path:
            continue
        real = os.path.realpath(path)
        files = [real]
        if os.path.isdir(real):
            files = []
            for root, dirs, names in os.walk(real):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
        for f in files:
            try:
                st = os.stat(f)
            except OSError:
                out.append((f, None, None))
            else:
                out.append((f, st.st_size, st.st_mtime_ns))
    return tuple(out)


def loader_fingerprint(resolve: Callable[[], Sequence[str]]) -> str:
    """A loader's ``IS_CHANGED`` value: the stamp of the files ``resolve()`` finds (never downloading), so ComfyUI
    re-runs the loader (and what uses its model) when a weights file is replaced; what cannot be resolved gives its
    error text (the loader itself then reports it)."""
    try:
        return repr(files_stamp([str(p) for p in resolve() if p]))
    except Exception as exc:  # noqa: BLE001 - IS_CHANGED must not fail; the loader raises the real error
        return f"unresolved: {type(exc).__name__}: {exc}"


class ModelHolder:
    """The one way every CartoonSeg node holds a network: owned by ComfyUI's model management, as core models are.

    A loader node returns a holder, not weights. ``load()`` (reads the weights from disk onto the CPU and returns the
    payload object, e.g. a ``WDTagger``) runs the first time a node needs the network; :meth:`on_device` then asks
    ``comfy.model_management.load_models_gpu`` to place it on the compute device, so ComfyUI accounts its memory,
    frees other models first when VRAM is short and lists it among its loaded models. When ComfyUI unloads it (the
    UI's "Unload Models", ``POST /free``, or to make room for another model) the holder drops the weights entirely,
    and the next node that needs them reads them from disk again. :meth:`hand_back` (``keep_loaded`` off, after each
    node) takes the network out of ComfyUI's loaded models, as ComfyUI does with a model it offloads: that RAM copy
    goes with the holder. Nothing else keeps a reference (no module-level caches), so freeing the execution cache
    frees the holder too.

    Args:
        load: ``() -> payload``, the network read onto the CPU (called again after a release).
        name: shown in logs and errors.
        device: compute device (default: ComfyUI's).
        offload_device: where the weights wait when not on the compute device (default: ComfyUI's).
        keep_loaded: False hands the device memory back after every node (the weights stay in RAM on the offload
            device); True leaves the network on the device until ComfyUI needs the memory or unloads models.
        network: ``payload -> nn.Module`` holding every weight of the payload (default: the payload itself).
        files: the files (or folders) ``load`` reads, as the loader resolved and checked them. Reading them again
            after one changed on disk is refused (the loader's checks were for the old file; its ``IS_CHANGED``
            makes the next queued run re-run the loader).
        owns_weights: True (loaders): ``load`` reads fresh weights, so a release frees them (moves them to the
            ``meta`` device). False: ``load`` returns networks the caller keeps (scripts, tests): a release only lets
            go of them, on the offload device, and never destroys the caller's networks.
    """

    def __init__(self, load: Callable[[], object], *, name: str, device=None, offload_device=None,
                 keep_loaded: bool = False, network: Callable[[object], torch.nn.Module] | None = None,
                 files: Sequence[str] = (), owns_weights: bool = True) -> None:
        self._load = load
        self._owns_weights = bool(owns_weights)
        self._files = tuple(str(f) for f in files if f)
        self._stamp = files_stamp(self._files)
        self._network = network or (lambda payload: payload)
        self.name = str(name)
        self.device = torch.device(device) if device is not None else torch.device(torch_device())
        self.offload_device = torch.device(offload_device) if offload_device is not None else _default_offload()
        self.keep_loaded = bool(keep_loaded)
        self.loads = 0  #: how many times the weights were read (a release makes the next use read them again)
        self.releases = 0  #: how many times ComfyUI's unload released them
        self._payload = None
        self._patcher = None
        self._retired = None
        self._handing_back = False
        self._in_use = 0  # nodes inside on_device() right now
        self._pending: list[torch.nn.Module] = []  # released by ComfyUI while in use: freed when the last block ends

    # -- state
    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (on any device)."""
        return self._payload is not None

    @property
    def patcher(self):
        """The ``ModelPatcher`` ComfyUI manages (None outside ComfyUI or while released)."""
        return self._patcher

    def payload(self):
        """The network object, read from disk onto the offload device first when it is not in memory."""
        if self._payload is None:
            self._check_files()
            payload = self._load()
            net = self._network(payload)
            if not isinstance(net, torch.nn.Module):
                raise TypeError(f"{self.name}: the network must be a torch.nn.Module, got {type(net).__name__}")
            net.to(self.offload_device)
            cls = _patcher_class()
            patcher = None
            if cls is not None:
                patcher = cls(CartoonSegNetworks(net), load_device=self.device, offload_device=self.offload_device)
                patcher.holder_ref = weakref.ref(self)
            self._payload, self._patcher, self._retired = payload, patcher, None
            self.loads += 1
        return self._payload

    def _check_files(self) -> None:
        now = files_stamp(self._files)
        if now != self._stamp:
            changed = sorted({entry[0] for entry in set(now) ^ set(self._stamp)})
            raise RuntimeError(f"{self.name}: {changed[0]} changed on disk since its loader ran; queue the workflow "
                               "again so that the loader re-reads and re-checks it")

    # -- use
    @contextmanager
    def on_device(self) -> Iterator:
        """The payload on the compute device for the block (through ComfyUI's model management); when the last
        block using it ends, the device memory is handed back unless ``keep_loaded`` (also on errors and Cancel).

        Weights ComfyUI unloads while a block uses them (to make room for a model loaded meanwhile) stay on the
        compute device and usable until the last block ends; then they are freed (moved to the ``meta`` device) and
        the device cache is emptied through ComfyUI's ``soft_empty_cache``: do not use the payload after the block."""
        payload = self.payload()
        net = self._network(payload)
        patcher = self._patcher
        if patcher is not None:
            import comfy.model_management as mm

            mm.load_models_gpu([patcher], **_full_load_kwargs(mm))
        _place(net, self.device)  # also completes a partial (low-VRAM) load: our layers are not ComfyUI ops
        self._in_use += 1
        try:
            yield payload
        finally:
            self._in_use -= 1
            if not self._in_use:  # an inner (nested) block must not take the weights from an outer one
                if self._pending:
                    # released during the block: ComfyUI's unload is over and counted this memory as free, so the
                    # weights go now (not when the node's last reference dies), and the cache they leave with them
                    self._free_pending()
                if not self.keep_loaded and self.device != self.offload_device:
                    self.hand_back()

    def _computing_with(self, patcher) -> bool:
        """Whether a block uses the weights ``patcher`` wraps right now (not a hand-back of our own)."""
        return bool(self._in_use) and not self._handing_back and patcher is self._patcher

    def _free_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._retired = None  # the retired patcher need not outlive the block
        for net in pending:
            self._let_go(net)
        _return_memory_to_os()
        soft_empty_cache()

    def hand_back(self) -> None:
        """Move the weights off the compute device and out of ComfyUI's loaded models, keeping them in RAM."""
        if self._payload is None:
            return
        patcher = self._patcher
        if patcher is not None:
            import comfy.model_management as mm

            self._handing_back = True
            try:
                for i, loaded in enumerate(list(mm.current_loaded_models)):
                    if loaded.model is patcher:
                        mm.current_loaded_models.pop(i).model_unload()
                        break
            finally:
                self._handing_back = False
        _place(self._network(self._payload), self.offload_device)
        soft_empty_cache()

    def release(self) -> None:
        """Free the weights (the next use reads them from disk again).

        Runs inside ComfyUI's unload, while it may still iterate its list of loaded models: the patcher object
        stays alive (ComfyUI 2025 holds it only weakly, and its death would make ComfyUI drop list entries under
        the running loop), but every weight tensor moves to the ``meta`` device, which frees its memory at once
        (with ``owns_weights=False`` the caller's networks are left intact on the offload device instead). A node
        still computing with the weights (ComfyUI unloading to make room while it runs) keeps them on the compute
        device until its block ends, which frees them then (see :meth:`on_device`).
        """
        if self._payload is None:
            return
        net = self._network(self._payload)
        self._retired = self._patcher  # dropped when the weights are next read, outside ComfyUI's unload
        self._payload, self._patcher = None, None
        if self._in_use:
            self._pending.append(net)
        else:
            self._let_go(net)
            _return_memory_to_os()
        self.releases += 1
        _log.info("CartoonSeg: released %s (ComfyUI unloaded it; it is read again from disk when next needed)",
                  self.name)

    def _let_go(self, net: torch.nn.Module) -> None:
        """Free released weights (``meta``), or with ``owns_weights=False`` leave the caller's networks intact on
        the offload device."""
        if self._owns_weights:
            net.to("meta")
        else:
            _place(net, self.offload_device)

    def _unloaded(self, patcher) -> None:
        if not self._handing_back and patcher is self._patcher:
            self.release()

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return (f"{type(self).__name__}({self.name!r}, {state}, device={self.device}, "
                f"keep_loaded={self.keep_loaded})")


def _return_memory_to_os() -> None:
    """Give freed heap memory back to the system (glibc keeps freed blocks in its arenas otherwise, so a released
    model would still count in the server's resident memory); a no-op where ``malloc_trim`` does not exist."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _full_load_kwargs(mm) -> dict:
    """``force_full_load=True`` where ``load_models_gpu`` has it (2025): our layers are plain torch modules, which
    ComfyUI's partial low-VRAM loading would leave on the CPU."""
    import inspect

    try:
        return {"force_full_load": True} if "force_full_load" in inspect.signature(mm.load_models_gpu).parameters else {}
    except (TypeError, ValueError):
        return {}


def _default_offload() -> torch.device:
    return torch.device(offload_device())


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def _place(net: torch.nn.Module, device: torch.device) -> None:
    """Move ``net`` to ``device`` unless every parameter and buffer is already there."""
    if not all(_on(t, device) for t in net.parameters()) or not all(_on(t, device) for t in net.buffers()):
        net.to(device)


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


class _NullBar:
    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update(self, value: int) -> None:
        self.current += value

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        self.current = value


def progress_bar(total: int):
    """ComfyUI's ProgressBar (shown on the node), or a silent stand-in outside ComfyUI."""
    try:
        from comfy.utils import ProgressBar
    except ImportError:
        return _NullBar(total)
    return ProgressBar(total)


class Steps:
    """Progress over units of work (frames, instances, sampler steps) with a Cancel check at every unit; see
    :func:`steps`. The total may grow while the node runs (:meth:`add`, :meth:`subtask`)."""

    def __init__(self, total: int) -> None:
        self.total = max(int(total), 0)
        self.done = 0
        self.bar = progress_bar(self.total)

    def tick(self, n: int = 1) -> None:
        """``n`` units done: check Cancel, advance the bar, check again (pressed while the bar's UI update ran)."""
        throw_if_interrupted()
        self.done += n
        self.bar.update(n)
        throw_if_interrupted()

    def add(self, n: int) -> None:
        """``n`` more units than announced (e.g. the instances a detection found)."""
        if n:
            self.total += int(n)
            self.bar.update_absolute(self.done, self.total)

    def subtask(self) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback for a library loop: its ``total`` units join this bar and each
        ``done`` advances it (library functions report ``progress(done, total)``)."""
        state = {"total": 0, "done": 0}

        def progress(done: int, total: int) -> None:
            if total != state["total"]:
                self.add(total - state["total"])
                state["total"] = total
            if done > state["done"]:
                self.tick(done - state["done"])
                state["done"] = done

        return progress


@contextmanager
def steps(total: int) -> Iterator[Steps]:
    """Progress over ``total`` units; each ``tick()`` checks for cancel, advances the bar and checks again, so a
    Cancel pressed while a unit (frame, instance, sampler step, ...) ran stops the node before the next unit."""
    throw_if_interrupted()
    yield Steps(total)


def image_to_uint8(frame: torch.Tensor):
    """One ComfyUI frame ``[H,W,C]`` float in [0,1] -> numpy uint8 ``[H,W,3]`` RGB (alpha dropped, grey expanded,
    NaN -> 0: the policy of :func:`cartoonseg.io.to_rgb_uint8`)."""
    from cartoonseg.io import to_rgb_uint8

    if frame.dim() != 3:
        raise ValueError(f"expected one IMAGE frame [H,W,C], got shape {tuple(frame.shape)}")
    if frame.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"IMAGE must have 1 (grey), 2 (grey + alpha), 3 or 4 channels, got {frame.shape[-1]}")
    return to_rgb_uint8(frame, nan="zero")


def check_image(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Validate a ComfyUI IMAGE batch and return it as float32 ``[B,H,W,3]`` on the CPU.

    Grey (1 channel) is expanded, alpha dropped (RGBA, and grey + alpha with 2 channels); NaN becomes 0 and values outside [0,1] (±Inf included) are
    clamped, so one bad pixel does not stop a graph. Integer tensors (other packs' uint8 frames) are 0..255 and
    bool ones 0/1, the policy of :func:`cartoonseg.io.to_rgb_uint8`; integers outside 0..255 raise ValueError.
    Empty or oversized frames raise ValueError.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a ComfyUI IMAGE tensor [B,H,W,3], got {type(image).__name__}")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be an IMAGE [B,H,W,3], got shape {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    from cartoonseg.io import MAX_PIXELS

    if image.shape[1] * image.shape[2] > MAX_PIXELS:  # before any copy of a huge batch
        raise ValueError(f"{name} frames of {image.shape[2]}x{image.shape[1]} pixels exceed the {MAX_PIXELS}-pixel "
                         "limit; downscale first")
    from cartoonseg.io import to_float_rgb  # the library's one rule: uint8 0..255 (never clamped to white), bool 0/1

    return to_float_rgb(image.cpu(), name=name)


def check_mask(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Validate a ComfyUI MASK and return it as float32 ``[B,H,W]`` on the CPU. Shapes other packs produce are
    accepted too: ``[H,W]``, ``[B,H,W,1]`` and ``[B,1,H,W]`` (as Impact's ``make_3d_mask``). Values follow the
    library's one mask rule (:func:`cartoonseg.io.to_float_mask`): float clipped to [0,1] (NaN -> 0), bool 0/1,
    integer masks of other packs 0..255 (uint8 0/255 equals the float 0/1 mask) unless they hold only 0 and 1."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a ComfyUI MASK tensor [B,H,W], got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    elif mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"{name} must be a MASK [B,H,W], got shape {tuple(mask.shape)}")
    if mask.shape[1] == 0 or mask.shape[2] == 0:
        raise ValueError(f"{name} is empty: MASK of shape {tuple(mask.shape)} has no pixels")
    from cartoonseg.io import to_float_mask

    return to_float_mask(mask.cpu(), name=name)


# ---------------------------------------------------------------- frames of a batch
# One way to pair the frames of IMAGE / MASK batches with CARTOONSEG_INSTANCES (a list with one Instances per
# frame): every other batch has one entry per frame, or a single entry shared by all frames; an IMAGE batch and its
# instances pair both ways (frames_instances: a single entry on either side serves every frame of the other).
def check_instances(instances, name: str = "instances") -> list:
    """Validate a ``CARTOONSEG_INSTANCES`` value (list of ``cartoonseg.Instances``, one per frame): all frames of one
    size (they come from one IMAGE batch) and finite boxes, so later stacking and cropping cannot fail deep inside."""
    from cartoonseg import Instances

    if isinstance(instances, Instances):
        instances = [instances]
    if not isinstance(instances, (list, tuple)) or not instances:
        raise TypeError(f"{name} must be a non-empty CARTOONSEG_INSTANCES list, got {type(instances).__name__}")
    for i, f in enumerate(instances):
        if not isinstance(f, Instances):
            raise TypeError(f"{name}[{i}] must be cartoonseg.Instances (CARTOONSEG_INSTANCES holds one per frame), "
                            f"got {type(f).__name__}")
        if f.image_size != instances[0].image_size:
            raise ValueError(f"{name} mixes frame sizes: frame 0 is {instances[0].image_size}, frame {i} is "
                             f"{f.image_size} (one CARTOONSEG_INSTANCES list holds the frames of one IMAGE batch)")
        if len(f) and not bool(torch.isfinite(f.boxes).all()):
            raise ValueError(f"{name}[{i}] holds NaN or infinite boxes")
    return list(instances)


def check_batches(n: int, what: str = "image", **others) -> None:
    """Each batch in ``others`` (name -> entry count, None = not given) has 1 entry or one per frame of the ``n``
    frames of ``what``."""
    for name, count in others.items():
        if count is not None and count not in (1, n):
            raise ValueError(f"{name} has {count} frames but {what} has {n}; give 1 or one per {what} frame")


def pick(batch, b: int):
    """Frame ``b`` of a batch (tensor or list) with one entry per frame or a single entry for all."""
    return batch[min(b, len(batch) - 1)]


def frames_instances(image: torch.Tensor, instances, name: str = "instances") -> tuple[torch.Tensor, list]:
    """Pair an IMAGE batch ``[B,H,W,3]`` with CARTOONSEG_INSTANCES frame by frame, the pack's one rule for both:
    one entry on either side is used for every frame of the other, otherwise the counts must match. Returns the
    ``n = max(B, len(instances))`` frames as (image ``[n,H,W,3]``, a view when one picture serves every frame; one
    Instances per frame on the CPU). Every node that takes an image and instances gives one output frame per pair.
    Instances made for another picture size are refused (segment the image you connect)."""
    frames = check_instances(instances, name)
    b, f = int(image.shape[0]), len(frames)
    if b != f and 1 not in (b, f):
        raise ValueError(f"{name} has {f} frames but image has {b}; give one of them a single frame (used for "
                         f"every frame of the other) or the same number of frames to both")
    height, width = int(image.shape[1]), int(image.shape[2])
    if tuple(frames[0].image_size) != (height, width):  # check_instances: every frame has frame 0's size
        raise ValueError(f"{name} are for a {frames[0].image_size[1]}x{frames[0].image_size[0]} image but the "
                         f"image is {width}x{height}; segment the same image you connect here")
    n = max(b, f)
    return image.expand(n, -1, -1, -1), [pick(frames, i).to("cpu") for i in range(n)]


# ---------------------------------------------------------------- diffusion sampling (core ComfyUI API)
# Used by nodes that sample inside themselves (style editing), the way Impact's detailers do: the same calls as
# core CLIPTextEncode / ControlNetApplyAdvanced / VAEEncode / KSampler / VAEDecode, imported lazily.

# outside ComfyUI (tests, docs) the samplers offered are the ones the library's own diffusers backend can run
FALLBACK_SAMPLERS = tuple(SCHEDULERS)
FALLBACK_SCHEDULERS = ("normal", "karras", "exponential", "simple")


def sampler_choices() -> tuple[list[str], list[str]]:
    """(sampler names, scheduler names) of the running ComfyUI; a short fallback list outside ComfyUI."""
    try:
        import comfy.samplers
    except ImportError:
        return list(FALLBACK_SAMPLERS), list(FALLBACK_SCHEDULERS)
    return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)


def checkpoint_inputs() -> dict:
    """The SD checkpoint inputs (MODEL, CLIP, VAE) of the diffusion nodes."""
    return {
        "model": ("MODEL", {"tooltip": "SD model (an inpainting checkpoint works best)"}),
        "clip": ("CLIP", {"tooltip": "the checkpoint's CLIP, encodes the prompts"}),
        "vae": ("VAE", {"tooltip": "the checkpoint's VAE"}),
    }


def sampler_inputs(start: str, native: str) -> dict:
    """The sampler inputs of the diffusion nodes, with the paper's settings as defaults (its Ken Burns refinement:
    seed 0, 32 steps, cfg 7, denoise 0.75, DPM++ 2M Karras, short side 1024). ``start`` names what the sampler starts
    from (denoise tooltip), ``native`` what ``short_side = 0`` keeps (short_side tooltip)."""
    samplers, schedulers = sampler_choices()
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "sampler seed"}),
        "steps": ("INT", {"default": 32, "min": 1, "max": 200, "tooltip": "sampler steps (the paper: 32)"}),
        "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1,
                          "tooltip": "classifier-free guidance scale (the paper: 7)"}),
        "denoise": ("FLOAT", {"default": 0.75, "min": 0.01, "max": 1.0, "step": 0.01,
                              "tooltip": f"how much of {start} is re-synthesised (the paper: 0.75)"}),
        "sampler_name": (samplers, {"default": "dpmpp_2m" if "dpmpp_2m" in samplers else samplers[0],
                                    "tooltip": "sampler (the paper: DPM++ 2M)"}),
        "scheduler": (schedulers, {"default": "karras" if "karras" in schedulers else schedulers[0],
                                   "tooltip": "noise schedule (the paper: Karras)"}),
        "short_side": ("INT", {"default": 1024, "min": 0, "max": 4096, "step": 32,
                               "tooltip": f"sampling resolution (short side, px); 0 = {native}"}),
    }


def encode_text(clip, text: str) -> list:
    """CONDITIONING of ``text`` (core CLIPTextEncode)."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


class TextEncoder:
    """``encoder(text)`` -> CONDITIONING of ``text`` with ``clip``, each distinct text encoded once (for sampler
    backends that make many calls with a few prompts)."""

    def __init__(self, clip) -> None:
        self.clip = clip
        self._conds: dict[str, list] = {}

    def __call__(self, text: str) -> list:
        if text not in self._conds:
            self._conds[text] = encode_text(self.clip, text)
        return self._conds[text]


def apply_control_net(positive: list, negative: list, control_net, hint: torch.Tensor, strength: float, vae=None):
    """Attach ``control_net`` with ``hint`` (IMAGE ``[B,H,W,3]``) to both conditionings over the whole schedule
    (core ControlNetApplyAdvanced, start 0 / end 1). Returns ``(positive, negative)``."""
    import inspect

    if strength == 0:
        return positive, negative
    control_hint = hint.movedim(-1, 1)
    accepts_vae = "vae" in inspect.signature(control_net.set_cond_hint).parameters
    made: dict = {}
    out = []
    for conditioning in (positive, negative):
        c = []
        for t in conditioning:
            d = t[1].copy()
            prev = d.get("control", None)
            if prev not in made:
                kwargs = {"vae": vae} if accepts_vae else {}
                c_net = control_net.copy().set_cond_hint(control_hint, strength, (0.0, 1.0), **kwargs)
                c_net.set_previous_controlnet(prev)
                made[prev] = c_net
            d["control"] = made[prev]
            d["control_apply_to_uncond"] = False
            c.append([t[0], d])
        out.append(c)
    return out[0], out[1]


def img2img(model, vae, positive, negative, pixels: torch.Tensor, *, seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, denoise: float, noise_mask: torch.Tensor | None = None,
            on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """VAE-encode ``pixels [B,h,w,3]``, sample (core KSampler semantics; ``noise_mask [B,h,w]`` as
    SetLatentNoiseMask), decode. Cancel is checked at every sampler step, and ``on_step()`` (e.g. a node's
    :meth:`Steps.tick`) runs after it, so the node's bar moves per sampler step. Returns IMAGE ``[B,h,w,3]``."""
    import comfy.sample

    latent = vae.encode(pixels[..., :3])
    if hasattr(comfy.sample, "fix_empty_latent_channels"):
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
    noise = comfy.sample.prepare_noise(latent, seed, None)

    def callback(step, x0, x, total_steps):
        throw_if_interrupted()
        if on_step is not None:
            on_step()

    samples = comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
        denoise=denoise, noise_mask=noise_mask, callback=callback, disable_pbar=True, seed=seed,
    )
    images = vae.decode(samples)
    if images.dim() == 5:  # video VAEs return [B,T,H,W,C]
        images = images.reshape(-1, *images.shape[-3:])
    return images[..., :3].float().cpu()
