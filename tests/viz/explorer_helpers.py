"""A decoder of the explorer page's payload, written from its format description (not the
page's own code)."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np


def read_payload(path: Path) -> tuple[dict, bytes]:
    """The page's JSON header and binary section."""
    html = path.read_text(encoding="utf-8")
    match = re.search(
        r'<script id="explorer-payload" type="application/octet-stream">([^<]*)</script>', html
    )
    assert match, "no payload script in the page"
    raw = zlib.decompress(base64.b64decode(match.group(1)))
    (length,) = struct.unpack("<I", raw[:4])
    return json.loads(raw[4 : 4 + length]), raw[4 + length :]


def view_codes(binary: bytes, view: list) -> np.ndarray:
    """``(h, w)`` codes of one view entry ``[layer, head, offset, h, w, ...]``."""
    _, _, offset, height, width = view[:5]
    return np.frombuffer(binary, np.uint8, height * width, offset).reshape(height, width)
