"""Static checks of every shipped ComfyUI workflow (``workflows/*.json``, UI format) against the pack's node
definitions, without a ComfyUI install: node types exist, ``widgets_values`` have exactly the widget slots the
classic frontend creates (seed "control_after_generate" slots and LoadImage's upload button included), widget
values are allowed, links connect matching types to declared inputs, required inputs are connected, output link
lists and the link table agree (no dangling or foreign links, id counters above the ids in use), there is one
template folder (``workflows/``, which ComfyUI's template browser reads) and every workflow has its thumbnail.

The real frontend load and execution are tested in ``test_comfy_real.py`` (marker ``comfy``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
PACK = "cartoonseg_pack_workflow_test"
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# Core node definitions used by our workflows (ComfyUI core; inputs and outputs as in its INPUT_TYPES). Add a row
# when a workflow starts using another core node. Combo option lists of core loaders depend on installed files
# and are not checked (None).
CORE: dict[str, dict] = {
    "LoadImage": {"input": {"required": {"image": (None, {"image_upload": True})}}, "output": ["IMAGE", "MASK"]},
    "SaveImage": {"input": {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}}, "output": []},
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": []},
    "MaskToImage": {"input": {"required": {"mask": ("MASK",)}}, "output": ["IMAGE"]},
    "SaveAnimatedWEBP": {
        "input": {"required": {
            "images": ("IMAGE",), "filename_prefix": ("STRING", {}),
            "fps": ("FLOAT", {"min": 0.01, "max": 1000.0}), "lossless": ("BOOLEAN", {}),
            "quality": ("INT", {"min": 0, "max": 100}), "method": (["default", "fastest", "slowest"], {}),
        }},
        "output": [],
    },
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": (None, {})}}, "output": ["MODEL", "CLIP", "VAE"]},
    "ControlNetLoader": {"input": {"required": {"control_net_name": (None, {})}}, "output": ["CONTROL_NET"]},
}


@pytest.fixture(scope="module")
def definitions():
    """``{node type: {"input": INPUT_TYPES(), "output": RETURN_TYPES}}`` for the pack (loaded under a private
    package name, never as ``nodes``) plus :data:`CORE`."""
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    try:
        spec.loader.exec_module(module)
        defs = {name: {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES)}
                for name, cls in module.NODE_CLASS_MAPPINGS.items()}
    finally:
        for k in [k for k in sys.modules if k == PACK or k.startswith(PACK + ".")]:
            del sys.modules[k]
    overlap = set(defs) & set(CORE)
    assert not overlap, f"pack node ids shadow core nodes: {overlap}"
    defs.update(CORE)
    return defs


def _inputs(definition: dict) -> dict[str, tuple]:
    spec = definition["input"]
    return {**dict(spec.get("required", {})), **dict(spec.get("optional", {}))}


def widget_slots(definition: dict, include_force_input: bool = True) -> list[tuple[str, object, dict]]:
    """``(name, type, options)`` per entry of ``widgets_values``, in the classic frontend's order; ``type`` is the
    option list for combos, ``None`` for combos with unknown options, and ``"CONTROL"``/``"UPLOAD"`` for the
    extra slots (seed control, upload button). The classic frontend also gives ``forceInput`` inputs a (converted)
    widget slot; newer frontends do not (``include_force_input=False``)."""
    slots = []
    for name, spec in _inputs(definition).items():
        typ = spec[0]
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if options.get("forceInput") and not include_force_input:
            continue
        if options.get("image_upload"):
            slots += [(name, None, options), ("upload", "UPLOAD", {})]
        elif typ is None or isinstance(typ, (list, tuple)):
            slots.append((name, list(typ) if typ is not None else None, options))
            if options.get("control_after_generate"):
                slots += [("control_after_generate", "CONTROL", {}), ("control_filter_list", "CONTROL", {})]
        elif typ == "INT" and (name in ("seed", "noise_seed") or options.get("control_after_generate")):
            slots += [(name, "INT", options), ("control_after_generate", "CONTROL", {})]
        elif typ in WIDGET_TYPES:
            slots.append((name, typ, options))
    return slots


def _check_value(where: str, name: str, typ, options: dict, value) -> list[str]:
    if typ == "CONTROL":
        return [] if value in ("fixed", "increment", "decrement", "randomize") or isinstance(value, str) else [
            f"{where}: {name} control value {value!r}"]
    if typ == "UPLOAD" or typ is None:
        return []
    if isinstance(typ, list):
        return [] if value in typ else [f"{where}: {name}={value!r} not in {typ}"]
    if typ == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{where}: {name}={value!r} is not a boolean"]
    if typ == "STRING":
        return [] if isinstance(value, str) else [f"{where}: {name}={value!r} is not a string"]
    if typ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (typ == "INT" and not isinstance(value, int)):
            return [f"{where}: {name}={value!r} is not {typ}"]
        low, high = options.get("min", -float("inf")), options.get("max", float("inf"))
        return [] if low <= value <= high else [f"{where}: {name}={value} outside [{low}, {high}]"]
    return []


def check_workflow(workflow: dict, definitions: dict) -> list[str]:
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    for nid, node in nodes.items():
        t, where = node["type"], f"node {nid} ({node['type']})"
        if t in VIRTUAL:
            continue
        if t not in definitions:
            problems.append(f"{where}: unknown node type (not in the pack's NODE_CLASS_MAPPINGS nor in CORE)")
            continue
        definition = definitions[t]
        declared = _inputs(definition)
        slots = widget_slots(definition)
        values = node.get("widgets_values", [])
        if len(values) != len(slots):
            # the newer-frontend layout (no forceInput slots) loads in the classic UI only when those slots come last
            alt = widget_slots(definition, include_force_input=False)
            if len(values) == len(alt) and slots[: len(alt)] == alt:
                slots = alt
        if len(values) != len(slots):
            problems.append(f"{where}: {len(values)} widgets_values, expected {len(slots)} {[s[0] for s in slots]}")
        else:
            for (name, typ, options), value in zip(slots, values):
                problems += _check_value(where, name, typ, options, value)
        linked = set()
        for slot, inp in enumerate(node.get("inputs", [])):
            name = inp["name"]
            if name not in declared:
                problems.append(f"{where}: input {name!r} is not declared by the node")
                continue
            want = declared[name][0]
            is_widget = want is None or isinstance(want, (list, tuple)) or want in WIDGET_TYPES
            if is_widget and inp.get("widget") is None:
                problems.append(f"{where}: widget {name!r} is a socket without 'widget' (a converted widget needs it)")
            if isinstance(want, str) and inp.get("type") != want:
                problems.append(f"{where}: input {name!r} has type {inp.get('type')}, node declares {want}")
            if inp.get("link") is None:
                continue
            link = links.get(inp["link"])
            if link is None:
                problems.append(f"{where}: input {name!r} refers to missing link {inp['link']}")
                continue
            _, origin, origin_slot, target, target_slot, typ = link
            if target != nid or target_slot != slot:
                problems.append(f"{where}: link {link[0]} targets node {target} slot {target_slot}, not {nid}/{slot}")
            source = nodes.get(origin)
            if source is None or source["type"] not in definitions:
                problems.append(f"{where}: link {link[0]} comes from unknown node {origin}")
                continue
            outputs = definitions[source["type"]]["output"]
            if origin_slot >= len(outputs) or outputs[origin_slot] != inp["type"] or typ != inp["type"]:
                problems.append(f"{where}: link {link[0]} carries {typ} from {source['type']} output {origin_slot} "
                                f"({outputs[origin_slot] if origin_slot < len(outputs) else 'missing'}) into {inp['type']}")
            if inp["link"] not in (source["outputs"][origin_slot].get("links") or []):
                problems.append(f"{where}: link {link[0]} missing from node {origin}'s output list")
            linked.add(name)
        for name, spec in definition["input"].get("required", {}).items():
            typ = spec[0]
            is_widget = typ is None or isinstance(typ, (list, tuple)) or typ in WIDGET_TYPES
            if not is_widget and name not in linked:
                problems.append(f"{where}: required input {name!r} is not connected")
        outputs = node.get("outputs") or []
        if [o.get("type") for o in outputs] != definition["output"]:
            problems.append(f"{where}: outputs {[o.get('type') for o in outputs]}, node returns {definition['output']}")
        for slot, out in enumerate(outputs):
            # the frontend disconnects (and deletes with the node) every link listed here: a link of another node
            # in this list is removed when this node is deleted or rewired
            for link_id in out.get("links") or []:
                link = links.get(link_id)
                if link is None:
                    problems.append(f"{where}: output {slot} lists link {link_id}, which does not exist")
                elif link[1] != nid or link[2] != slot:
                    problems.append(f"{where}: output {slot} lists link {link_id}, which starts at node {link[1]} "
                                    f"slot {link[2]}")
    problems += _check_link_table(workflow, nodes, links)
    return problems


def _check_link_table(workflow: dict, nodes: dict, links: dict) -> list[str]:
    """Every link id is unique, ends at an input that refers back to it, and is below the ids the frontend hands
    out next (``last_link_id``/``last_node_id``; a smaller one makes the next new link or node reuse an id)."""
    problems = []
    if len(links) != len(workflow["links"]):
        problems.append("duplicate link ids in links")
    for link_id, link in links.items():
        target = nodes.get(link[3])
        inputs = (target or {}).get("inputs") or []
        if link[4] >= len(inputs) or inputs[link[4]].get("link") != link_id:
            problems.append(f"link {link_id} is dangling: node {link[3]} input {link[4]} does not refer to it")
    if nodes and workflow.get("last_node_id", 0) < max(nodes):
        problems.append(f"last_node_id {workflow.get('last_node_id')} < largest node id {max(nodes)}")
    if links and workflow.get("last_link_id", 0) < max(links):
        problems.append(f"last_link_id {workflow.get('last_link_id')} < largest link id {max(links)}")
    return problems


def test_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"kenburns.json", "kenburns_diffusion.json"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_node_definitions(path, definitions):
    workflow = json.loads(path.read_text())
    assert {"nodes", "links"} <= set(workflow)
    problems = check_workflow(workflow, definitions)
    assert not problems, "\n".join(problems)


def test_one_template_folder():
    """ComfyUI (2025) lists a pack's templates from example_workflows/, example/, examples/, workflow/ and
    workflows/ together (app/custom_node_manager.py), so a copy in two of them is listed twice: only workflows/."""
    for name in ("example_workflows", "example", "examples", "workflow"):
        assert not (REPO / name).exists(), f"{name}/ would list the templates a second time; keep only workflows/"
    assert not [p.name for p in (REPO / "workflows").iterdir() if p.suffix not in (".json", ".jpg")]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_has_a_thumbnail(path):
    """The template browser shows ``<name>.jpg`` beside ``<name>.json`` as the card image (404 otherwise)."""
    from PIL import Image

    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"workflows/{thumb.name} is missing (the template browser card would be empty)"
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert 320 <= im.width <= 1024 and 160 <= im.height <= 1024, im.size
    assert thumb.stat().st_size < 200_000, "keep thumbnails small"


def test_checker_catches_mistakes(definitions):
    """The checker itself must fail on a broken workflow (wrong widget count, bad link type, unknown node)."""
    workflow = json.loads((REPO / "workflows" / "kenburns.json").read_text())
    broken = json.loads(json.dumps(workflow))
    kb = next(n for n in broken["nodes"] if n["type"] == "CartoonSegKenBurns")
    kb["widgets_values"] = kb["widgets_values"][:-1]
    broken["nodes"].append({"id": 999, "type": "NoSuchNode", "inputs": [], "outputs": [], "widgets_values": []})
    link = next(link for link in broken["links"] if link[5] == "CARTOONSEG_CAMERA")
    link[5] = "IMAGE"
    problems = check_workflow(broken, definitions)
    assert any("widgets_values" in p for p in problems)
    assert any("NoSuchNode" in p for p in problems)
    assert any("carries IMAGE" in p for p in problems)


def test_checker_catches_broken_link_bookkeeping(definitions):
    """Output link lists that name another node's links (deleting one node would cut the other's wires), dangling
    links, and id counters below the ids in use."""
    workflow = json.loads((REPO / "workflows" / "kenburns.json").read_text())
    assert not check_workflow(workflow, definitions)
    broken = json.loads(json.dumps(workflow))
    nodes = {n["id"]: n for n in broken["nodes"]}
    camera = next(n for n in broken["nodes"] if n["type"] == "CartoonSegCameraPath")
    depth = next(n for n in broken["nodes"] if n["type"] == "CartoonSegDepthEstimate")
    depth["outputs"][0]["links"].append(camera["outputs"][0]["links"][0])
    kb = next(n for n in broken["nodes"] if n["type"] == "CartoonSegKenBurns")
    background = next(i for i in kb["inputs"] if i["name"] == "background")
    dropped, background["link"] = background["link"], None
    broken["last_link_id"] = max(link[0] for link in broken["links"]) - 1
    broken["last_node_id"] = max(nodes) - 1
    problems = check_workflow(broken, definitions)
    assert any(f"output 0 lists link {camera['outputs'][0]['links'][0]}, which starts at node {camera['id']}" in p
               for p in problems), problems
    assert any(f"link {dropped} is dangling" in p for p in problems), problems
    assert any("last_link_id" in p for p in problems) and any("last_node_id" in p for p in problems), problems
