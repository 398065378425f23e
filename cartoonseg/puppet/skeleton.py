"""Skeletons of characters: the OpenPose body layout, pose keypoints in ComfyUI's ``POSE_KEYPOINT`` JSON layout,
user handles as JSON, and an automatic skeleton from the mask's distance transform.

Joint names follow the OpenPose 18-keypoint body model (``nose, neck, r_shoulder, ...``; "r" is the character's
right, which is the image's left for a character facing the viewer). Every skeleton is a tree rooted at one joint;
bones go from a parent joint to a child joint. Image coordinates: ``(x, y)`` pixels, y down.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AUTO_JOINTS",
    "OPENPOSE_JOINTS",
    "OPENPOSE_PARENTS",
    "PersonPose",
    "Skeleton",
    "auto_joint_name",
    "auto_skeleton",
    "load_json",
    "match_people",
    "parse_handles",
    "parse_pose_keypoint",
    "skeleton_from_points",
]

#: OpenPose COCO-18 body keypoints in ``pose_keypoints_2d`` order (what DWPose / ComfyUI's POSE_KEYPOINT carry)
OPENPOSE_JOINTS: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
    "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
#: parent of each OpenPose joint in the rig tree (root: neck)
OPENPOSE_PARENTS: dict[str, str | None] = {
    "neck": None, "nose": "neck", "r_shoulder": "neck", "r_elbow": "r_shoulder", "r_wrist": "r_elbow",
    "l_shoulder": "neck", "l_elbow": "l_shoulder", "l_wrist": "l_elbow", "r_hip": "neck", "r_knee": "r_hip",
    "r_ankle": "r_knee", "l_hip": "neck", "l_knee": "l_hip", "l_ankle": "l_knee", "r_eye": "nose", "l_eye": "nose",
    "r_ear": "r_eye", "l_ear": "l_eye",
}
#: BODY_25 index -> OpenPose-18 name (8 = mid hip and 19-24 = feet have no counterpart and are skipped)
_BODY25 = {0: "nose", 1: "neck", 2: "r_shoulder", 3: "r_elbow", 4: "r_wrist", 5: "l_shoulder", 6: "l_elbow",
           7: "l_wrist", 9: "r_hip", 10: "r_knee", 11: "r_ankle", 12: "l_hip", 13: "l_knee", 14: "l_ankle",
           15: "r_eye", 16: "l_eye", 17: "r_ear", 18: "l_ear"}


@dataclasses.dataclass
class Skeleton:
    """A joint tree.

    Attributes:
        names: joint names (unique).
        parents: index of each joint's parent, ``-1`` for the root (exactly one).
        joints: float64 ``[J,2]`` rest positions (xy pixels).
        source: how it was made: ``"pose"``, ``"handles"`` or ``"auto"``.
    """

    names: list[str]
    parents: list[int]
    joints: np.ndarray
    source: str = "handles"

    def __post_init__(self) -> None:
        self.joints = np.asarray(self.joints, dtype=np.float64).reshape(-1, 2)
        n = len(self.names)
        if len(self.parents) != n or len(self.joints) != n:
            raise ValueError(f"skeleton needs one parent and one position per joint: {n} names, "
                             f"{len(self.parents)} parents, {len(self.joints)} positions")
        if n < 2:
            raise ValueError(f"a skeleton needs at least two joints (one bone), got {n}")
        if len(set(self.names)) != n:
            raise ValueError(f"joint names must be unique, got {self.names}")
        if not np.isfinite(self.joints).all():
            raise ValueError("joint positions must be finite")
        roots = [i for i, p in enumerate(self.parents) if p < 0]
        if len(roots) != 1:
            raise ValueError(f"a skeleton needs exactly one root joint, got {len(roots)}")
        for i, p in enumerate(self.parents):
            if p >= n:
                raise ValueError(f"joint {self.names[i]!r} has parent index {p} out of range")
        _ = self.order  # raises on cycles

    @property
    def root(self) -> int:
        return self.parents.index(-1)

    @property
    def order(self) -> list[int]:
        """Joint indices parents-first (breadth first from the root)."""
        children = self.children
        out, queue = [], [self.root]
        while queue:
            j = queue.pop(0)
            out.append(j)
            queue.extend(children[j])
        if len(out) != len(self.names):
            raise ValueError("skeleton parents contain a cycle or a joint not connected to the root")
        return out

    @property
    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.names]
        for i, p in enumerate(self.parents):
            if p >= 0:
                kids[p].append(i)
        return kids

    @property
    def bones(self) -> list[tuple[int, int]]:
        """``(parent, child)`` index pairs, parents-first."""
        return [(self.parents[j], j) for j in self.order if self.parents[j] >= 0]

    def index(self, name: str) -> int | None:
        try:
            return self.names.index(name)
        except ValueError:
            return None

    def depth(self) -> np.ndarray:
        """Tree depth of each joint (root 0)."""
        d = np.zeros(len(self.names), dtype=np.int64)
        for j in self.order:
            if self.parents[j] >= 0:
                d[j] = d[self.parents[j]] + 1
        return d

    @property
    def head(self) -> int | None:
        """The head joint, the one a nod turns: ``nose`` when named, else the leaf highest in the picture (None
        when the root is the only joint)."""
        nose = self.index("nose")
        if nose is not None:
            return nose
        leaves = [j for j, kids in enumerate(self.children) if not kids and self.parents[j] >= 0]
        return min(leaves, key=lambda j: self.joints[j, 1]) if leaves else None

    def subtree(self, j: int) -> list[int]:
        """``j`` and all its descendants."""
        out, stack, kids = [], [j], self.children
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(kids[k])
        return out

    def bone_lengths(self, joints: np.ndarray | None = None) -> np.ndarray:
        """Length of every bone of :attr:`bones` for ``joints`` (default: rest)."""
        p = self.joints if joints is None else np.asarray(joints, dtype=np.float64)
        return np.array([float(np.hypot(*(p[c] - p[a]))) for a, c in self.bones])

    def to_dict(self) -> dict:
        return {"names": list(self.names), "parents": [self.names[p] if p >= 0 else None for p in self.parents],
                "joints": self.joints.round(3).tolist(), "source": self.source}


# ------------------------------------------------------------------------------------------------ from points
def skeleton_from_points(points: Mapping[str, Sequence[float]], parents: Mapping[str, str | None] | None = None,
                         *, source: str = "handles") -> Skeleton:
    """A skeleton from named positions.

    ``parents`` maps child -> parent name (``None`` for the root). Joints it leaves out (all of them without it)
    follow the OpenPose tree when every name is an OpenPose name, else hang from the first joint (OpenPose names
    keep their OpenPose parent when ``parents`` is given). A missing joint's children are re-attached to its nearest present
    ancestor; when the root itself is missing (e.g. no ``neck`` in a pose), the midpoint of the shoulders (else
    hips) becomes a ``neck`` joint, or else the present joint highest in the tree becomes the root.
    """
    names = [str(n) for n in points]
    if len(names) < 2:
        raise ValueError(f"need at least two joints to make a skeleton, got {len(names)}: {names}")
    pos = {n: np.asarray(points[n], dtype=np.float64).reshape(2) for n in names}
    if all(n in OPENPOSE_PARENTS for n in names):
        defaults = dict(OPENPOSE_PARENTS)
    elif parents is None:
        defaults = {n: (None if i == 0 else names[0]) for i, n in enumerate(names)}
    else:
        defaults = {**OPENPOSE_PARENTS, **{n: (None if n == names[0] else names[0])
                                           for n in names if n not in OPENPOSE_PARENTS}}
    parents = {**defaults, **{str(k): (None if v is None else str(v)) for k, v in (parents or {}).items()}}

    def chain(n: str) -> list[str]:
        out, seen = [], set()
        while n is not None:
            if n in seen:
                raise ValueError(f"parents contain a cycle through {n!r}")
            seen.add(n)
            out.append(n)
            n = parents.get(n)
        return out

    if any(parents.get(n) is None for n in names):
        root = next(n for n in names if parents.get(n) is None)
    else:
        template_root = next((n for n, p in parents.items() if p is None), None)
        synth = [pair for pair in (("r_shoulder", "l_shoulder"), ("r_hip", "l_hip")) if all(q in pos for q in pair)]
        if template_root is not None and synth and template_root not in pos:
            a, b = synth[0]
            pos[template_root] = (pos[a] + pos[b]) / 2
            names.insert(0, template_root)
            root = template_root
        else:
            root = min(names, key=lambda n: (len(chain(n)), names.index(n)))
    resolved: dict[str, str | None] = {}
    for n in names:
        if n == root:
            resolved[n] = None
            continue
        anc = chain(n)[1:]
        present = next((a for a in anc if a in pos and a != n), None)
        resolved[n] = present if present is not None else root
        if resolved[n] == n:
            resolved[n] = root
    index = {n: i for i, n in enumerate(names)}
    return Skeleton(names=names, parents=[index[resolved[n]] if resolved[n] is not None else -1 for n in names],
                    joints=np.stack([pos[n] for n in names]), source=source)


# ------------------------------------------------------------------------------------------------ POSE_KEYPOINT
@dataclasses.dataclass
class PersonPose:
    """One person's body keypoints in image pixels: name -> ``(x, y)``; missing joints are absent."""

    points: dict[str, tuple[float, float]]
    confidence: dict[str, float] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.points)


