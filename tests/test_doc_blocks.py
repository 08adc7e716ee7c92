"""Docs as tests: every fenced python and bash block of README.md, docs/ and benchmarks/*.md runs
as written (one subprocess per page, ``tests/doc_blocks.py``), or is marked ``not-run`` with
the reason. A documented command that breaks fails here.

The markers (``not-run``, ``stand-in``, ``substitute``) are described in ``tests/doc_blocks.py``.
Stand-in hub models are tiny random models built from configs of the architecture each hub id
names (``STAND_IN_MODELS``), filed in a private offline cache; nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data.conftest import coco_fixture, imagenet_seg_fixture, voc_fixture  # noqa: F401
from tests.doc_blocks import PRELUDES, Block, blocks
from tests.stand_ins import add_to_cache, hf_folder, timm_folder

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").glob("*.md")]
)
#: hub id -> (library, what to build): the checkpoints the docs name, as tiny random stand-ins.
STAND_IN_MODELS = {
    "facebook/dino-vits16": ("transformers", "vit_backbone"),
    "facebook/dino-vits8": ("transformers", "vit_patch8"),
    "facebook/deit-small-patch16-224": ("transformers", "deit"),
    "google/vit-base-patch16-224": ("transformers", "vit"),
    # timm builds the architecture from the name, so its stand-in has the real shape.
    "timm/vit_small_patch16_224.augreg_in21k_ft_in1k": ("timm", "vit_small_patch16_224"),
}
DATA_STAND_INS = {"voc", "imagenet-seg", "coco"}
STAND_INS = {"hub", "photo", *DATA_STAND_INS, *PRELUDES}
PAGE_TIMEOUT_S = 900


def _relative(page: Path) -> str:
    return str(page.relative_to(ROOT))


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
RUNNABLE = [b for b in ALL_BLOCKS if "not-run" not in b.markers]
#: Pages with a bash block run one per subprocess; the python-only pages share one subprocess.
BASH_PAGES = sorted({_relative(b.page) for b in RUNNABLE if b.language == "bash"})
PYTHON_PAGES = sorted({_relative(b.page) for b in RUNNABLE} - set(BASH_PAGES))
RUNS = [*BASH_PAGES, " + ".join(PYTHON_PAGES)]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: f"{_relative(b.page)}:{b.line}")
def test_every_block_runs_or_says_why_not(block: Block) -> None:
    if "not-run" in block.markers:
        assert block.markers["not-run"].strip(), f"{block.where}: not-run needs a reason"
        assert set(block.markers) == {"not-run"}, f"{block.where}: a not-run block runs nothing"
        return
    unknown = set(block.stand_ins) - STAND_INS
    assert not unknown, f"{block.where}: unknown stand-in(s) {unknown}; known: {sorted(STAND_INS)}"
    if block.language == "bash":
        assert not set(block.stand_ins) & set(PRELUDES), f"{block.where}: python-only stand-in"
    block.substituted()  # a substitute marker that no longer matches the block fails here


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The stand-in hub cache, built once per session (shared by the xdist workers)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "stand-in-hub"
    cache = root / "cache"
    with FileLock(str(root) + ".lock"):
        if not (root / "done").is_file():
            for repo_id, (library, kind) in STAND_IN_MODELS.items():
                folder = root / repo_id.replace("/", "--")
                if library == "timm":
                    timm_folder(folder, kind)
                else:
                    hf_folder(folder, kind)
                add_to_cache(cache, repo_id, folder)
            (root / "done").touch()
    return cache


def _prepare(workdir: Path, stand_ins: set[str], request: pytest.FixtureRequest) -> None:
    """Put the stand-ins the page's blocks ask for into its working folder."""
    data = workdir / "data"
    if "voc" in stand_ins:
        shutil.copytree(request.getfixturevalue("voc_fixture").root.parent, data / "VOCdevkit")
    if "imagenet-seg" in stand_ins:
        path = request.getfixturevalue("imagenet_seg_fixture")[0]
        data.mkdir(exist_ok=True)
        shutil.copy(path, data / "gtsegs_ijcv.mat")
    if "coco" in stand_ins:
        coco = request.getfixturevalue("coco_fixture")
        (data / "coco" / "annotations").mkdir(parents=True)
        shutil.copytree(coco.root, data / "coco" / "val2017")
        shutil.copy(coco.ann_file, data / "coco" / "annotations" / "instances_val2017.json")
    if "photo" in stand_ins:
        pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(workdir / "photo.jpg")
    # Commands written for the repository's root: its venv and its benchmarks folder.
    venv = Path(sys.executable).parent.parent
    if (venv / "pyvenv.cfg").is_file():
        (workdir / ".venv").symlink_to(venv, target_is_directory=True)
    (workdir / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)


@pytest.mark.parametrize("run", RUNS)
def test_pages_run_as_written(run: str, tmp_path: Path, request) -> None:
    pages = run.split(" + ")
    page_blocks = [b for b in RUNNABLE if _relative(b.page) in pages]
    stand_ins = {name for b in page_blocks for name in b.stand_ins}
    workdir = tmp_path / "work"
    workdir.mkdir()
    _prepare(workdir, stand_ins, request)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_CACHE": str(request.getfixturevalue("hub_cache") if "hub" in stand_ins
                            else workdir / ".empty-hub-cache"),
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tests.doc_blocks", *(str(ROOT / p) for p in pages), str(workdir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    print(done.stdout)  # each block's time, shown by pytest -rP


def test_a_broken_command_fails_with_the_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```python\nvalue = 1 + 1\n```\n\n<!-- stand-in: photo -->\n"
        "```bash\nattnexplain explain --no-such-flag\n```\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.doc_blocks", str(page), str(tmp_path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "ok python block at" in done.stdout
    assert f"FAILED bash block at {page}:9" in done.stderr
    assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_markers_are_read_from_the_lines_above_the_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "<!-- stand-in: hub, voc -->\n<!-- substitute: synthetic:200 => synthetic:2 -->\n"
        "```bash\nattnexplain benchmark --dataset synthetic:200\n```\n\n"
        "<!-- substitute: --limit 9 => --limit 1 -->\n```python\nprint('x')\n```\n"
        "```text\nnot code\n```\n"
    )
    found = blocks(page)
    assert [(b.line, b.language) for b in found] == [(3, "bash"), (9, "bash"), (14, "python")]
    assert found[0].markers == {"not-run": "needs a GPU"}
    assert found[1].stand_ins == ["hub", "voc"]
    assert found[1].substituted() == "attnexplain benchmark --dataset synthetic:2\n"
    with pytest.raises(ValueError, match="'--limit 9' is not in the block"):
        found[2].substituted()
