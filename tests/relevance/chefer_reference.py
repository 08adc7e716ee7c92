"""Chefer et al.'s LRP ViT, written again from hila-chefer/Transformer-Explainability.

The modules below follow ``modules/layers_ours.py`` / ``modules/layers_lrp.py`` and
``baselines/ViT/ViT_LRP.py`` / ``ViT_orig_LRP.py`` (their layout is timm's, so a timm
``VisionTransformer``'s ``state_dict`` loads as is): every layer keeps its input in the forward
and has a ``relprop``; ``orig=True`` switches to the ``layers_lrp.py`` rules (α1β0 halves divided
separately, additions without renormalisation). Batch of one, like the reference code: the
tests loop over samples. Nothing here imports attnexplain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def safe_divide(a, b):
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).type(den.type()) * 1e-9
    return a / den * b.ne(0).type(b.type())


class RelProp(nn.Module):
    def keep(self, x):
        if isinstance(x, list | tuple):
            self.X = [t.detach().requires_grad_(True) for t in x]
        else:
            self.X = x.detach().requires_grad_(True)

    def relprop(self, R):
        return R

    def simple(self, R):  # RelPropSimple
        Z = self.forward_kept(self.X)
        S = safe_divide(R, Z)
        C = torch.autograd.grad(Z, self.X, S, retain_graph=True)
        if isinstance(self.X, list):
            return [x * c for x, c in zip(self.X, C)]
        return self.X * C[0]


class Linear(nn.Linear):
    def __init__(self, *args, orig=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.orig = orig

    def forward(self, x):
        self.X = x.detach().requires_grad_(True)
        return super().forward(x)

    def relprop(self, R):
        pw, nw = self.weight.clamp(min=0), self.weight.clamp(max=0)
        px, nx = self.X.clamp(min=0), self.X.clamp(max=0)
        x1 = px.detach().requires_grad_(True)
        x2 = nx.detach().requires_grad_(True)
        Z1, Z2 = F.linear(x1, pw), F.linear(x2, nw)
        if self.orig:
            S1, S2 = safe_divide(R, Z1), safe_divide(R, Z2)
        else:
            S1 = S2 = safe_divide(R, Z1 + Z2)
        C1 = x1 * torch.autograd.grad(Z1, x1, S1)[0]
        C2 = x2 * torch.autograd.grad(Z2, x2, S2)[0]
        return C1 + C2  # alpha = 1, beta = 0


class PatchConv(nn.Conv2d):
    def forward(self, x):
        self.X = x.detach()
        return super().forward(x)

    def relprop(self, R):
        X = self.X
        pw, nw = self.weight.clamp(min=0), self.weight.clamp(max=0)
        L = X * 0 + X.amin(dim=(1, 2, 3), keepdim=True)
        H = X * 0 + X.amax(dim=(1, 2, 3), keepdim=True)

        def conv(x, w):
            return F.conv2d(x, w, None, self.stride, self.padding)

        Za = conv(X, self.weight) - conv(L, pw) - conv(H, nw) + 1e-9
        S = R / Za

        def back(s, w):
            return F.conv_transpose2d(s, w, stride=self.stride, padding=self.padding)

        return X * back(S, self.weight) - L * back(S, pw) - H * back(S, nw)


class Add(RelProp):
    def __init__(self, orig=False):
        super().__init__()
        self.orig = orig

    def forward_kept(self, inputs):
        return torch.add(*inputs)

    def forward(self, inputs):
        self.keep(inputs)
        return torch.add(*inputs)

    def relprop(self, R):
        if self.orig:
            return self.simple(R)
        a, b = self.simple(R)
        a_sum, b_sum = a.sum(), b.sum()
        a_fact = safe_divide(a_sum.abs(), a_sum.abs() + b_sum.abs()) * R.sum()
        b_fact = safe_divide(b_sum.abs(), a_sum.abs() + b_sum.abs()) * R.sum()
        return [a * safe_divide(a_fact, a.sum()), b * safe_divide(b_fact, b.sum())]


class Einsum(RelProp):
    def __init__(self, equation):
        super().__init__()
        self.equation = equation

    def forward_kept(self, operands):
        return torch.einsum(self.equation, *operands)

    def forward(self, operands):
        self.keep(operands)
        return torch.einsum(self.equation, *operands)

    def relprop(self, R):
        return self.simple(R)


class Clone(RelProp):
    def forward(self, x, num):
        self.keep(x)
        self.num = num
        return [x] * num

    def relprop(self, R):
        Z = [self.X] * self.num
        S = [safe_divide(r, z) for r, z in zip(R, Z)]
        C = torch.autograd.grad(Z, self.X, S, retain_graph=True)[0]
        return self.X * C


class Attention(nn.Module):
    def __init__(self, dim, heads, orig):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = Linear(dim, 3 * dim, orig=orig)
        self.proj = Linear(dim, dim, orig=orig)
        self.matmul1 = Einsum("bhid,bhjd->bhij")
        self.matmul2 = Einsum("bhij,bhjd->bhid")

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (self.matmul1([q, k]) * self.scale).softmax(dim=-1)
        self.attn = attn
        if attn.requires_grad:
            attn.register_hook(lambda grad: setattr(self, "attn_grad", grad))
        out = self.matmul2([attn, v]).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)

    def relprop(self, R):
        R = self.proj.relprop(R)
        b, n, d = R.shape
        R = R.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
        cam1, cam_v = self.matmul2.relprop(R)
        cam1, cam_v = cam1 / 2, cam_v / 2
        self.attn_cam = cam1
        cam_q, cam_k = self.matmul1.relprop(cam1)  # softmax passes relevance on
        cam_q, cam_k = cam_q / 2, cam_k / 2
        cam_qkv = torch.stack([cam_q, cam_k, cam_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * d)
        return self.qkv.relprop(cam_qkv)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, orig):
        super().__init__()
        self.fc1 = Linear(dim, hidden, orig=orig)
        self.fc2 = Linear(hidden, dim, orig=orig)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))

    def relprop(self, R):
        return self.fc1.relprop(self.fc2.relprop(R))  # GELU passes relevance on


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, eps, orig):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, orig)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden, orig)
        self.add1, self.add2 = Add(orig), Add(orig)
        self.clone1, self.clone2 = Clone(), Clone()

    def forward(self, x):
        x1, x2 = self.clone1(x, 2)
        x = self.add1([x1, self.attn(self.norm1(x2))])
        x1, x2 = self.clone2(x, 2)
        return self.add2([x1, self.mlp(self.norm2(x2))])

    def relprop(self, R):
        cam1, cam2 = self.add2.relprop(R)
        cam = self.clone2.relprop((cam1, self.mlp.relprop(cam2)))  # LayerNorm passes it on
        cam1, cam2 = self.add1.relprop(cam)
        return self.clone1.relprop((cam1, self.attn.relprop(cam2)))


class ReferenceViT(nn.Module):
    """``ViT_LRP.VisionTransformer`` (or ``ViT_orig_LRP`` with ``orig=True``) in timm's names."""

    def __init__(self, img, patch, dim, depth, heads, hidden, classes, eps=1e-6, orig=False):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = PatchConv(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, eps, orig) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = Linear(dim, classes, orig=orig)
        self.add = Add(orig)

    def forward(self, x):
        patches = self.patch_embed.proj(x)
        self.grid = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
        x = self.add([tokens, self.pos_embed])
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])

    def relprop(self, R):
        cam = self.head.relprop(R)
        full = torch.zeros(cam.shape[0], self.pos_embed.shape[1], cam.shape[-1])
        full[:, 0] = cam  # IndexSelect.relprop: the CLS token's relevance, zeros elsewhere
        for block in reversed(self.blocks):
            full = block.relprop(full)
        return full

    def explain(self, x, target, method, start_layer=0):
        """One sample (``x`` is ``(1, 3, H, W)``), as ``LRP.generate_LRP`` runs it."""
        output = self(x)
        one_hot = torch.zeros(1, output.shape[-1])
        one_hot[0, target] = 1
        self.zero_grad()
        (one_hot * output).sum().backward(retain_graph=True)
        cam = self.relprop(one_hot)
        if method == "full":
            cam, _ = self.add.relprop(cam)
            cam = cam[:, 1:].transpose(1, 2).reshape(1, -1, *self.grid)
            return self.patch_embed.proj.relprop(cam).sum(dim=1)  # (1, H, W)
        if method == "last_layer":
            attn_cam = self.blocks[-1].attn.attn_cam[0]
            return attn_cam.clamp(min=0).mean(dim=0)[0, 1:]
        cams = []
        for block in self.blocks:
            weighted = block.attn.attn_grad[0] * block.attn.attn_cam[0]
            cams.append(weighted.clamp(min=0).mean(dim=0)[None])
        eye = torch.eye(cams[0].shape[-1])[None]
        rollout = cams[start_layer] + eye
        for cam in cams[start_layer + 1 :]:
            rollout = (cam + eye).bmm(rollout)  # compute_rollout_attention, no renormalisation
        return rollout[0, 0, 1:]
