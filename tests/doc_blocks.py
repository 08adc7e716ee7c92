"""Run the fenced ``python`` and ``bash`` blocks of a Markdown page, as written, in order.

Used by ``tests/test_doc_blocks.py`` as ``python -m tests.doc_blocks PAGE [PAGE ...] WORKDIR``: a
page with bash blocks runs in a subprocess of its own, the pages with python blocks only share
one (which pays for importing torch once). A page's python blocks share one namespace, in page
order; bash blocks run in ``bash -e -o pipefail`` with the installed console scripts first on
``PATH``; all of them in ``WORKDIR``.
A block that fails stops the page with the page and line in the message.

Markers: HTML comments on the lines right above a fence (invisible in the rendered page).

- ``<!-- not-run: REASON -->``: the block is not run (a reason is required).
- ``<!-- stand-in: NAME[, NAME] -->``: the block runs with stand-ins for what the suite cannot
  have: ``hub`` (Hugging Face hub ids and timm pretrained names resolve to tiny random models
  from configs, in a private offline cache: see ``STAND_IN_MODELS`` in the test), ``voc``,
  ``imagenet-seg``, ``coco`` (tiny datasets in those formats at ``data/VOCdevkit``,
  ``data/gtsegs_ijcv.mat``, ``data/coco/{val2017,annotations/instances_val2017.json}``),
  ``photo`` (a non-square ``photo.jpg``), ``embedded`` (python: ``model``, ``preprocess`` = the
  embedded model, ``samples``, ``x`` = a batch of two of its images, ``image`` = the first
  image) and ``timm`` (python: ``model`` = a 12-block random timm ViT, ``x`` = two 32-px images).
- ``<!-- substitute: OLD => NEW[; OLD => NEW] -->``: before running, replace each OLD (which must
  occur in the block) by NEW: smaller sizes or a device this machine has, never another command.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|stand-in|substitute):\s*(?P<value>.*?)\s*-->\s*$")
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
BASH_TIMEOUT_S = 600


@dataclass
class Block:
    """One fenced block of a page."""

    page: Path
    line: int  # 1-based line of the block's first code line
    language: str  # "python" or "bash"
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def stand_ins(self) -> list[str]:
        return [n.strip() for n in self.markers.get("stand-in", "").split(",") if n.strip()]

    def substituted(self) -> str:
        """The code with the ``substitute`` marker's replacements made.

        Raises:
            ValueError: for a malformed marker or an OLD text the block does not contain.
        """
        code = self.code
        spec = self.markers.get("substitute")
        if not spec:
            return code
        for pair in spec.split(";"):
            old, arrow, new = pair.partition("=>")
            if not arrow:
                raise ValueError(f"{self.where}: substitute needs 'OLD => NEW', got {pair!r}")
            if old.strip() not in code:
                raise ValueError(f"{self.where}: substitute's {old.strip()!r} is not in the block")
            code = code.replace(old.strip(), new.strip())
        return code

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The python and bash blocks of ``page``, with the markers right above each fence."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, language = opening["indent"], opening["lang"].lower()
        end = next(
            (j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), len(lines)
        )
        markers = {}
        above = index - 1
        while above >= 0 and (marker := MARKER.match(lines[above])):
            markers[marker["kind"]] = marker["value"]
            above -= 1
        if language in LANGUAGES:
            code = "\n".join(line[len(indent) :] for line in lines[index + 1 : end]) + "\n"
            found.append(Block(page, index + 2, LANGUAGES[language], code, markers))
        index = end + 1
    return found


EMBEDDED = """
import torch
from attnexplain.zoo import default_samples, load_default
model, preprocess = load_default()
samples = default_samples(2)
x = torch.cat([preprocess(sample.image) for sample in samples])
image = samples[0].image
"""

TIMM = """
import torch
import timm.models.vision_transformer as _vit
torch.manual_seed(0)
model = _vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=12, num_heads=4,
                               num_classes=5).eval()
x = torch.rand(2, 3, 32, 32)
"""

PRELUDES = {"embedded": EMBEDDED, "timm": TIMM}


def _run_python(block: Block, namespace: dict) -> None:
    for name in block.stand_ins:
        if name in PRELUDES:
            exec(compile(PRELUDES[name], f"<stand-in {name}>", "exec"), namespace)
    # Padding keeps tracebacks on the Markdown file's own line numbers.
    code = "\n" * (block.line - 1) + block.substituted()
    exec(compile(code, str(block.page), "exec"), namespace)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_bash(block: Block, workdir: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # torchrun's --master-port default, so that pages run in parallel do not share a port.
        "PET_MASTER_PORT": str(_free_port()),
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    }
    if "hub" not in block.stand_ins:
        env["HF_HUB_CACHE"] = str(workdir / ".empty-hub-cache")  # hub ids need the marker
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.substituted()],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=BASH_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"exit status {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n"
            f"--- stderr\n{done.stderr[-4000:]}"
        )


def run_page(page: Path, workdir: Path) -> int:
    """Run every block of ``page`` not marked ``not-run``; returns 0, or 1 at the first failure."""
    os.chdir(workdir)
    namespace: dict = {"__name__": "__doc_page__"}
    for block in blocks(page):
        if "not-run" in block.markers:
            continue
        start = time.perf_counter()
        try:
            if block.language == "python":
                _run_python(block, namespace)
            else:
                _run_bash(block, workdir)
        except Exception:
            print(f"FAILED {block.language} block at {block.where}:\n{block.code}", file=sys.stderr)
            traceback.print_exc()
            return 1
        print(f"ok {block.language} block at {block.where} ({time.perf_counter() - start:.1f} s)")
    return 0


def main(arguments: list[str]) -> int:
    """``PAGE [PAGE ...] WORKDIR``: run the pages one after the other, each in its own namespace;
    1 at the first failure."""
    *pages, workdir = (Path(a).resolve() for a in arguments)
    return max((run_page(page, workdir) for page in pages), default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
