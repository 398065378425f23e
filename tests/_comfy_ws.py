"""A websocket client of a running ComfyUI server, for the real-ComfyUI tests (run with the harness venv's python,
which has aiohttp): queues one API prompt, records every message of it with its arrival time, optionally presses
Cancel (``POST /interrupt``) after N progress messages of one node, and prints a JSON report::

    VENV/bin/python tests/_comfy_ws.py --url http://127.0.0.1:8188 --prompt p.json [--interrupt-after 3
        --interrupt-node 5] [--timeout 600]

Report: ``messages`` (``[t, type, data]``, ``t`` in seconds since the prompt was queued, binary preview frames left
out), ``interrupted_at`` (when Cancel was pressed), ``ended`` (``success`` / ``interrupted`` / ``error`` /
``timeout``), ``prompt_id``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid


async def run(url: str, prompt: dict, interrupt_after: int | None, interrupt_node: str | None, timeout: float) -> dict:
    import aiohttp

    client_id = uuid.uuid4().hex
    report: dict = {"messages": [], "interrupted_at": None, "ended": "timeout", "prompt_id": None}
    progress_seen = 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
            t0 = time.monotonic()
            async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    report["ended"] = "rejected"
                    report["error"] = body
                    return report
            report["prompt_id"] = pid = body["prompt_id"]
            while time.monotonic() - t0 < timeout:
                try:
                    msg = await ws.receive(timeout=max(0.1, timeout - (time.monotonic() - t0)))
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    continue
                event = json.loads(msg.data)
                kind, data = event.get("type"), event.get("data") or {}
                if data.get("prompt_id") not in (None, pid):
                    continue
                t = round(time.monotonic() - t0, 3)
                report["messages"].append([t, kind, data])
                if kind == "progress" and (interrupt_node is None or str(data.get("node")) == interrupt_node):
                    progress_seen += 1
                    if interrupt_after is not None and progress_seen == interrupt_after:
                        report["interrupted_at"] = round(time.monotonic() - t0, 3)
                        async with session.post(f"{url}/interrupt", json={}) as r:
                            await r.read()
                if kind == "execution_success":
                    report["ended"] = "success"
                    break
                if kind == "execution_interrupted":
                    report["ended"] = "interrupted"
                    break
                if kind == "execution_error":
                    report["ended"] = "error"
                    break
                if kind == "executing" and data.get("node") is None and data.get("prompt_id") == pid:
                    report["ended"] = report["ended"] if report["ended"] != "timeout" else "success"
                    break
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--prompt", required=True, help="API-format prompt JSON file")
    ap.add_argument("--interrupt-after", type=int, default=None)
    ap.add_argument("--interrupt-node", default=None)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args(argv)
    with open(a.prompt) as f:
        prompt = json.load(f)
    report = asyncio.run(run(a.url.rstrip("/"), prompt, a.interrupt_after, a.interrupt_node, a.timeout))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
