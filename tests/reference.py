"""Independent reference implementations written from the founding documents' code.

Deliberately naive (loops, full matrices, numpy): nothing here shares code with the package.
"""

from __future__ import annotations

import numpy as np
import torch


def raw_cls(attentions, layer, prefix, grid, head_fusion):
    """DINO/All-Things-ViTs: ``attentions[layer][:, :, 0, prefix:]`` on the grid."""
    rows = attentions[layer][:, :, 0, prefix:]
    maps = rows.reshape(rows.shape[0], rows.shape[1], *grid)
    if head_fusion is None:
        return maps
    fuse = {"mean": lambda t: t.mean(1), "max": lambda t: t.max(1)[0], "min": lambda t: t.min(1)[0]}
    return fuse[head_fusion](maps).unsqueeze(1)


def rollout(attentions, head_fusion, discard_ratio, start_layer, prefix, grid):
    """jeonsworld/ViT-pytorch rollout (seed 003) with vit-explain's fusion and discard, fixed
    to keep dims and to discard per sample."""
    joints = rollout_joints(attentions, head_fusion, discard_ratio, start_layer)
    return torch.stack([joint[0, prefix:].reshape(*grid) for joint in joints]).unsqueeze(1)


def _fuse(att, head_fusion, dim):
    if head_fusion == "mean":
        return att.mean(dim=dim)
    if head_fusion == "max":
        return att.max(dim=dim)[0]
    return att.min(dim=dim)[0]


def rollout_joints(attentions, head_fusion, discard_ratio, start_layer, spare_first=True):
    """The joint attention ``(N, N)`` of each sample; the discard spares entry 0 (CLS→CLS)
    unless ``spare_first=False`` (models without a CLS token)."""
    joints = []
    for b in range(attentions[0].shape[0]):
        att = torch.stack([a[b].double() for a in attentions[start_layer:]])  # (L, H, N, N)
        fused = _fuse(att, head_fusion, dim=1)
        num_tokens = fused.shape[-1]
        for layer in range(fused.shape[0]):
            flat = fused[layer].reshape(-1).clone()
            count = int(flat.numel() * discard_ratio)
            first = 1 if spare_first else 0
            order = sorted(range(first, flat.numel()), key=lambda i: flat[i].item())
            for index in order[:count]:
                flat[index] = 0.0
            fused[layer] = flat.reshape(num_tokens, num_tokens)
        aug = fused + torch.eye(num_tokens, dtype=fused.dtype)
        aug = aug / aug.sum(dim=-1).unsqueeze(-1)
        joint = aug[0]
        for n in range(1, aug.shape[0]):
            joint = torch.matmul(aug[n], joint)
        joints.append(joint)
    return joints


def pooled_rollout(attentions, pooling, head_fusion, discard_ratio, start_layer, prefix, grid):
    """Rollout read through a pooling head: its query's fused row ``pooling`` ``(B, H, N)``,
    rescaled to sum 1, times the joint attention (no identity for the query)."""
    spare = prefix > 0
    joints = rollout_joints(attentions, head_fusion, discard_ratio, start_layer, spare)
    maps = []
    for b, joint in enumerate(joints):
        row = _fuse(pooling[b].double(), head_fusion, dim=0)
        row = row / row.sum()
        maps.append((row @ joint)[prefix:].reshape(*grid))
    return torch.stack(maps).unsqueeze(1)


def compute_distance_matrix(patch_size, num_patches, width):
    """Seed 002, with the row length generalised to non-square grids."""
    distance_matrix = np.zeros((num_patches, num_patches))
    for i in range(num_patches):
        for j in range(num_patches):
            if i == j:
                continue
            xi, yi = int(i / width), i % width
            xj, yj = int(j / width), j % width
            distance_matrix[i, j] = patch_size * np.linalg.norm([xi - xj, yi - yj])
    return distance_matrix


