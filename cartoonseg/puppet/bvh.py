"""BVH motion capture files: a parser, forward kinematics, and the orthographic projection that turns a 3-D motion
into 2-D reference poses for retargeting (Animated Drawings retargets BVH the same way: project onto a plane, then
copy bone angles).

The format (Biovision hierarchy): ``HIERARCHY`` with one ``ROOT`` and nested ``JOINT`` / ``End Site`` blocks, each
with an ``OFFSET x y z`` and (not End Sites) ``CHANNELS n`` naming position/rotation channels in the order they
appear in the motion rows; then ``MOTION``, ``Frames: N``, ``Frame Time: dt`` and N rows of numbers. Rotations are
in degrees and compose in the listed order (``Zrotation Xrotation Yrotation`` means ``R = Rz Rx Ry``, applied to
the child's column vectors); a joint's global transform is its parent's times ``T(offset + position) R``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

__all__ = ["BVH", "BVH_TO_OPENPOSE", "BVHJoint", "load_bvh", "parse_bvh", "project_bvh"]

_CHANNELS = {"Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation"}

#: common BVH joint names (CMU, Mixamo, Animated Drawings' examples, Truebones) -> OpenPose names; the first name
#: present in a file wins
BVH_TO_OPENPOSE: dict[str, tuple[str, ...]] = {
    "neck": ("Neck", "Neck1", "neck", "mixamorig:Neck", "Spine3", "Chest"),
    "nose": ("Head", "head", "mixamorig:Head", "HeadTop_End", "Head_end"),
    "r_shoulder": ("RightArm", "RightUpArm", "rShldr", "mixamorig:RightArm", "RightShoulder"),
    "r_elbow": ("RightForeArm", "RightLowArm", "rForeArm", "mixamorig:RightForeArm"),
    "r_wrist": ("RightHand", "rHand", "mixamorig:RightHand", "RightWrist"),
    "l_shoulder": ("LeftArm", "LeftUpArm", "lShldr", "mixamorig:LeftArm", "LeftShoulder"),
    "l_elbow": ("LeftForeArm", "LeftLowArm", "lForeArm", "mixamorig:LeftForeArm"),
    "l_wrist": ("LeftHand", "lHand", "mixamorig:LeftHand", "LeftWrist"),
    "r_hip": ("RightUpLeg", "RightHip", "rThigh", "mixamorig:RightUpLeg"),
    "r_knee": ("RightLeg", "RightKnee", "rShin", "mixamorig:RightLeg", "RightLowLeg"),
    "r_ankle": ("RightFoot", "RightAnkle", "rFoot", "mixamorig:RightFoot"),
    "l_hip": ("LeftUpLeg", "LeftHip", "lThigh", "mixamorig:LeftUpLeg"),
    "l_knee": ("LeftLeg", "LeftKnee", "lShin", "mixamorig:LeftLeg", "LeftLowLeg"),
    "l_ankle": ("LeftFoot", "LeftAnkle", "lFoot", "mixamorig:LeftFoot"),
}


@dataclasses.dataclass
class BVHJoint:
    name: str
    parent: int
    offset: np.ndarray
    channels: list[str]
    channel_start: int


@dataclasses.dataclass
class BVH:
    """A parsed BVH file: joints (End Sites included, named ``<parent>_End``), ``motion [F, channels]`` and the
    frame time in seconds."""

    joints: list[BVHJoint]
    motion: np.ndarray
    frame_time: float

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def n_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def positions(self) -> np.ndarray:
        """World positions of every joint in every frame, ``[F, J, 3]`` (forward kinematics)."""
        f = self.n_frames
        out = np.zeros((f, len(self.joints), 3))
        rot = np.zeros((f, len(self.joints), 3, 3))
        for ji, joint in enumerate(self.joints):
            local_t = np.broadcast_to(joint.offset, (f, 3)).copy()
            local_r = np.broadcast_to(np.eye(3), (f, 3, 3)).copy()
            for k, ch in enumerate(joint.channels):
                values = self.motion[:, joint.channel_start + k]
                axis = ch[0]
                if ch.endswith("position"):
                    local_t[:, "XYZ".index(axis)] += values
                else:
                    local_r = local_r @ _rotation(axis, np.radians(values))
            if joint.parent < 0:
                out[:, ji] = local_t
                rot[:, ji] = local_r
            else:
                pr = rot[:, joint.parent]
                out[:, ji] = out[:, joint.parent] + np.einsum("fij,fj->fi", pr, local_t)
                rot[:, ji] = pr @ local_r
        return out


def _rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(angle), np.ones_like(angle)
    if axis == "X":
        m = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "Y":
        m = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        m = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.moveaxis(np.array(m), (0, 1), (-2, -1))


def parse_bvh(text: str) -> BVH:
    """Parse BVH text. Raises ValueError naming the line for malformed input."""
    if not isinstance(text, str):
        raise TypeError(f"BVH text must be str, got {type(text).__name__}")
    tokens: list[tuple[str, int]] = []
    lines = text.splitlines()
    motion_line = None
    for ln, line in enumerate(lines, 1):
        if line.strip().upper() == "MOTION":
            motion_line = ln
            break
        tokens.extend((t, ln) for t in line.replace("{", " { ").replace("}", " } ").split())
    if not tokens or tokens[0][0].upper() != "HIERARCHY":
        raise ValueError("not a BVH file: it must start with HIERARCHY")
    if motion_line is None:
        raise ValueError("BVH has no MOTION section")
    pos = 1
    joints: list[BVHJoint] = []
    n_channels = 0

    def expect(word: str) -> int:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"BVH ended early: expected {word!r}")
        tok, ln = tokens[pos]
        if tok.upper() != word.upper():
            raise ValueError(f"BVH line {ln}: expected {word!r}, got {tok!r}")
        pos += 1
        return ln

    def number() -> float:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("BVH ended early: expected a number")
        tok, ln = tokens[pos]
        try:
            value = float(tok)
        except ValueError:
            raise ValueError(f"BVH line {ln}: expected a number, got {tok!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"BVH line {ln}: non-finite number {tok!r}")
        pos += 1
        return value

    def block(name: str, parent: int, end_site: bool) -> None:
        nonlocal pos, n_channels
        expect("{")
        expect("OFFSET")
        offset = np.array([number(), number(), number()])
        channels: list[str] = []
        if not end_site:
            ln = expect("CHANNELS")
            count = number()
            if count != int(count) or int(count) not in (0, 3, 6):
                raise ValueError(f"BVH line {ln}: CHANNELS count must be 0, 3 or 6, got {count}")
            for _ in range(int(count)):
                if pos >= len(tokens):
                    raise ValueError("BVH ended early inside CHANNELS")
                ch, cln = tokens[pos]
                if ch not in _CHANNELS:
                    raise ValueError(f"BVH line {cln}: unknown channel {ch!r}")
                channels.append(ch)
                pos += 1
        index = len(joints)
        joints.append(BVHJoint(name, parent, offset, channels, n_channels))
        n_channels += len(channels)
        while pos < len(tokens) and tokens[pos][0] != "}":
            tok, ln = tokens[pos]
            word = tok.upper()
            if word == "JOINT":
                if end_site:
                    raise ValueError(f"BVH line {ln}: an End Site cannot have children")
                if pos + 1 >= len(tokens):
                    raise ValueError(f"BVH line {ln}: JOINT without a name")
                child = tokens[pos + 1][0]
                pos += 2
                block(child, index, False)
            elif word == "END":
                pos += 1
                expect("Site")
                block(f"{name}_End", index, True)
            else:
                raise ValueError(f"BVH line {ln}: unexpected {tok!r} in joint {name!r}")
        expect("}")

    if pos >= len(tokens) or tokens[pos][0].upper() != "ROOT":
        raise ValueError(f"BVH line {tokens[min(pos, len(tokens) - 1)][1]}: expected ROOT")
    if pos + 1 >= len(tokens):
        raise ValueError("BVH ROOT without a name")
    root_name = tokens[pos + 1][0]
    pos += 2
    block(root_name, -1, False)
    if pos != len(tokens):
        raise ValueError(f"BVH line {tokens[pos][1]}: unexpected {tokens[pos][0]!r} after the hierarchy")
    names = [j.name for j in joints]
    if len(set(names)) != len(names):
        raise ValueError("BVH joint names must be unique")

    rest = [ln.strip() for ln in lines[motion_line:]]
    rest_ln = list(range(motion_line + 1, len(lines) + 1))
    body = [(s, ln) for s, ln in zip(rest, rest_ln) if s]
    if len(body) < 2 or not body[0][0].lower().startswith("frames:") or not body[1][0].lower().startswith("frame time:"):
        raise ValueError(f"BVH line {motion_line + 1}: MOTION must be followed by 'Frames: N' and 'Frame Time: dt'")
    try:
        n_frames = int(body[0][0].split(":", 1)[1])
        frame_time = float(body[1][0].split(":", 1)[1])
    except ValueError:
        raise ValueError(f"BVH line {body[0][1]}: bad Frames / Frame Time values") from None
    if n_frames < 1 or not (frame_time > 0 and math.isfinite(frame_time)):
        raise ValueError(f"BVH: need Frames >= 1 and Frame Time > 0, got {n_frames} and {frame_time}")
    rows = body[2:]
    if len(rows) < n_frames:
        raise ValueError(f"BVH declares {n_frames} frames but has {len(rows)} motion rows")
    motion = np.zeros((n_frames, n_channels))
    for f, (row, ln) in enumerate(rows[:n_frames]):
        try:
            values = [float(v) for v in row.split()]
        except ValueError:
            raise ValueError(f"BVH line {ln}: motion row is not numeric") from None
        if len(values) != n_channels:
            raise ValueError(f"BVH line {ln}: {len(values)} values, the hierarchy has {n_channels} channels")
        motion[f] = values
    if not np.isfinite(motion).all():
        raise ValueError("BVH motion holds non-finite values")
    return BVH(joints=joints, motion=motion, frame_time=frame_time)


def load_bvh(path) -> BVH:
    """Read and parse a ``.bvh`` file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"BVH file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read BVH file {p}: {exc}") from exc
    if "\x00" in text:
        raise ValueError(f"{p} is not a BVH file (expected BVH text, found binary data)")
    try:
        return parse_bvh(text)
    except ValueError as exc:
        raise ValueError(f"{p} is not a valid BVH file: {exc}") from exc


