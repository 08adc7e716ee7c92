"""Token layout of one forward pass: which tokens are prefix tokens and how patches form a grid."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens of *this* input sit in the token sequence.

    Every supported family puts its prefix tokens (CLS, distillation, registers) before the patch
    tokens, which are laid out row-major over the patch grid.

    Attributes:
        num_prefix_tokens: tokens before the first patch token (CLS, distillation, registers).
        patch_size: ``(ph, pw)`` pixels per patch.
        grid: ``(h, w)`` patch grid of this input.
        cls_index: position of the CLS token, or ``None`` when the model has none.
        input_size: ``(H, W)`` of the input the layout was read from.
    """

    num_prefix_tokens: int
    patch_size: tuple[int, int]
    grid: tuple[int, int]
    cls_index: int | None
    input_size: tuple[int, int]

    @property
    def num_patches(self) -> int:
        """``h * w``."""
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        """Prefix plus patch tokens."""
        return self.num_prefix_tokens + self.num_patches

    @property
    def covered_size(self) -> tuple[int, int]:
        """``(h * ph, w * pw)``: the pixels the patches cover (the rest is cropped by the stem)."""
        return self.grid[0] * self.patch_size[0], self.grid[1] * self.patch_size[1]
