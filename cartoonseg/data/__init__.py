"""Dataset preparation and synthesis for cartoon instance segmentation (arXiv 2312.01943, §3).

Submodules (import them directly; nothing heavy is imported here):

* COCO RLE lives in :mod:`cartoonseg.rle` (shared with the CLI and evaluation);
* :mod:`cartoonseg.data.chroma` - chroma-key extraction of characters from videos / frame folders;
* :mod:`cartoonseg.data.danbooru` - Danbooru2021 (or tag-folder) foreground and background selection;
* :mod:`cartoonseg.data.foregrounds` - the foreground/background index the synthesiser reads;
* :mod:`cartoonseg.data.coco_layouts` - COCO person-box groups and their sampler;
* :mod:`cartoonseg.data.augment` - foreground/background transforms, histogram matching, colour quantisation;
* :mod:`cartoonseg.data.layouts` - the three placement methods (row, COCO person boxes, partition);
* :mod:`cartoonseg.data.synthesis` - composition, occlusion bookkeeping, COCO output, the multiprocess driver;
* :mod:`cartoonseg.data.fixtures` - procedural characters/backgrounds/chroma frames for tests and small runs.

The dataset format written by the synthesiser is documented in :mod:`cartoonseg.data.synthesis`.
"""
