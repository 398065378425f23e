"""Motion for puppets: joint positions per frame for each character's skeleton.

Three sources, one interface (``motion.poses(skeleton, n_frames, fps, character=i) -> [F, J, 2]``):

* :class:`RetargetMotion`: a reference animation (a ``POSE_KEYPOINT`` sequence, e.g. DWPose run on a driving
  video, or a BVH file projected to 2-D) retargeted by **bone angles**: every character bone whose two joints are
  named in the reference takes the reference bone's direction (``mode="absolute"``, as Animated Drawings does) or
  its rest direction turned by the reference bone's change since the first frame that shows it
  (``mode="relative"``); bones the reference lacks keep their angle relative to their parent bone. Joint positions are rebuilt from the root with the
  character's **own bone lengths**, so the drawing keeps its proportions. The root follows the reference's
  translation scaled to the character's size, measured from the first frame that shows the anchor (the root's
  joint, else the neck) and held through frames that lack it.
* :class:`KeyframeMotion`: handle positions keyed by the user at some frames, interpolated (linear or smooth);
  unkeyed joints stay at rest.
* :class:`PresetMotion`: named procedural loops for users with no reference: ``idle-sway``, ``wave``,
  ``bounce``, ``breathe``, ``nod``. Every preset starts and ends at the rest pose (frame 0 is the input picture)
  and fits a whole number of cycles into the clip, so clips loop.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from .bvh import BVH, load_bvh, project_bvh
from .skeleton import AUTO_JOINTS, OPENPOSE_JOINTS, Skeleton, auto_joint_name, load_json, parse_pose_keypoint

__all__ = [
    "PRESETS",
    "RETARGET_MODES",
    "KeyframeMotion",
    "PresetMotion",
    "RetargetMotion",
    "bone_angles",
    "fk_from_angles",
    "parse_keyframes",
    "pose_tracks",
]

PRESETS: tuple[str, ...] = ("idle-sway", "wave", "bounce", "breathe", "nod")
#: how :class:`RetargetMotion` copies the reference: bone directions (``absolute``) or their changes since frame 0
RETARGET_MODES: tuple[str, ...] = ("absolute", "relative")
#: default period of one cycle in seconds
PRESET_PERIODS = {"idle-sway": 3.0, "wave": 0.5, "bounce": 0.8, "breathe": 4.0, "nod": 1.5}


def _wrap(a):
    return (np.asarray(a) + math.pi) % (2 * math.pi) - math.pi


def bone_angles(skeleton: Skeleton, joints: np.ndarray | None = None) -> np.ndarray:
    """Global angle (radians, image coordinates) of the bone ending at each joint; ``nan`` for the root."""
    p = skeleton.joints if joints is None else np.asarray(joints, dtype=np.float64)
    out = np.full(len(skeleton.names), np.nan)
    for a, c in skeleton.bones:
        d = p[c] - p[a]
        out[c] = math.atan2(d[1], d[0])
    return out


def fk_from_angles(skeleton: Skeleton, angles: np.ndarray, root: np.ndarray) -> np.ndarray:
    """Joint positions from the root position and the global angle of every bone, with the rest bone lengths."""
    rest = skeleton.joints
    out = np.zeros_like(rest)
    out[skeleton.root] = root
    for a, c in skeleton.bones:
        length = float(np.hypot(*(rest[c] - rest[a])))
        out[c] = out[a] + length * np.array([math.cos(angles[c]), math.sin(angles[c])])
    return out


# ------------------------------------------------------------------------------------------------ reference
def _resample(points: np.ndarray, src_fps: float, fps: float, n_frames: int) -> np.ndarray:
    """Linear resampling in time of ``[F, J, 2]`` (nan = missing) to ``n_frames`` at ``fps``: the last reference
    frame is held for its frame time, then (a clip longer than the reference) the reference starts again."""
    f = points.shape[0]
    if f == 1:
        return np.repeat(points, n_frames, 0)
    t = np.arange(n_frames) / fps * src_fps
    t = t % f
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, f - 1)  # never blended back towards the first frame
    w = (t - i0)[:, None, None]
    a, b = points[i0], points[i1]
    out = a * (1 - w) + b * w
    out = np.where(np.isnan(a), b, np.where(np.isnan(b), a, out))
    return out


@dataclasses.dataclass
class RetargetMotion:
    """A 2-D reference animation: OpenPose joint ``names`` and ``points [F, J, 2]`` (nan = missing that frame).

    Attributes:
        names, points: the reference.
        fps: frame rate of the reference (None: the clip's fps, frame for frame).
        mode: ``"absolute"`` (copy bone directions) or ``"relative"`` (copy changes of direction since frame 0).
        follow_root: move the character's root with the reference's translation (scaled to the character).
    """

    names: list[str]
    points: np.ndarray
    fps: float | None = None
    mode: str = "absolute"
    follow_root: bool = True

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64)
        if self.points.ndim != 3 or self.points.shape[1:] != (len(self.names), 2) or self.points.shape[0] < 1:
            raise ValueError(f"reference points must be [F, {len(self.names)}, 2] with F >= 1, got {self.points.shape}")
        if self.mode not in RETARGET_MODES:
            raise ValueError(f"retarget mode must be one of {RETARGET_MODES}, got {self.mode!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"reference fps must be a finite number > 0, got {self.fps}")

    @property
    def n_frames(self) -> int:
        return int(self.points.shape[0])

    def default_frames(self, fps: float) -> int:
        if self.fps is None:
            return self.n_frames
        n = self.n_frames / self.fps * fps
        if not math.isfinite(n):  # a reference at 1e-308 fps (a BVH Frame Time of 1e308 s)
            raise ValueError(f"the reference motion ({self.n_frames} frames at {self.fps:g} fps) lasts too long to "
                             f"render at {fps:g} fps")
        return max(1, round(n))

    @classmethod
    def from_bvh(cls, source: BVH | str, *, yaw: float = 0.0, up: str = "y", **kwargs) -> RetargetMotion:
        bvh = source if isinstance(source, BVH) else load_bvh(source)
        names, points = project_bvh(bvh, yaw=yaw, up=up)
        return cls(names=names, points=points, fps=bvh.fps, **kwargs)

    @classmethod
    def from_pose_keypoint(cls, data, *, canvas: tuple[int, int] | None = None, coords: str = "auto",
                           fps: float | None = None, **kwargs) -> list[RetargetMotion]:
        """One motion per person track of a ``POSE_KEYPOINT`` sequence (see :func:`pose_tracks`), in the poses'
        canvas pixels (``canvas`` ``(H, W)`` stands in for frames without a canvas size)."""
        frames = parse_pose_keypoint(data, coords=coords, default_canvas=canvas)
        return [cls(names=names, points=pts, fps=fps, **kwargs) for names, pts in pose_tracks(frames)]

    def poses(self, skeleton: Skeleton, n_frames: int, fps: float, character: int = 0) -> np.ndarray:
        ref = _resample(self.points, self.fps or fps, fps, n_frames)
        index = {n: i for i, n in enumerate(self.names)}
        rest_angles = bone_angles(skeleton)
        mapped = {c: (index[skeleton.names[a]], index[skeleton.names[c]]) for a, c in skeleton.bones
                  if skeleton.names[a] in index and skeleton.names[c] in index}
        def first_present(track: np.ndarray) -> np.ndarray:
            """The first frame's value of a ``[F,2]`` track where it is known (NaN when never)."""
            ok = ~np.isnan(track).any(1)
            return track[int(np.argmax(ok))] if ok.any() else np.full(2, np.nan)

        # scale: character size over reference size, from the bones both have (first frame where present)
        char_len, ref_len = 0.0, 0.0
        for c, (ra, rc) in mapped.items():
            seg = self.points[:, rc] - self.points[:, ra]
            ok = ~np.isnan(seg).any(1)
            if ok.any():
                char_len += float(np.hypot(*(skeleton.joints[c] - skeleton.joints[skeleton.parents[c]])))
                ref_len += float(np.hypot(*seg[np.argmax(ok)]))
        scale = char_len / ref_len if ref_len > 0 else 1.0
        root = skeleton.root
        anchor_name = skeleton.names[root] if skeleton.names[root] in index else ("neck" if "neck" in index else None)
        # the translation is measured from the first frame that shows the anchor (a reference whose neck is missing
        # in frame 0 used to leave the character's root still for the whole clip)
        with warnings.catch_warnings():  # nanmean of a frame without any point: NaN, no RuntimeWarning
            warnings.simplefilter("ignore", RuntimeWarning)
            anchor = ref[:, index[anchor_name]] if anchor_name is not None else np.nanmean(ref, axis=1)
            anchor0 = first_present(self.points[:, index[anchor_name]] if anchor_name is not None
                                    else np.nanmean(self.points, axis=1))
        # per mapped bone, its reference direction in the first frame that shows it ("relative" mode)
        first_dir = {c: first_present(self.points[:, rc] - self.points[:, ra]) for c, (ra, rc) in mapped.items()}
        out = np.zeros((n_frames, len(skeleton.names), 2))
        # each bone's angle relative to its parent bone (root children: their global angle), updated while mapped
        held_local = {c: rest_angles[c] - (rest_angles[a] if a != root else 0.0) for a, c in skeleton.bones}
        offset = np.zeros(2)  # held through frames that lack the anchor, as the angles are
        for f in range(n_frames):
            angles = np.full(len(skeleton.names), np.nan)
            for a, c in skeleton.bones:
                parent_angle = angles[a] if a != root else None
                ang = None
                if c in mapped:
                    ra, rc = mapped[c]
                    d = ref[f, rc] - ref[f, ra]
                    if not np.isnan(d).any() and np.hypot(*d) > 1e-9:
                        ang = math.atan2(d[1], d[0])
                        if self.mode == "relative":
                            d0 = first_dir[c]
                            ang = rest_angles[c] + (ang - math.atan2(d0[1], d0[0])) if not np.isnan(d0).any() else None
                if ang is None:  # unmapped or missing: keep the last local angle (rest at first)
                    ang = held_local[c] + (parent_angle if parent_angle is not None else 0.0)
                else:
                    held_local[c] = ang - (parent_angle if parent_angle is not None else 0.0)
                angles[c] = ang
            if self.follow_root:
                delta = anchor[f] - anchor0
                if not np.isnan(delta).any():
                    offset = delta * scale
            out[f] = fk_from_angles(skeleton, angles, skeleton.joints[root] + offset)
        return out


def pose_tracks(frames: Sequence[Sequence]) -> list[tuple[list[str], np.ndarray]]:
    """Person tracks through a parsed POSE_KEYPOINT sequence (:func:`parse_pose_keypoint` output).

    The people of the first frame that has any start the tracks (sorted left to right by their mean x); each later
    frame's people are assigned to tracks by the distance of their mean positions (Hungarian). Returns
    ``(names, points [F, 18, 2])`` per track with nan for missing joints/frames.
    """
    from scipy.optimize import linear_sum_assignment

    from .skeleton import OPENPOSE_JOINTS

    names = list(OPENPOSE_JOINTS)
    start = next((i for i, people in enumerate(frames) if people), None)
    if start is None:
        raise ValueError("the pose sequence holds no person with any joint")

    def centre(p):
        return np.mean(np.array(list(p.points.values())), axis=0)

    first = sorted(frames[start], key=lambda p: centre(p)[0])
    tracks = np.full((len(first), len(frames), len(names), 2), np.nan)
    last = [centre(p) for p in first]
    for f, people in enumerate(frames):
        if not people:
            continue
        if f == start:
            assign = dict(enumerate(range(len(first))))
            ordered = first
        else:
            ordered = list(people)
            cost = np.array([[np.hypot(*(centre(p) - last[t])) for p in ordered] for t in range(len(first))])
            rows, cols = linear_sum_assignment(cost)
            assign = {int(c): int(r) for r, c in zip(rows, cols)}
        for pi, person in enumerate(ordered):
            t = assign.get(pi)
            if t is None:
                continue
            for name, xy in person.points.items():
                tracks[t, f, names.index(name)] = xy
            last[t] = centre(person)
    # frames before the first person: hold the first pose
    tracks[:, :start] = tracks[:, start : start + 1]
    return [(names, tr) for tr in tracks]


# ------------------------------------------------------------------------------------------------ keyframes
def parse_keyframes(data) -> tuple[dict[int, dict[str, list[tuple[float, np.ndarray]]]], str]:
    """Keyframes JSON -> ``({instance: {joint: [(frame, xy), ...]}}, interpolation)``.

    Layout::

        {"interpolation": "smooth",            # or "linear" (default smooth)
         "fps": 12,                            # optional: the rate the "frame" keys count at (needed for "time")
         "keyframes": [
            {"frame": 0,  "joints": {"0": {"r_wrist": [90, 150]}}},
            {"frame": 12, "joints": {"0": {"r_wrist": [70, 60], "l_wrist": [210, 70]}}},
            {"time": 2.0, "joints": {"1": {"nose": [400, 90]}}}
         ]}

    Keys of ``joints`` are instance indices (as strings, JSON's only key type), values map joint names to image
    pixels. The returned frames count at the document's ``fps`` (``"time"`` keys are seconds times it); without
    ``fps`` they are the clip's own frames. :class:`KeyframeMotion` plays a document with ``fps`` in real time at
    any clip fps.
    """
    doc = load_json(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("keyframes"), list):
        raise ValueError("keyframes JSON must be {'keyframes': [{'frame': f, 'joints': {'0': {'name': [x, y]}}}]}")
    interp = doc.get("interpolation", "smooth")
    if interp not in ("linear", "smooth"):
        raise ValueError(f"keyframes 'interpolation' must be 'linear' or 'smooth', got {interp!r}")
    fps = _document_fps(doc)
    out: dict[int, dict[str, list[tuple[float, np.ndarray]]]] = {}
    for ki, key in enumerate(doc["keyframes"]):
        if not isinstance(key, dict) or not isinstance(key.get("joints"), dict):
            raise ValueError(f"keyframe {ki} needs a 'joints' object")
        if "frame" in key:
            frame = key["frame"]
        elif "time" in key:
            if not fps:
                raise ValueError(f"keyframe {ki} gives 'time' but the document has no 'fps'")
            frame = float(key["time"]) * float(fps)
        else:
            raise ValueError(f"keyframe {ki} needs 'frame' or 'time'")
        if isinstance(frame, bool) or not isinstance(frame, (int, float)) or not math.isfinite(frame) or frame < 0:
            raise ValueError(f"keyframe {ki}: frame must be a number >= 0, got {frame!r}")
        for inst, joints in key["joints"].items():
            try:
                inst_i = int(inst)
            except ValueError:
                raise ValueError(f"keyframe {ki}: instance key {inst!r} is not an integer") from None
            if not isinstance(joints, dict):
                raise ValueError(f"keyframe {ki}: instance {inst} must map joint names to [x, y]")
            for name, xy in joints.items():
                try:
                    if isinstance(xy, (str, bytes)):  # "12" would read as [1, 2]
                        raise TypeError
                    p = np.array([float(v) for v in xy])
                except (TypeError, ValueError):
                    raise ValueError(f"keyframe {ki}: joint {name!r} needs [x, y], got {xy!r}") from None
                if p.shape != (2,) or not np.isfinite(p).all():
                    raise ValueError(f"keyframe {ki}: joint {name!r} needs finite [x, y], got {xy!r}")
                out.setdefault(inst_i, {}).setdefault(str(name), []).append((float(frame), p))
    for joints in out.values():
        for name in joints:
            joints[name].sort(key=lambda k: k[0])
    return out, interp


def _document_fps(doc: dict) -> float | None:
    fps = doc.get("fps")
    if fps is None:
        return None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"keyframes 'fps' must be a number > 0, got {fps!r}")
    return float(fps)