def project_bvh(bvh: BVH, *, yaw: float = 0.0, up: str = "y") -> tuple[list[str], np.ndarray]:
    """Orthographic front view of a BVH motion, mapped to OpenPose joint names.

    The performer's up axis (``up``) becomes the image's up (y down on screen); the view looks along the
    performer's forward axis after turning the motion by ``yaw`` degrees about the up axis (0: BVH +Z faces the
    viewer, so the performer's left hand is on the image's right, as OpenPose sees a person facing the camera).

    Returns:
        ``(names, points [F, J, 2])`` with the OpenPose names found in the file (see :data:`BVH_TO_OPENPOSE`; a
        ``neck`` is synthesised between the shoulders when the file has no neck joint) in BVH units, y down.
    """
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    if not math.isfinite(yaw):
        raise ValueError(f"yaw must be a finite number of degrees, got {yaw}")
    world = bvh.positions()
    if not np.isfinite(world).all():  # the parser took finite numbers; their sums overflowed
        frame = int(np.nonzero(~np.isfinite(world).all((1, 2)))[0][0])
        raise ValueError(f"BVH joint positions overflow in frame {frame} (offsets or positions too large)")
    if up == "z":
        world = world[..., [0, 2, 1]] * np.array([1, 1, -1])
    a = math.radians(yaw)
    rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    world = world @ rot.T
    screen = np.stack([world[..., 0], -world[..., 1]], -1)
    index = {n: i for i, n in enumerate(bvh.names)}
    names, cols = [], []
    for op_name, candidates in BVH_TO_OPENPOSE.items():
        hit = next((index[c] for c in candidates if c in index), None)
        if hit is not None:
            names.append(op_name)
            cols.append(screen[:, hit])
    if "neck" not in names and {"r_shoulder", "l_shoulder"} <= set(names):
        names.insert(0, "neck")
        cols.insert(0, (cols[names.index("r_shoulder") - 1] + cols[names.index("l_shoulder") - 1]) / 2)
    if len(names) < 2:
        raise ValueError(f"BVH joints {bvh.names[:12]}... match fewer than two OpenPose joints; "
                         "name them like Mixamo/CMU (Hips, Neck, Head, LeftArm, LeftForeArm, LeftHand, ...)")
    return names, np.stack(cols, 1)