def load_json(source) -> Any:
    """A JSON document from a path (str/Path to an existing file), a JSON text, or an already-parsed object."""
    if isinstance(source, (dict, list)):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"JSON file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a JSON file (expected UTF-8 JSON text, found binary data)") from None
        except OSError as exc:
            raise ValueError(f"cannot read JSON file {path}: {exc}") from exc
        where = f"{path}: "
    elif isinstance(source, str):
        text, where = source, ""
    else:
        raise TypeError(f"expected a JSON path, JSON text, dict or list, got {type(source).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}invalid JSON (expected a JSON document): {exc}") from exc


def _frames_of(data: Any) -> list[dict]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise ValueError("POSE_KEYPOINT must be a dict with 'people' or a list of such dicts (one per frame)")
    for i, f in enumerate(data):
        if "people" not in f or not isinstance(f["people"], list):
            raise ValueError(f"POSE_KEYPOINT frame {i} has no 'people' list")
    return data


def parse_pose_keypoint(data, *, image_size: tuple[int, int] | None = None, coords: str = "auto",
                        min_confidence: float = 0.05, default_canvas: tuple[int, int] | None = None
                        ) -> list[list[PersonPose]]:
    """Parse ComfyUI's ``POSE_KEYPOINT`` (the OpenPose JSON layout DWPose / OpenPose preprocessors emit).

    Args:
        data: a frame dict ``{"people": [{"pose_keypoints_2d": [x, y, c, ...]}, ...], "canvas_width": W,
            "canvas_height": H}`` or a list of them (one per video frame), as a parsed object, JSON text or path.
            Bodies with 18 (COCO) or 25 (BODY_25) keypoints are read; face and hand keypoints are ignored.
        image_size: ``(H, W)`` of the image the poses are mapped onto: poses are rescaled from their canvas to it.
            None keeps canvas pixels (what retargeting wants: undistorted directions).
        default_canvas: ``(H, W)`` canvas for frames that do not give ``canvas_width`` / ``canvas_height`` (default:
            ``image_size``); normalized coordinates are multiplied by the canvas.
        coords: ``"normalized"`` (x, y in [0,1] of the canvas), ``"absolute"`` (canvas pixels) or ``"auto"`` (absolute
            when any coordinate exceeds 1.5, else normalized).
        min_confidence: keypoints with a lower confidence, or at (0, 0) (OpenPose's "missing"), are left out.

    Returns:
        One list of :class:`PersonPose` per frame (people with no usable joint are dropped).
    """
    if coords not in ("auto", "normalized", "absolute"):
        raise ValueError(f"coords must be auto, normalized or absolute, got {coords!r}")
    frames = _frames_of(load_json(data))
    out: list[list[PersonPose]] = []
    for fi, frame in enumerate(frames):
        cw, ch = frame.get("canvas_width"), frame.get("canvas_height")
        if not (_canvas_side(cw) and _canvas_side(ch)):  # absent, bool, NaN, inf or <= 0: the fallback canvas
            fallback = default_canvas or image_size
            cw, ch = (fallback[1], fallback[0]) if fallback else (None, None)
        people = []
        raw = []
        for pi, person in enumerate(frame["people"]):
            if not isinstance(person, dict):
                raise ValueError(f"POSE_KEYPOINT frame {fi} person {pi} is not a dict")
            kp = person.get("pose_keypoints_2d")
            if kp is None:
                raw.append(None)
                continue
            arr = np.asarray(kp, dtype=np.float64).reshape(-1)
            if arr.size % 3 or arr.size // 3 not in (18, 25):
                raise ValueError(f"POSE_KEYPOINT frame {fi} person {pi}: pose_keypoints_2d must hold 18 or 25 "
                                 f"(x, y, confidence) triples, got {arr.size} numbers")
            raw.append(arr.reshape(-1, 3))
        valid = [a for a in raw if a is not None]
        mode = coords
        if mode == "auto":
            big = any(np.nanmax(np.abs(a[:, :2])) > 1.5 for a in valid if a.size)
            mode = "absolute" if big else "normalized"
        for arr in raw:
            if arr is None:
                continue
            names = OPENPOSE_JOINTS if len(arr) == 18 else [_BODY25.get(i) for i in range(len(arr))]
            pts: dict[str, tuple[float, float]] = {}
            conf: dict[str, float] = {}
            for name, (x, y, c) in zip(names, arr):
                if name is None or not (np.isfinite(x) and np.isfinite(y) and np.isfinite(c)):
                    continue
                if c < min_confidence or (x == 0 and y == 0) or x < 0 or y < 0:
                    continue
                if mode == "normalized" and cw and ch:
                    x, y = x * cw, y * ch
                if image_size is not None and cw and ch:
                    x, y = x * image_size[1] / cw, y * image_size[0] / ch
                if not (math.isfinite(x) and math.isfinite(y)):  # overflowed by the scaling (1e308): junk, missing
                    continue
                pts[name] = (float(x), float(y))
                conf[name] = float(c)
            if pts:
                people.append(PersonPose(points=pts, confidence=conf))
        out.append(people)
    return out