@dataclasses.dataclass
class KeyframeMotion:
    """Handle positions keyed over time (see :func:`parse_keyframes`); unknown joint names raise ValueError.

    Attributes:
        keys, interpolation: as :func:`parse_keyframes` returns them.
        fps: the rate the keys' frames count at (the document's ``"fps"``): the keys then play in real time at any
            clip fps. None: the keys are clip frames.
    """

    keys: dict[int, dict[str, list[tuple[float, np.ndarray]]]]
    interpolation: str = "smooth"
    fps: float | None = None

    @classmethod
    def from_json(cls, data) -> KeyframeMotion:
        doc = load_json(data)
        keys, interp = parse_keyframes(doc)
        return cls(keys=keys, interpolation=interp, fps=_document_fps(doc))

    def check_joints(self, handles: Mapping[int, Skeleton] | None = None, *, pose_rig: bool = False) -> None:
        """ValueError naming a keyed joint that no skeleton of its instance can have, before anything is rigged
        (rigging is the slow step; :meth:`poses` checks the rigged skeletons exactly).

        Args:
            handles: the handles' skeletons by instance (:func:`~cartoonseg.puppet.skeleton.parse_handles`): those
                instances have exactly those joints.
            pose_rig: a ``POSE_KEYPOINT`` rig is given: the other instances may have OpenPose joints
                (:data:`~cartoonseg.puppet.skeleton.OPENPOSE_JOINTS`) or, where it has no person for them, the
                automatic skeleton's (:data:`~cartoonseg.puppet.skeleton.AUTO_JOINTS`, ``joint1``, ...).
        """
        handles = handles or {}
        for inst, joints in sorted(self.keys.items()):
            sk = handles.get(inst)
            for name in joints:
                if sk is not None:
                    if name not in sk.names:
                        raise ValueError(f"keyframes name joint {name!r} for instance {inst}, whose handles define "
                                         f"the joints {', '.join(sk.names)}")
                elif not (auto_joint_name(name) or (pose_rig and name in OPENPOSE_JOINTS)):
                    allowed = ", ".join(sorted(set(AUTO_JOINTS) | (set(OPENPOSE_JOINTS) if pose_rig else set()),
                                               key=(AUTO_JOINTS + OPENPOSE_JOINTS).index))
                    rig = "the pose rig's or the automatic skeleton's" if pose_rig else "the automatic skeleton's"
                    raise ValueError(f"keyframes name joint {name!r} for instance {inst}, but {rig} joints are "
                                     f"{allowed} (and joint1, joint2, ... on extra branches); handles JSON can "
                                     "name joints of its own")

    def _scale(self, fps: float) -> float:
        """Key frames per clip frame."""
        return 1.0 if self.fps is None else self.fps / float(fps)

    def default_frames(self, fps: float) -> int:
        last = max((k[-1][0] for joints in self.keys.values() for k in joints.values()), default=0.0)
        n = last / self._scale(fps)
        if not math.isfinite(n):  # a last key at 1e10 frames of a document at 1e-300 fps
            raise ValueError(f"the keyframes (last at frame {last:g} of {self.fps:g} fps) last too long to render "
                             f"at {fps:g} fps")
        return int(math.floor(n + 1e-9)) + 1

    def poses(self, skeleton: Skeleton, n_frames: int, fps: float, character: int = 0) -> np.ndarray:
        out = np.repeat(skeleton.joints[None], n_frames, 0).copy()
        joints = self.keys.get(character, {})
        frames = np.arange(n_frames, dtype=np.float64) * self._scale(fps)  # in the keys' frames
        for name, keys in joints.items():
            j = skeleton.index(name)
            if j is None:
                raise ValueError(f"keyframes name joint {name!r} for instance {character}, whose skeleton has "
                                 f"{skeleton.names}")
            times = np.array([k[0] for k in keys])
            values = np.stack([k[1] for k in keys])
            if times[0] > 0:  # start from rest
                times = np.concatenate([[0.0], times])
                values = np.concatenate([skeleton.joints[j][None], values])
            seg = np.clip(np.searchsorted(times, frames, side="right") - 1, 0, len(times) - 1)
            nxt = np.minimum(seg + 1, len(times) - 1)
            span = np.where(nxt > seg, times[nxt] - times[seg], 1.0)
            u = np.clip((frames - times[seg]) / span, 0.0, 1.0)
            if self.interpolation == "smooth":
                u = u * u * (3 - 2 * u)
            out[:, j] = values[seg] * (1 - u[:, None]) + values[nxt] * u[:, None]
        return out