def mean_attention_distance(attentions, prefix, grid, patch_size, renormalize=False):
    """Seed 002 ``compute_mean_attention_dist`` for every layer: ``(B, L, H)``."""
    num_patches = grid[0] * grid[1]
    distance = compute_distance_matrix(patch_size, num_patches, grid[1]).reshape(
        1, 1, num_patches, num_patches
    )
    per_layer = []
    for attention in attentions:
        weights = attention.double().numpy()[..., prefix:, prefix:]
        if renormalize:
            weights = weights / weights.sum(axis=-1, keepdims=True)
        mean_distances = np.sum(weights * distance, axis=-1)
        per_layer.append(np.mean(mean_distances, axis=-1))
    return torch.from_numpy(np.stack(per_layer, axis=1))


def founding_layer_maps(attentions, prefix, grid):
    """Seed 003 (jeonsworld/ViT-pytorch, the per-block figure): per sample, the head-mean
    attention plus the identity, rows renormalised (``aug_att_mat``), and its running product
    ``joint_attentions[n] = aug_att_mat[n] @ joint_attentions[n - 1]``; each map is row 0 (CLS)
    over the patch tokens. Returns ``(per_block, cumulative)``, each ``(B, L, h, w)``."""
    per_block, cumulative = [], []
    for b in range(attentions[0].shape[0]):
        att_mat = torch.stack([a[b].double() for a in attentions])
        att_mat = torch.mean(att_mat, dim=1)
        residual_att = torch.eye(att_mat.size(1), dtype=att_mat.dtype)
        aug_att_mat = att_mat + residual_att
        aug_att_mat = aug_att_mat / aug_att_mat.sum(dim=-1).unsqueeze(-1)
        joint_attentions = torch.zeros(aug_att_mat.size(), dtype=att_mat.dtype)
        joint_attentions[0] = aug_att_mat[0]
        for n in range(1, aug_att_mat.size(0)):
            joint_attentions[n] = torch.matmul(aug_att_mat[n], joint_attentions[n - 1])
        per_block.append(torch.stack([m[0, prefix:].reshape(*grid) for m in aug_att_mat]))
        cumulative.append(torch.stack([m[0, prefix:].reshape(*grid) for m in joint_attentions]))
    return torch.stack(per_block), torch.stack(cumulative)


def attention_flow(attentions, head_fusion, prefix, grid):
    """samiraabnar/attention_flow (``get_adjmat`` + ``compute_flows``, networkx Edmonds–Karp):
    the max-flow from the CLS node after the last layer to each patch's input node, per sample,
    before the reference's row normalisation. Returns ``(B, 1, h, w)``."""
    import networkx as nx

    fuse = {"mean": lambda t: t.mean(1), "max": lambda t: t.max(1)[0], "min": lambda t: t.min(1)[0]}
    maps = []
    for b in range(attentions[0].shape[0]):
        att_mat = torch.stack([fuse[head_fusion](a[b : b + 1].double())[0] for a in attentions])
        res_att_mat = att_mat.numpy() + np.eye(att_mat.shape[1])[None, ...]
        res_att_mat = res_att_mat / res_att_mat.sum(axis=-1)[..., None]
        n_layers, length, _ = res_att_mat.shape
        adj_mat = np.zeros(((n_layers + 1) * length, (n_layers + 1) * length))
        for i in np.arange(1, n_layers + 1):
            for k_f in np.arange(length):
                for k_t in np.arange(length):
                    adj_mat[i * length + k_f][(i - 1) * length + k_t] = res_att_mat[i - 1][k_f][k_t]
        graph = nx.from_numpy_array(adj_mat, create_using=nx.DiGraph(), edge_attr="capacity")
        source = n_layers * length  # the CLS token (index 0) after the last layer
        flows = [
            nx.maximum_flow_value(graph, source, v, flow_func=nx.algorithms.flow.edmonds_karp)
            for v in range(prefix, length)
        ]
        maps.append(torch.tensor(flows, dtype=torch.float64).reshape(1, *grid))
    return torch.stack(maps)
