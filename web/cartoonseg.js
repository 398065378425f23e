// CartoonSeg front-end helper, loaded by ComfyUI from WEB_DIRECTORY (classic and new frontends).
//
// The new frontend (1.2x) sizes a fresh node so that its title fits with padding 30 + 10 px, but draws the title
// cut ("…") unless it fits in the width minus 2 x NODE_TITLE_HEIGHT. Node titles of this pack are therefore
// widened here to the width the title really needs, on creation and when a saved workflow is loaded.
import { app } from "../../scripts/app.js";

const PREFIX = "CartoonSeg";
let measureCtx = null;

function titleWidth(node) {
  if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
  const size = (window.LiteGraph && LiteGraph.NODE_TEXT_SIZE) || 14;
  measureCtx.font = node.titleFontStyle || `${size}px Arial`;
  const title = String((node.getTitle && node.getTitle()) || node.title || "");
  return measureCtx.measureText(title).width;
}

export function fitTitle(node) {
  const type = node.comfyClass || node.type || "";
  if (!type.startsWith(PREFIX) || !node.size) return;
  const pad = 2 * ((window.LiteGraph && LiteGraph.NODE_TITLE_HEIGHT) || 30) + 8;
  const need = Math.ceil(titleWidth(node) + pad);
  if (node.size[0] < need) {
    if (typeof node.setSize === "function") node.setSize([need, node.size[1]]);
    else node.size[0] = need;
  }
}

app.registerExtension({
  name: "cartoonseg.fitTitles",
  nodeCreated(node) { fitTitle(node); },
  loadedGraphNode(node) { fitTitle(node); },
});
