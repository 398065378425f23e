"""Checks inside the real ComfyUI web page (headless Chromium through Playwright), for the real-ComfyUI tests.

Run with the harness venv's python (it has Playwright), against a running server::

    VENV/bin/python tests/_comfy_page.py --url http://127.0.0.1:8188 --task titles --workflow workflows/a.json ...
    VENV/bin/python tests/_comfy_page.py --url ... --task templates --module cartoonseg
    VENV/bin/python tests/_comfy_page.py --url ... --task thumbnail --workflow workflows/a.json --out workflows/a.jpg \
        --viewport 2200x1100

Prints one JSON object. Tasks:

* ``titles``: every node type of the pack (ids starting with ``CartoonSeg``) created fresh, then every given workflow
  loaded; reports each node whose title the frontend draws cut (title wider than the node width minus two title
  heights, the rule of the new frontend's ``drawTitleText``).
* ``templates``: ``GET /api/workflow_templates`` entries of the module, each thumbnail fetched, and the template
  browser opened (command ``Comfy.BrowseTemplates``), reporting the pack's cards and whether their images loaded.
* ``thumbnail``: the workflow loaded, fitted and screenshotted without the UI around the graph; a ``.jpg`` output
  becomes the 640-pixel-wide template-browser thumbnail (how every ``workflows/<name>.jpg`` is made, in the
  2025 ComfyUI with the pack installed).

Browser setup (Chromium binary, sandbox flags, loopback-only requests) is the harness's ``ui_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HARNESS = os.environ.get("CARTOONSEG_COMFY_HARNESS",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tools",
                                      "comfy_harness"))
sys.path.insert(0, os.path.abspath(HARNESS))
import ui_check  # noqa: E402  (the harness: Chromium path and flags, readiness and fit scripts)

JS_TITLES = """(prefix) => {
  const c = document.createElement('canvas').getContext('2d');
  const th = LiteGraph.NODE_TITLE_HEIGHT || 30;
  const out = [];
  const check = (node, where) => {
    const type = node.comfyClass || node.type || '';
    if (!type.startsWith(prefix)) return;
    c.font = node.titleFontStyle || `${LiteGraph.NODE_TEXT_SIZE || 14}px Arial`;
    const title = String((node.getTitle && node.getTitle()) || node.title || '');
    const need = c.measureText(title).width, have = node.size[0] - 2 * th;
    out.push({where, type, title, need: Math.round(need), have: Math.round(have), cut: need > have});
  };
  return {check: check.toString(), out};
}"""


def _page(p, url: str, viewport=(1600, 900)):
    udd = tempfile.mkdtemp(prefix="cartoonseg-page-")
    ctx = ui_check._launch(p, udd, viewport)
    page = ctx.pages[0] if ctx.pages else ctx.new_page()

    def on_route(route):
        u = route.request.url
        if u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "http://localhost", "data:", "blob:")):
            return route.continue_()
        return route.abort("blockedbyclient")

    ctx.route("**/*", on_route)
    page.goto(url, wait_until="load", timeout=90_000)
    page.wait_for_function(ui_check.JS_READY, timeout=90_000)
    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except Exception:  # noqa: BLE001
        pass
    page.keyboard.press("Escape")  # newer frontends open a template dialog on first start
    return ctx, page, udd


def task_titles(page, workflows: list[str], prefix: str = "CartoonSeg") -> dict:
    measure = """(args) => {
      const [prefix, where] = args;
      const c = document.createElement('canvas').getContext('2d');
      const th = LiteGraph.NODE_TITLE_HEIGHT || 30;
      const out = [];
      for (const node of (app.graph._nodes || app.graph.nodes || [])) {
        const type = node.comfyClass || node.type || '';
        if (!type.startsWith(prefix)) continue;
        c.font = node.titleFontStyle || `${LiteGraph.NODE_TEXT_SIZE || 14}px Arial`;
        const title = String((node.getTitle && node.getTitle()) || node.title || '');
        const need = c.measureText(title).width, have = node.size[0] - 2 * th;
        out.push({where, id: node.id, type, title, need: Math.round(need), have: Math.round(have), cut: need > have});
      }
      return out;
    }"""
    results = []
    types = page.evaluate("(p) => Object.keys(LiteGraph.registered_node_types).filter(t => t.startsWith(p))", prefix)
    page.evaluate("""(types) => { app.graph.clear(); let x = 0;
      for (const t of types) { const n = LiteGraph.createNode(t); n.pos = [x, 0]; x += 50; app.graph.add(n); } }""",
                  types)
    page.wait_for_timeout(200)
    results += page.evaluate(measure, [prefix, "new node"])
    for wf in workflows:
        with open(wf) as f:
            data = json.load(f)
        page.evaluate("async (wf) => { await app.loadGraphData(wf); }", data)
        page.wait_for_timeout(300)
        results += page.evaluate(measure, [prefix, os.path.basename(wf)])
    return {"node_types": types, "checked": len(results), "cut": [r for r in results if r["cut"]],
            "nodes": results}


def task_templates(page, url: str, module: str, out: str | None = None) -> dict:
    listing = page.evaluate("async () => (await fetch('/api/workflow_templates')).json()")
    names = listing.get(module, [])
    thumbs = {}
    for name in names:
        thumbs[name] = page.evaluate("""async (u) => { const r = await fetch(u);
            return {status: r.status, type: r.headers.get('content-type'), bytes: (await r.arrayBuffer()).byteLength}; }""",
                                     f"/api/workflow_templates/{module}/{name}.jpg")
    res = {"listing": listing, "templates": names, "thumbnails": thumbs, "browser": None}
    opened = page.evaluate("""async () => {
        const cmd = app.extensionManager && app.extensionManager.command;
        if (!cmd) return 'no command service';
        try { await cmd.execute('Comfy.BrowseTemplates'); return 'ok'; } catch (e) { return String(e); } }""")
    res["browser_open"] = opened
    if opened != "ok":
        return res
    page.wait_for_timeout(1500)
    # the pack's cards: images whose source is one of its thumbnails (select the pack's group when one is shown)
    for label in (module, module.replace("_", " ")):
        loc = page.get_by_text(label, exact=True)
        if loc.count():
            try:
                loc.first.click(timeout=3000)
                page.wait_for_timeout(1000)
                break
            except Exception:  # noqa: BLE001
                pass
    # the cards' images: the frontend fetches each thumbnail and shows it through a blob: URL; a missing thumbnail
    # leaves an empty image (src "") and a placeholder icon
    deadline = time.time() + 20
    cards = []
    while time.time() < deadline:
        cards = page.evaluate("""() => {
            const dialog = document.querySelector('[role=dialog]') || document;
            return [...dialog.querySelectorAll('img')].filter(i => !(i.src || '').endsWith('.svg'))
              .map(i => ({src: (i.currentSrc || i.src || '').slice(0, 40), complete: i.complete,
                          width: i.naturalWidth, height: i.naturalHeight}));
        }""")
        if len(cards) >= len(names) and all(c["complete"] for c in cards) and all(c["width"] for c in cards):
            break
        page.wait_for_timeout(500)
    res["browser"] = cards
    if out:
        page.screenshot(path=out)
    return res


def task_thumbnail(page, workflow: str, out: str) -> dict:
    with open(workflow) as f:
        data = json.load(f)
    page.evaluate("""async () => { const s = app.extensionManager && app.extensionManager.setting;
        if (!s) return; for (const [k, v] of [['Comfy.Minimap.Visible', false], ['Comfy.Graph.CanvasInfo', false]])
        { try { await s.set(k, v); } catch (e) {} } }""")
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", data)
    page.wait_for_timeout(500)
    fit = page.evaluate(ui_check.JS_FIT)
    page.wait_for_timeout(800)
    # the graph's bounding box on screen (graph coordinates -> canvas pixels), titles included
    clip = page.evaluate("""() => { const c = app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect();
        const nodes = app.graph._nodes || app.graph.nodes || []; const th = LiteGraph.NODE_TITLE_HEIGHT || 30;
        let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
        for (const n of nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - th);
          x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
        const pad = 12, badge = 24, sx = (x) => (x + ds.offset[0]) * ds.scale, sy = (y) => (y + ds.offset[1]) * ds.scale;
        const left = Math.max(r.left, r.left + sx(x0) - pad), top = Math.max(r.top, r.top + sy(y0) - pad - badge);
        return {x: left, y: top, width: Math.min(r.right, r.left + sx(x1) + pad) - left,
                height: Math.min(r.bottom, r.top + sy(y1) + pad) - top}; }""")
    page.screenshot(path=out, clip=clip)
    if out.lower().endswith((".jpg", ".jpeg")):  # a template-browser thumbnail: 640 px wide JPEG
        from PIL import Image

        with Image.open(out) as im:
            im = im.convert("RGB")
            im = im.resize((640, max(160, round(im.height * 640 / im.width))), Image.LANCZOS)
            im.save(out, "JPEG", quality=85, optimize=True)
    return {"fit": fit, "clip": clip, "out": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--task", required=True, choices=["titles", "templates", "thumbnail"])
    ap.add_argument("--workflow", action="append", default=[])
    ap.add_argument("--module", default="cartoonseg")
    ap.add_argument("--out")
    ap.add_argument("--viewport", default="1600x900")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    viewport = tuple(int(v) for v in a.viewport.lower().split("x"))
    res: dict = {"task": a.task}
    errors: list[str] = []
    with sync_playwright() as p:
        ctx, page, udd = _page(p, a.url, viewport)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            if a.task == "titles":
                res.update(task_titles(page, a.workflow))
            elif a.task == "templates":
                res.update(task_templates(page, a.url, a.module, a.out))
            else:
                res.update(task_thumbnail(page, a.workflow[0], a.out))
        finally:
            ctx.close()
            import shutil

            shutil.rmtree(udd, ignore_errors=True)
    res["page_errors"] = errors
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