# ------------------------------------------------------------------------------------------------ presets
def _rotate_about(points: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = points - pivot
    return pivot + np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1)


def _fk_turns(skeleton: Skeleton, turns: dict[int, float]) -> np.ndarray:
    """Rest pose with bone ``c`` (and everything below it) turned by ``turns[c]`` radians about its parent joint."""
    rest = skeleton.joints
    out = rest.copy()
    acc = np.zeros(len(rest))
    for a, c in skeleton.bones:
        acc[c] = acc[a] + turns.get(c, 0.0)
        out[c] = out[a] + _rotate_about((rest[c] - rest[a])[None], np.zeros(2), acc[c])[0]
    return out


def _arm(skeleton: Skeleton, side: str) -> list[int]:
    names = [f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"]
    return [j for j in (skeleton.index(n) for n in names) if j is not None]


@dataclasses.dataclass
class PresetMotion:
    """A named procedural loop (:data:`PRESETS`).

    Attributes:
        name: ``idle-sway`` (rock about the feet, 3 degrees), ``wave`` (raise the character's right arm - the
            image's left - or else the left one, wave the forearm, lower it), ``bounce`` (hops of 6 % of the height
            with a stretch at the top), ``breathe`` (2.5 % vertical swell about the feet), ``nod`` (head 8 degrees
            about the neck).
        strength: amplitude multiplier.
        period: seconds per cycle (None: the preset's default); the cycle count is rounded so the clip loops.
        seed: varies amplitude (x0.85 - 1.15) and direction per character, so characters do not move in lockstep.
        base: pivot for sway / breathe / bounce per character (None: the bottom centre of the rest skeleton's
            extent, overridden by :class:`~cartoonseg.puppet.rig.PuppetRig` with the mesh's lowest point).
    """

    name: str = "idle-sway"
    strength: float = 1.0
    period: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in PRESETS:
            raise ValueError(f"unknown motion preset {self.name!r}; allowed: {', '.join(PRESETS)}")
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"strength must be finite and >= 0, got {self.strength}")
        if self.period is not None and not self.period > 0:
            raise ValueError(f"period must be > 0 seconds, got {self.period}")
        if not 0 <= int(self.seed) < 2**63:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed}")

    def default_frames(self, fps: float) -> int:
        return max(2, round((max(PRESET_PERIODS[self.name], 2.0) if self.name != "wave" else 3.0) * fps))

    def poses(self, skeleton: Skeleton, n_frames: int, fps: float, character: int = 0,
              base: np.ndarray | None = None, height: float | None = None) -> np.ndarray:
        rest = skeleton.joints
        rng = np.random.default_rng([int(self.seed), int(character)])
        amp = self.strength * (rng.uniform(0.85, 1.15) if self.seed else 1.0)
        sign = (1.0 if rng.random() < 0.5 else -1.0) if self.seed else 1.0
        if base is None:
            base = np.array([rest[:, 0].mean(), rest[:, 1].max()])
        if height is None:
            height = float(np.ptp(rest[:, 1])) or 1.0
        period = self.period or PRESET_PERIODS[self.name]
        duration = n_frames / fps
        cycles = max(1, round(duration / period))
        out = np.zeros((n_frames, len(rest), 2))
        for f in range(n_frames):
            u = f / n_frames
            phase = 2 * math.pi * cycles * u
            if self.name == "idle-sway":
                out[f] = _rotate_about(rest, base, sign * amp * math.radians(3.0) * math.sin(phase))
            elif self.name == "breathe":
                s = 0.025 * amp * (1 - math.cos(phase)) / 2
                out[f] = base + (rest - base) * np.array([1 - 0.4 * s, 1 + s])
            elif self.name == "bounce":
                hop = abs(math.sin(phase / 2)) if cycles else 0.0
                stretched = base + (rest - base) * np.array([1 - 0.015 * amp * hop, 1 + 0.03 * amp * hop])
                out[f] = stretched - np.array([0.0, 0.06 * amp * height * hop])
            elif self.name == "nod":
                out[f] = self._nod(skeleton, sign * amp * math.radians(8.0) * math.sin(phase))
            else:
                out[f] = self._wave(skeleton, u, phase, amp, base)
        return out

    def _nod(self, skeleton: Skeleton, angle: float) -> np.ndarray:
        head = skeleton.head  # no named head: the leaf highest in the picture
        if head is None:
            return skeleton.joints.copy()
        return _fk_turns(skeleton, {head: angle})

    def _wave(self, skeleton: Skeleton, u: float, phase: float, amp: float, base: np.ndarray) -> np.ndarray:
        arm = _arm(skeleton, "r") or _arm(skeleton, "l")
        rest = skeleton.joints
        if len(arm) < 2:  # no arm: wave the most sideways limb tip, else rock
            leaves = [j for j, kids in enumerate(skeleton.children) if not kids and skeleton.parents[j] >= 0]
            if not leaves:
                return _rotate_about(rest, base, amp * math.radians(3.0) * math.sin(phase))
            centre = rest[skeleton.root]
            tip = max(leaves, key=lambda j: abs(rest[j, 0] - centre[0]) - 0.5 * (rest[j, 1] - centre[1]))
            arm = [skeleton.parents[tip], tip]
        ramp = 0.2
        env = _smoothstep(min(1.0, u / ramp)) * _smoothstep(min(1.0, (1 - u) / ramp))
        outward = -1.0 if rest[arm[-1], 0] < rest[skeleton.root, 0] else 1.0
        turns: dict[int, float] = {}
        up_out = math.atan2(-0.8, 0.6 * outward)  # upper arm: up and outwards
        d = rest[arm[1]] - rest[arm[0]]
        raise_angle = float(_wrap(up_out - math.atan2(d[1], d[0])))
        turns[arm[1]] = env * raise_angle * min(1.0, amp)
        if len(arm) >= 3:
            fore_up = math.atan2(-1.0, 0.15 * outward)
            d2 = rest[arm[2]] - rest[arm[1]]
            bend = float(_wrap(fore_up - (math.atan2(d2[1], d2[0]) + turns[arm[1]])))
            turns[arm[2]] = env * (bend * min(1.0, amp) + amp * math.radians(25.0) * math.sin(phase))
        else:
            turns[arm[1]] += env * amp * math.radians(20.0) * math.sin(phase)
        return _fk_turns(skeleton, turns)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)