def _canvas_side(value) -> bool:
    """Whether a ``canvas_width`` / ``canvas_height`` value is a usable size (a finite number > 0, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def match_people(people: Sequence[PersonPose], support: np.ndarray, *, radius: float = 3.0) -> dict[int, int]:
    """Assign people to instances by containment.

    ``support`` is bool ``[N,H,W]``. A person's score for an instance is the number of its joints inside that
    instance's mask (within ``radius`` pixels); the assignment maximises the total (Hungarian), and pairs with no
    joint inside are not made. Returns ``{instance index: person index}``.
    """
    from scipy.ndimage import distance_transform_edt
    from scipy.optimize import linear_sum_assignment

    n = support.shape[0]
    if n == 0 or not people:
        return {}
    h, w = support.shape[1:]
    score = np.zeros((n, len(people)))
    for i in range(n):
        near = distance_transform_edt(~support[i]) <= radius if support[i].any() else support[i]
        for p, person in enumerate(people):
            for x, y in person.points.values():
                if not (math.isfinite(x) and math.isfinite(y)):
                    continue
                ix, iy = int(round(x)), int(round(y))
                if 0 <= ix < w and 0 <= iy < h and near[iy, ix]:
                    score[i, p] += 1
    rows, cols = linear_sum_assignment(-score)
    return {int(i): int(p) for i, p in zip(rows, cols) if score[i, p] > 0}


# ------------------------------------------------------------------------------------------------ user handles
def parse_handles(data, *, image_size: tuple[int, int] | None = None) -> dict[int, Skeleton]:
    """User handles as JSON -> ``{instance index: Skeleton}``.

    Layout::

        {"coords": "pixels" | "normalized",            # optional, default pixels
         "characters": [
            {"instance": 0,
             "joints": {"neck": [120, 80], "r_wrist": [90, 150], ...},   # or a list of {"name", "xy", "parent"}
             "parents": {"r_wrist": "neck", ...}}       # optional: see skeleton_from_points for joints left out
         ]}

    A bare list of such character entries is accepted as well.
    """
    doc = load_json(data)
    if isinstance(doc, list):
        doc = {"characters": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("characters"), list):
        raise ValueError("handles JSON must be {'characters': [{'instance': i, 'joints': {...}}, ...]}")
    coords = doc.get("coords", "pixels")
    if coords not in ("pixels", "normalized"):
        raise ValueError(f"handles 'coords' must be 'pixels' or 'normalized', got {coords!r}")
    if coords == "normalized" and image_size is None:
        raise ValueError("normalized handle coordinates need the image size")
    out: dict[int, Skeleton] = {}
    for ci, entry in enumerate(doc["characters"]):
        if not isinstance(entry, dict) or "instance" not in entry or "joints" not in entry:
            raise ValueError(f"handles character {ci} needs 'instance' and 'joints'")
        inst = entry["instance"]
        if isinstance(inst, bool) or not isinstance(inst, int) or inst < 0:
            raise ValueError(f"handles character {ci}: 'instance' must be a non-negative integer, got {inst!r}")
        joints = entry["joints"]
        parents = entry.get("parents")
        if isinstance(joints, list):
            items = joints
            joints, plist = {}, {}
            for j in items:
                if not isinstance(j, dict) or "name" not in j or "xy" not in j:
                    raise ValueError(f"handles character {ci}: joint entries need 'name' and 'xy'")
                joints[str(j["name"])] = j["xy"]
                if "parent" in j:
                    plist[str(j["name"])] = j["parent"]
            parents = plist or None
        if not isinstance(joints, dict):
            raise ValueError(f"handles character {ci}: 'joints' must map names to [x, y]")
        pts = {}
        for name, xy in joints.items():
            try:
                if isinstance(xy, (str, bytes)):  # "12" would unpack to (1.0, 2.0)
                    raise TypeError
                x, y = (float(v) for v in xy)
            except (TypeError, ValueError):
                raise ValueError(f"handles character {ci}: joint {name!r} needs [x, y], got {xy!r}") from None
            if coords == "normalized":
                x, y = x * image_size[1], y * image_size[0]
            pts[str(name)] = (x, y)
        if inst in out:
            raise ValueError(f"handles give instance {inst} twice")
        out[inst] = skeleton_from_points(pts, parents, source="handles")
    return out


# ------------------------------------------------------------------------------------------------ automatic
#: the automatic skeleton's limbs: (start joint, its place along the limb), the middle joint (or None), the tip;
#: a place is the fraction of the path from the limb's branch point to its tip
_AUTO_LIMBS = {"head": (("neck", 0.5), None, "nose"), "leg": (("hip", 0.3), ("knee", 0.68), "ankle"),
               "arm": (("shoulder", 0.3), ("elbow", 0.66), "wrist")}
#: a head's neck is a pinch: the half-width there is at most this fraction of the narrower of the head's and the
#: trunk's largest half-widths on either side of it (:func:`_neck_index`)
_NECK_PINCH = 0.85
#: a trunk under a head that is the mask's deepest part is at least this fraction of the head's half-width thick
#: (a hand or foot beyond a wrist or ankle is thinner), and a part above a root this thick is a head over a torso
#: root, not hair or a raised arm (:func:`_trunk_root`)
_TRUNK_DEPTH = 0.35
#: a tip of the automatic skeleton is a limb's when it lies outside every inscribed disc of the skeleton so far
#: (a disc of the mask's half-width round each of its pixels) by at least this fraction of its branch's length.
#: A spare tip on a round part's own outline lies on those discs (within 1.5 px: the side of a chibi's big head,
#: which became a stray limb hanging from the nose); arms and legs, short chibi ones included, lie 0.39 to 0.74 of
#: their length outside
_LIMB_REACH = 0.25
#: every limb joint name :func:`auto_skeleton` can give (besides ``root`` and ``joint1``, ``joint2``, ... for
#: unnamed branches; a name taken twice gets ``_2``, ``_3``, ...)
AUTO_JOINTS: tuple[str, ...] = ("root", *(
    f"{side}{name}" for kind, (start, mid, end) in _AUTO_LIMBS.items()
    for side in (("",) if kind == "head" else ("r_", "l_"))
    for name in (start[0], *((mid[0],) if mid else ()), end)))


def auto_joint_name(name: str) -> bool:
    """Whether :func:`auto_skeleton` can name a joint ``name`` (:data:`AUTO_JOINTS`, ``jointN``, with a
    ``_2``... suffix)."""
    import re

    base = re.sub(r"_[2-9]\d*$", "", name)
    return base in AUTO_JOINTS or re.fullmatch(r"joint[1-9]\d*", base) is not None


def auto_skeleton(support: np.ndarray, *, max_branches: int = 6, work_size: int = 96,
                  min_branch: float = 0.18) -> Skeleton:
    """A skeleton derived from the mask alone (for users without a pose model).

    The mask is reduced to at most ``work_size`` pixels on its long side; its Euclidean distance transform gives
    the root (the deepest interior point, usually the torso; the deepest point of the body below when that is a
    head on top wider than the body, :func:`_trunk_root`) and edge costs that make shortest paths run along the
    medial axis (``step / distance``, so thick centres are cheap). From the shortest-path tree of the root,
    branches are added greedily: the pixel whose path adds the most new length becomes a tip, while that length
    exceeds ``min_branch`` times the mask's larger side (at most ``max_branches``) and the tip reaches out of the
    body (outside the inscribed discs along the skeleton so far by :data:`_LIMB_REACH` of that length: a bump of a
    big round head's outline is no limb). Joints are the root, the tips,
    the branch points, and a middle joint on every limb; limbs are named by direction (the highest tip above the
    root is the head: ``neck``-``nose``; downward tips are legs ``hip``-``knee``-``ankle``; the others arms
    ``shoulder``-``elbow``-``wrist``, "r" on the image's left), so presets and retargeting find them. The neck sits
    where the head meets the trunk (:func:`_neck_index`; branch points inside a big head join it, their branches
    hanging from the nose), the nose on the head's axis (:func:`_head_axis_end`), and an arm or leg starts where
    it leaves the trunk (:func:`_limb_start`), not at a fixed fraction of its path from the root.
    """
    import cv2
    from scipy.ndimage import distance_transform_edt
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    support = np.asarray(support, dtype=bool)
    if not support.any():
        raise ValueError("cannot rig an empty mask")
    ys, xs = np.nonzero(support)
    y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    crop = support[y0:y1, x0:x1]
    ch, cw = crop.shape
    scale = min(1.0, work_size / max(ch, cw))
    if scale < 1.0:
        small = cv2.resize(crop.astype(np.float32), (max(1, round(cw * scale)), max(1, round(ch * scale))),
                           interpolation=cv2.INTER_AREA) > 0.5
        if not small.any():
            small = cv2.resize(crop.astype(np.uint8), (max(1, round(cw * scale)), max(1, round(ch * scale))),
                               interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        small = crop
    sy, sx = ch / small.shape[0], cw / small.shape[1]

    def to_image(iy, ix) -> np.ndarray:
        return np.array([x0 + (ix + 0.5) * sx - 0.5, y0 + (iy + 0.5) * sy - 0.5])

    dist = distance_transform_edt(np.pad(small, 1))[1:-1, 1:-1]
    h, w = small.shape
    idx = -np.ones((h, w), dtype=np.int64)
    py, px = np.nonzero(small)
    idx[py, px] = np.arange(len(py))
    n = len(py)
    if n == 1:
        c = to_image(py[0], px[0])
        r = max(1.0, 0.5 * min(sy, sx))
        return Skeleton(["root", "top"], [-1, 0], np.stack([c, c - [0, r]]), source="auto")
    rows, cols, cost, step = [], [], [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ny, nx = py + dy, px + dx
        ok = (ny < h) & (nx >= 0) & (nx < w)
        ok[ok] = small[ny[ok], nx[ok]]
        a = np.nonzero(ok)[0]
        length = math.hypot(dy * sy, dx * sx)
        d = 0.5 * (dist[py[a], px[a]] + dist[ny[a], nx[a]])
        rows.append(a)
        cols.append(idx[ny[a], nx[a]])
        cost.append(length / d**1.5)
        step.append(np.full(len(a), length))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.concatenate(cost), (rows, cols)), shape=(n, n)).tocsr()
    steps = coo_matrix((np.concatenate(step), (rows, cols)), shape=(n, n)).tocsr()
    steps = steps.maximum(steps.T)
    cy, cx = py.mean(), px.mean()
    deep = dist[py, px]
    root = int(np.lexsort(((py - cy) ** 2 + (px - cx) ** 2, -deep))[0])
    costs, pred = dijkstra(graph, directed=False, indices=root, return_predecessors=True)
    trunk = _trunk_root(py, px, deep, root, costs, pred, centre=(cy, cx))
    if trunk != root:  # the deepest point was a big head on top of the body: root the tree in the trunk below it
        root = trunk
        costs, pred = dijkstra(graph, directed=False, indices=root, return_predecessors=True)
    reach = np.isfinite(costs)
    in_tree = np.zeros(n, dtype=bool)
    in_tree[root] = True
    tips: list[int] = []
    side = max(ch, cw)

    def grow(v: int) -> None:
        while not in_tree[v]:
            in_tree[v] = True
            v = int(pred[v])

    yx = np.stack([py * sy, px * sx], 1)  # work-grid pixels and their half-widths in image pixels
    radius = deep * math.sqrt(sx * sy)
    for _ in range(max_branches):
        # Euclidean geodesic distance of every pixel from the skeleton so far: the length a new branch would add
        gain = dijkstra(steps, directed=False, indices=np.nonzero(in_tree)[0], min_only=True)
        gain = np.where(reach & np.isfinite(gain), gain, -1.0)
        long = np.nonzero(gain >= min_branch * side)[0]
        if not len(long):
            break
        # a limb reaches out of the body: its tip lies outside every inscribed disc of the skeleton so far by
        # _LIMB_REACH of its branch's length at least; a tip on a round part's own outline (the side of a
        # chibi's big head, which became a stray limb) lies on the disc of that part's medial line
        beyond = _beyond_discs(yx[long], yx[in_tree], radius[in_tree])
        long = long[beyond >= _LIMB_REACH * gain[long]]
        if not len(long):
            break
        v = int(long[np.argmax(gain[long])])
        tips.append(v)
        grow(v)
    if not tips:  # compact blob: one bone from the root to its farthest point
        far = dijkstra(steps, directed=False, indices=root)
        tips = [int(np.argmax(np.where(reach & np.isfinite(far), far, -1.0)))]
        if tips[0] == root:
            tips = [int(np.argmax(np.where(reach, (py - py[root]) ** 2 + (px - px[root]) ** 2, -1)))]
        grow(tips[0])
    # key nodes: root, tips, branch points of the union tree
    child_count = np.zeros(n, dtype=np.int64)
    tree_nodes = np.nonzero(in_tree)[0]
    for v in tree_nodes:
        if v != root:
            child_count[pred[v]] += 1
    key = {root} | set(tips) | {int(v) for v in tree_nodes if child_count[v] > 1}
    pos = {v: to_image(py[v], px[v]) for v in key}
    root_xy = pos[root]
    # the key-node parent of each key node, and the path between them (for middle joints)
    segs: dict[int, list[int]] = {}
    for v in key:
        if v == root:
            continue
        path, u = [v], int(pred[v])
        while u not in key:
            path.append(u)
            u = int(pred[u])
        segs[v] = path + [u]  # from v up to its key parent
    # limb roles by the direction from the root to each tip (image y down)
    def direction(v):
        d = pos[v] - root_xy
        return d / (np.hypot(*d) + 1e-9)

    roles: dict[int, str] = {}
    ups = [v for v in tips if direction(v)[1] < -0.5]
    head = min(ups, key=lambda v: direction(v)[1]) if ups else None
    if head is not None:
        roles[head] = "head"
    downs = sorted((v for v in tips if v != head and direction(v)[1] > 0.5), key=lambda v: -direction(v)[1])[:2]
    rest = [v for v in tips if v != head and v not in downs]
    for group, kind in ((downs, "leg"), (sorted(rest, key=lambda v: -abs(direction(v)[0]))[:2], "arm")):
        group = sorted(group, key=lambda v: pos[v][0])
        sides = ["r", "l"] if len(group) == 2 else (["r"] if direction(group[0])[0] <= 0 else ["l"]) if group else []
        for v, s in zip(group, sides):
            roles[v] = f"{s}_{kind}"
    names_for = _AUTO_LIMBS

    names: list[str] = []
    parents: list[int] = []
    joints: list[np.ndarray] = []
    node_joint: dict[int, int] = {}

    def add(name: str, xy: np.ndarray, parent: int) -> int:
        base, k = name, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
        parents.append(parent)
        joints.append(np.asarray(xy, dtype=np.float64))
        return len(names) - 1

    def half_widths(path: list[int]) -> np.ndarray:
        return np.array([dist[py[a], px[a]] for a in path])

    def nose_xy(nodes: list[int]) -> np.ndarray:
        """The nose on the head's axis (:func:`_head_axis_end`); ``nodes`` run from the neck to the head's tip."""
        end = _head_axis_end(small, np.stack([py[nodes], px[nodes]], axis=1).astype(np.float64))
        return pos[nodes[-1]] if end is None else to_image(*end)

    # a head big enough to hold a branch point of its own (a chibi's round head gets a second tip on its outline):
    # no pinch between the tip and that branch point, but one further down towards the root. The neck goes there,
    # and the key nodes beyond it join the head: no joint of their own, their other branches hang from the nose,
    # so a nod turns the whole head about the neck rather than the nose about a point inside the head
    absorbed: list[int] = []
    if head is not None and _neck_index(half_widths(segs[head])) is None:
        chain, full, at_index = [head], list(segs[head]), []
        while chain[-1] != root:
            up = segs[chain[-1]][-1]
            at_index.append(len(full) - 1)  # where the key node ``up`` sits on ``full``
            chain.append(up)
            full += segs[up][1:] if up != root else []
        k = _neck_index(half_widths(full))
        if k is not None and at_index and k >= at_index[0]:
            absorbed = [a for a, i in zip(chain[1:], at_index) if i <= k]
            neck_parent = chain[len(absorbed) + 1]
            neck_xy = to_image(py[full[k]], px[full[k]])

    node_joint[root] = add("root", root_xy, -1)
    # create key nodes parents-first (by cost from the root)
    counter = 0
    for v in sorted(key - {root}, key=lambda v: costs[v]):
        if absorbed and (v == head or v in absorbed):
            if v == absorbed[-1]:  # the head's part nearest the root comes first: its neck and nose
                nose = add("nose", nose_xy(full[k::-1]), add("neck", neck_xy, node_joint[neck_parent]))
                node_joint.update({a: nose for a in (head, *absorbed)})
            continue
        path = segs[v]
        parent_joint = node_joint[path[-1]]
        role = roles.get(v)
        if role is not None:
            s, kind = (role.split("_") + [""])[:2] if role != "head" else ("", "head")
            start, mid, end = names_for[kind]
            prefix = f"{s}_" if s else ""
            # the limb's start joint: a third of the way from its key parent (so the shoulder/hip sits off the root)
            seg_len = np.cumsum([0.0] + [float(np.hypot(*(to_image(py[a], px[a]) - to_image(py[b], px[b]))))
                                         for a, b in zip(path[:-1], path[1:])])
            total = seg_len[-1]

            def at(frac, total=total, seg_len=seg_len, path=path):
                t = total * (1 - frac)  # path runs tip -> parent
                k = int(np.searchsorted(seg_len, t))
                k = min(max(k, 0), len(path) - 1)
                return to_image(py[path[k]], px[path[k]])

            start_xy, mid_xy, end_xy = at(start[1]), None if mid is None else at(mid[1]), pos[v]
            if kind == "head":  # the neck where the head meets the trunk (its narrowest place between them)
                k = _neck_index(half_widths(path))
                if k is None:  # no pinch: the fixed fraction (the place ``at`` gives)
                    k = min(max(int(np.searchsorted(seg_len, total * (1 - start[1]))), 0), len(path) - 1)
                start_xy, end_xy = to_image(py[path[k]], px[path[k]]), nose_xy(path[k::-1])
            else:  # arms and legs start where they leave the trunk, not a fixed fraction in
                found = _limb_start(np.stack([to_image(py[a], px[a]) for a in path]),
                                    np.array([dist[py[a], px[a]] for a in path]) * math.sqrt(sx * sy),
                                    small_xy=lambda xy: (int((xy[1] - y0 + 0.5) / sy), int((xy[0] - x0 + 0.5) / sx)),
                                    inside=small, step_in=kind == "arm")
                if found is not None:
                    start_xy, mid_xy = found
            j = add(prefix + start[0], start_xy, parent_joint)
            if mid is not None:
                j = add(prefix + mid[0], mid_xy, j)
            node_joint[v] = add(prefix + end, end_xy, j)
        else:
            counter += 1
            node_joint[v] = add(f"joint{counter}", pos[v], parent_joint)
    return Skeleton(names=names, parents=parents, joints=np.stack(joints), source="auto")


def _beyond_discs(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """How far each of ``points [N,2]`` lies outside the union of the discs ``centres [M,2]``, ``radii [M]``
    (negative inside): ``min_m |p - c_m| - r_m``, in chunks of points."""
    out = np.empty(len(points))
    step = max(1, 2**22 // max(1, len(centres)))
    for i in range(0, len(points), step):
        p = points[i:i + step]
        out[i:i + step] = (np.hypot(p[:, None, 0] - centres[None, :, 0], p[:, None, 1] - centres[None, :, 1])
                           - radii[None]).min(1)
    return out


def _trunk_root(py: np.ndarray, px: np.ndarray, depth: np.ndarray, root: int, costs: np.ndarray, pred: np.ndarray,
                *, centre: tuple[float, float]) -> int:
    """The root in the trunk when the mask's deepest point ``root`` lies in a head wider than the body below it.

    ``py, px [N]`` are the mask's work-grid pixels, ``depth [N]`` their half-widths, ``costs, pred`` the shortest-path
    tree from ``root``. A pixel lies beyond a pinch when the narrowest half-width on its path from the root is at
    least one grid pixel and :data:`_NECK_PINCH` below its own (the test of :func:`_neck_index`). The root moves to
    the deepest such pixel (ties: the one nearest the mask's centre) when the root's part is a head on top:

    - that pixel is a thick part (at least :data:`_TRUNK_DEPTH` of the root's half-width ``R``, not a hand or a
      foot), lies below the root's inscribed disc and more below it than to its side;
    - nothing above the root's disc is thick (half-width under :data:`_TRUNK_DEPTH` of ``R``: hair, ears or raised
      arms, not a head over a torso root).

    Otherwise ``root`` is returned (ordinary proportions: the torso is the deepest part and the head sits above it).
    The deepest point of a chibi (or of the README preview's character at 640x480, head 9 units wide on a body 8
    wide) was inside the head: no limb pointed up from it, so the rig had no ``neck``/``nose`` and nod or turn found
    no head."""
    R = float(depth[root])
    order = np.argsort(costs)
    order = order[np.isfinite(costs[order])]
    neck = depth.copy()  # the narrowest half-width on the path from the root (parents come first in cost order)
    for v in order[1:]:
        neck[v] = min(depth[v], neck[pred[v]])
    pinched = (depth - neck >= 1.0) & (neck <= _NECK_PINCH * depth) & np.isfinite(costs)
    dy, dx = py - py[root], px - px[root]
    pinched &= (dy > R) & (dy > np.abs(dx)) & (depth >= _TRUNK_DEPTH * R)
    if not pinched.any() or (depth[dy < -R] >= _TRUNK_DEPTH * R).any():
        return root
    cand = np.nonzero(pinched)[0]
    best = cand[depth[cand] >= depth[cand].max()]
    return int(best[np.argmin((py[best] - centre[0]) ** 2 + (px[best] - centre[1]) ** 2)])


def _limb_start(pts: np.ndarray, depth: np.ndarray, *, small_xy, inside: np.ndarray, step_in: bool = True
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where a limb leaves the trunk, and its middle joint: ``pts [P,2]`` (image xy) follow the limb's path from its
    tip to its key parent, ``depth [P]`` the mask's half-width there (image pixels). The limb's own half-width ``r``
    is the median over the tip half of the path; the limb merges into the trunk at the start of the stretch nearest
    the key parent where the half-width exceeds ``1.25 r`` (coming from the trunk, where it first drops to the
    limb's own). The first such place from the tip was a shoe wider than the leg or a big round hand (or the work
    grid's rounding along a thin limb): the hip of a chibi with wide shoes sat by its ankle. The start joint sits
    one ``r`` further in along the limb's axis (fitted to the path before that point), like a shoulder or hip
    inside the outline, rather than where the medial path turns towards the root (which, for an arm hanging from a
    wide torso, is far below the shoulder). The middle joint is halfway along the path from there to the tip. None
    when the path shows no such widening (then the fixed fractions apply).

    ``step_in=False`` (legs) keeps the start at that exit point: the half-width of a leg's medial path grows past
    ``1.25 r`` about one ``r`` above the crotch, where a hip joint sits (half a thigh's width above the crotch);
    one ``r`` further in put the hips of a figure in a shirt a whole thigh's width above the hem, so a kick swung
    the leg's top out over the shirt's flank."""
    n = len(pts)
    if n < 6:
        return None
    r = float(np.median(depth[: n // 2]))
    wide = depth > 1.25 * r
    wide[:2] = False
    if r <= 0 or not wide.any():
        return None
    # the start of the wide stretch nearest the key parent: coming from the trunk, the half-width first drops to the
    # limb's own just before it. The first widening from the tip was a shoe wider than the leg, a mitten, or a
    # bump of the work grid's rounding along a thin limb, and put a hip by the ankle
    narrow = np.nonzero(~wide)[0]
    k = int(narrow[-1]) + 1
    if k >= n - 1 or k < 4:
        return None
    seg = pts[k // 2: k + 1]
    centre = seg.mean(0)
    _, _, vt = np.linalg.svd(seg - centre, full_matrices=False)
    axis = vt[0] if np.dot(vt[0], seg[-1] - seg[0]) >= 0 else -vt[0]  # pointing into the trunk
    exit_xy = centre + axis * float(np.dot(pts[k] - centre, axis))
    # one r in, but at most half way to the key parent (the branch point): a start past it would fold the parent
    # bone back (legs under a round trunk put their hips above the crotch branch, a few pixels from it)
    start = exit_xy + min(r if step_in else 0.0, 0.5 * max(0.0, float(np.dot(pts[-1] - exit_xy, axis)))) * axis
    iy, ix = small_xy(start)
    if not (0 <= iy < inside.shape[0] and 0 <= ix < inside.shape[1] and inside[iy, ix]):
        start = exit_xy
    length = np.cumsum([0.0, *np.hypot(*np.diff(pts[: k + 1], axis=0).T)])
    mid = pts[int(np.searchsorted(length, 0.5 * length[-1]))]
    return start, mid


def _head_axis_end(small: np.ndarray, path: np.ndarray) -> np.ndarray | None:
    """The automatic ``nose``: the end of the head's bone on the head's axis, in work-grid ``(y, x)``.

    ``small`` is the work-grid mask, ``path [P,2]`` the head's medial path from the neck to the head's tip (its
    farthest pixel from the root). The head is the part of the mask beyond the neck (cut across the medial path's
    direction over its first stretch past the neck) that holds the tip; its axis runs from the neck through the
    centre of its largest inscribed disc (the middle of the face, whatever the hair or ears do), and the nose sits
    on it as far out as the tip reaches along it (stepped back towards the centre while outside the mask). None
    when the head part cannot be found (the fixed tip applies).

    The nose used to be the tip itself: on a head with its hair's highest point off to one side (the README
    preview's left character: x 178 against the head's centre 193 at 640x480) the head's bone leant sideways, so
    a retargeted upright head came out tilted and a nod turned it about a slanted axis."""
    from scipy.ndimage import distance_transform_edt, label

    neck, tip = path[0], path[-1]
    steps = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    if len(path) < 3 or steps[-1] < 2.0:
        return None
    q = path[min(int(np.searchsorted(steps, max(2.0, 0.25 * steps[-1]))), len(path) - 1)]
    u = (q - neck) / max(float(np.hypot(*(q - neck))), 1e-9)
    yy, xx = np.mgrid[: small.shape[0], : small.shape[1]]
    parts, _ = label(small & ((yy - neck[0]) * u[0] + (xx - neck[1]) * u[1] > 0.5))
    part = parts[int(tip[0]), int(tip[1])]
    if part == 0:
        return None
    head = parts == part
    depth = distance_transform_edt(np.pad(head, 1))[1:-1, 1:-1]
    centre = np.argwhere(head & (depth >= depth.max() - 0.5)).mean(axis=0)
    axis = centre - neck
    to_centre = float(np.hypot(*axis))
    if to_centre < 1.0:
        return None
    axis /= to_centre
    for reach in np.linspace(max(float(np.dot(tip - neck, axis)), to_centre), to_centre, 16):
        end = neck + reach * axis
        iy, ix = int(round(end[0])), int(round(end[1]))
        if 0 <= iy < small.shape[0] and 0 <= ix < small.shape[1] and small[iy, ix]:
            return end
    return centre


def _neck_index(depth: np.ndarray) -> int | None:
    """Where a head meets the trunk: ``depth [P]`` is the mask's half-width (work-grid pixels) along the head's
    medial path from its tip to its key parent (the root or a branch point). The neck is the narrowest place between
    the head's deepest point and the trunk: the index whose half-width lies furthest below both the largest before
    it (the head) and the largest after it (the trunk), by at least one grid pixel and to at most
    :data:`_NECK_PINCH` of them; along a thin neck of even width (or the flat bottom of a pinch), the middle of the
    narrowest stretch. None when the path has no such pinch (a head that widens smoothly into the body): then the
    fixed fraction of the path applies.

    The fixed half-way point put the neck inside a round head sitting on a body (14 px above the junction in the
    README preview), so a nod turned the head about a point inside it and its chin swept through the collar."""
    d = np.asarray(depth, dtype=np.float64)
    if len(d) < 3:
        return None
    before = np.maximum.accumulate(d)
    after = np.maximum.accumulate(d[::-1])[::-1]
    outer = np.minimum(before, after)
    dip = outer - d
    ok = (dip >= 1.0) & (d <= _NECK_PINCH * outer)
    if not ok.any():
        return None
    k = int(np.argmax(np.where(ok, dip, -np.inf)))
    # a neck of even width (or the flat bottom of a pinch between two round parts): the middle of the stretch
    # within a quarter of a grid pixel of its least half-width
    a = b = k
    while a > 0 and ok[a - 1] and d[a - 1] <= d[k] + 0.25:
        a -= 1
    while b + 1 < len(d) and ok[b + 1] and d[b + 1] <= d[k] + 0.25:
        b += 1
    return (a + b) // 2
