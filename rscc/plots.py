"""Figures of the project (matplotlib)."""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path


def plot_pairs(root: str | Path, ids: Sequence[int | str], columns: int = 2, caption: int | None = 0,
               out: str | Path | None = None, panel: float = 2.2):
    """A grid of bi-temporal pairs of the dataset at ``root``: A | B side by side, with a caption.

    ``ids`` are imgids (int) or file names (``"train_000016.png"``); ``caption`` is which of the
    five captions to print (None: none); ``columns`` pairs per row. Returns the matplotlib
    figure, also saved to ``out`` when given."""
    import matplotlib.pyplot as plt
    import numpy as np

    from rscc.data.levircc import load_pair_images, load_pairs

    pairs = load_pairs(root)
    by_id = {p.imgid: p for p in pairs} | {p.filename: p for p in pairs}
    missing = [i for i in ids if i not in by_id]
    if missing:
        from rscc.errors import DatasetError

        raise DatasetError(f"{root}: no pair with id {missing[0]!r} (ids are imgids or file names)")
    chosen = [by_id[i] for i in ids]
    rows = (len(chosen) + columns - 1) // columns
    text_height = 0.45 if caption is not None else 0.1
    figsize = (columns * 2.1 * panel, rows * (panel + text_height + 0.25))
    fig, axes = plt.subplots(rows, columns, figsize=figsize, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, pair in enumerate(chosen):
        img_a, img_b = (np.asarray(img) for img in load_pair_images(pair, root))
        gap = np.full((img_a.shape[0], max(2, img_a.shape[1] // 32), 3), 255, np.uint8)
        ax = axes.ravel()[k]
        ax.imshow(np.concatenate([img_a, gap, img_b], 1))
        ax.set_title(f"{pair.filename}   A | B", fontsize=7)
        if caption is not None:
            text = "\n".join(textwrap.wrap(" ".join(pair.tokens[caption]), width=int(22 * panel)))
            ax.text(0.5, -0.03, text, transform=ax.transAxes, ha="center", va="top", fontsize=7.5)
    fig.tight_layout()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig


def synthetic_examples(out: str | Path | None = None, seed: int = 0, changed: int = 5, unchanged: int = 1):
    """The figure of synthetic pairs (``figures/synthetic_examples.png``): the first ``changed``
    changed and ``unchanged`` unchanged pairs of a small 256 px synthetic set, first captions."""
    import tempfile

    from rscc.data.levircc import load_pairs
    from rscc.data.synth import make_synthetic
    from rscc.paths import REPO_ROOT

    out = REPO_ROOT / "figures" / "synthetic_examples.png" if out is None else out
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "synthetic", 40, size=256, seed=seed, progress=False)
        pairs = load_pairs(root)
        ids = [p.imgid for p in pairs if p.changed][:changed] + [p.imgid for p in pairs if not p.changed][:unchanged]
        return plot_pairs(root, ids, out=out)


def plot_attention(img_a, img_b, attention, caption: str, words: Sequence[str] | None = None,
                   transposed: bool = False, max_words: int = 8):
    """Before (A), after (B), and B under the cross-attention map, upsampled bilinearly.

    ``attention``: one map (s, s) indexed [row, column] of the image (``PairCaption.attention``),
    per-step maps (steps, s, s) (``CaptionAttention.attention``), or per-step weights over the
    visual tokens (steps, s*s) (a row of ``Generation.cross_attention``; ``transposed`` says
    whether the tokens come from transposed HSA maps, ``model.config.transpose_hsa_output``).
    Per-step maps are averaged for the third panel; with ``words`` (the word each step produced)
    the first ``max_words`` steps get a second row of panels of their own. Images are PIL images
    or (H, W, 3) arrays. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    import torch.nn.functional as F

    from rscc.generate import attention_grid

    maps = torch.as_tensor(attention).detach().float().cpu()
    if maps.dim() == 2 and maps.shape[0] != maps.shape[1]:  # (steps, s*s) in visual-token order
        if math.isqrt(maps.shape[1]) ** 2 != maps.shape[1]:
            raise ValueError(f"attention (steps, s*s) needs a square number of visual tokens, got {maps.shape[1]}")
        maps = attention_grid(maps, transposed)
    if maps.dim() == 2:
        maps = maps[None]
    if maps.dim() != 3 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"attention must be (s, s), (steps, s, s) or (steps, s*s); got {tuple(attention.shape)}")
    img_a, img_b = np.asarray(img_a), np.asarray(img_b)
    height, width = img_b.shape[:2]

    def heat(grid):  # (s, s) -> (H, W)
        return F.interpolate(grid[None, None], size=(height, width), mode="bilinear",
                             align_corners=False)[0, 0].numpy()

    shown = list(words[:max_words]) if words is not None and maps.shape[0] > 1 else []
    fig = plt.figure(figsize=(10, 4.2 if not shown else 6.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.5, 1.6]) if shown else (fig, None)
    axes = top.subplots(1, 3)
    for ax, image, title in zip(axes, (img_a, img_b, img_b), ("before (A)", "after (B)", "attention over B")):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    axes[2].imshow(heat(maps.mean(dim=0)), cmap="jet", alpha=0.5)
    top.suptitle(textwrap.fill(caption or "(empty caption)", width=100), fontsize=10)
    if shown:
        word_axes = bottom.subplots(1, max_words)
        for k, ax in enumerate(word_axes):
            ax.axis("off")
            if k < len(shown):
                ax.imshow(img_b)
                ax.imshow(heat(maps[k]), cmap="jet", alpha=0.5)
                ax.set_title(shown[k], fontsize=9)
        bottom.suptitle("attention of each step over B, titled with the word it produced", fontsize=9)
    return fig


def plot_architecture(config, title: str | None = None):
    """Box-and-arrow diagram of RSICRC (METHOD §2) with the tensor shapes of ``config`` on the arrows.

    ``config``: a ModelConfig, a RunConfig or a preset name; B stands for the batch of image
    pairs and V for the vocabulary size when the configuration leaves it unset. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from rscc.experiments.architecture import model_config
    from rscc.model.backbones import backbone_shape

    config = model_config(config, vocab_size=0) if not hasattr(config, "d_model") else config
    shape = backbone_shape(config)
    d, s, side, length = config.d_model, shape.feature_size, shape.image_size, config.max_len
    vocab = config.vocab_size if config.vocab_size > 0 else "V"
    styles = {"input": ("#f0f0f0", "#555555"), "visual": ("#dceaf7", "#2b6cb0"),
              "text": ("#fdebd9", "#c05621"), "loss": ("#fadada", "#b83232")}

    fig, ax = plt.subplots(figsize=(14.5, 6.6))
    ax.set_xlim(0, 19.1)
    ax.set_ylim(0.2, 7.4)
    ax.axis("off")

    def box(x, y, w, h, head, detail="", kind="visual"):
        face, edge = styles[kind]
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    fc=face, ec=edge, lw=1.4))
        if detail:
            ax.text(x, y + h / 2 - 0.14, head, ha="center", va="top", fontsize=10, weight="bold", color="#222")
            ax.text(x, y - 0.12, detail, ha="center", va="center", fontsize=8.3, color="#333", linespacing=1.25)
        else:
            ax.text(x, y, head, ha="center", va="center", fontsize=10, weight="bold", color="#222")
        return dict(left=x - w / 2, right=x + w / 2, top=y + h / 2, bottom=y - h / 2, x=x, y=y)

    def line(points, label=None, at=None, color="#444", offset=(0, 0.16), ha="center", va="bottom"):
        """Polyline through ``points`` ending in an arrow head; ``label`` near segment ``at``."""
        for p, q in zip(points[:-2], points[1:-1]):
            ax.plot([p[0], q[0]], [p[1], q[1]], color=color, lw=1.3, solid_capstyle="butt")
        ax.annotate("", xy=points[-1], xytext=points[-2],
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3, shrinkA=0, shrinkB=0, mutation_scale=13))
        if label:
            k = len(points) - 2 if at is None else at
            (x0, y0), (x1, y1) = points[k], points[k + 1]
            ax.text((x0 + x1) / 2 + offset[0], (y0 + y1) / 2 + offset[1], label, ha=ha, va=va, fontsize=7.8,
                    color="#1a1a1a", family="monospace", linespacing=1.2,
                    bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none", alpha=0.9))

    y_a, y_b, y_mid, y_txt = 6.35, 4.65, 3.05, 1.1
    names = {"RN50": "RemoteCLIP RN50", "ViT-B-32": "RemoteCLIP ViT-B/32", "ViT-L-14": "RemoteCLIP ViT-L/14",
             "resnet50": "ResNet-50 (ImageNet)", "resnet101": "ResNet-101 (ImageNet)", "tiny": "tiny ViT"}
    backbone_name = names.get(config.backbone, config.backbone)
    proj = shape.out_channels != d
    detail = f"{backbone_name}\n→ ({shape.out_channels}, {s}, {s})" + (f"\n+ 1×1 conv {shape.out_channels} → {d}"
                                                                       if proj else "")
    img_a = box(0.75, y_a, 1.3, 0.9, "image A", "(before)", "input")
    img_b = box(0.75, y_b, 1.3, 0.9, "image B", "(after)", "input")
    bb_a = box(4.35, y_a, 2.3, 1.3 if proj else 1.1, "backbone", detail)
    bb_b = box(4.35, y_b, 2.3, 1.3 if proj else 1.1, "backbone", detail)
    ax.text(4.35, (bb_a["bottom"] + bb_b["top"]) / 2, "shared weights (siamese)", ha="center", va="center",
            fontsize=8.3, style="italic", color="#2b6cb0")
    hsa = box(8.5, (y_a + y_b) / 2, 2.4, 2.75, f"HSA × {config.encoder_layers}",
              "+ 2-D positions\n\nimage block (width d)\non A and on B\n\npair block (width 2d)\non cat[a, b]")
    fusion = box(12.85, (y_a + y_b) / 2, 2.5, 1.75, "cosine-mask fusion",
                 "mask = cos(a, b) per position\n1×1 conv(cat[a, b] + mask)\n+ residual block")
    pooling = box(12.85, y_mid, 2.5, 1.1, "attention pooling", "1 learned query\n+ LayerNorm")
    nce = box(8.5, y_mid, 2.4, 1.1, "InfoNCE  L_con", "vis_emb vs text_emb\n(FNE / FNA)", "loss")
    caption = box(0.75, y_txt, 1.3, 0.9, "caption", "ids", "input")
    embed = box(4.35, y_txt, 2.3, 1.1, "token embedding", "+ positions", "text")
    unimodal = box(8.5, y_txt, 2.4, 1.1, f"unimodal × {config.decoder_layers}", "causal self-attention\n+ FF",
                   "text")
    multimodal = box(14.85, y_txt, 2.4, 1.4, f"multimodal × {config.decoder_layers}",
                     "self-attention\ncross-attention to\nvisual tokens, FF\n→ lm_head (tied)", "text")
    ce = box(18.25, y_txt, 1.5, 1.1, "caption CE", "L_cap", "loss")

    line([(img_a["right"], y_a), (bb_a["left"], y_a)], f"(B, 3, {side}, {side})")
    line([(img_b["right"], y_b), (bb_b["left"], y_b)], f"(B, 3, {side}, {side})")
    line([(bb_a["right"], y_a), (hsa["left"], y_a)], f"(B, {d}, {s}, {s})")
    line([(bb_b["right"], y_b), (hsa["left"], y_b)], f"(B, {d}, {s}, {s})")
    gap = 0.42
    line([(hsa["right"], fusion["y"] + gap), (fusion["left"], fusion["y"] + gap)], f"a (B, {d}, {s}, {s})")
    line([(hsa["right"], fusion["y"] - gap), (fusion["left"], fusion["y"] - gap)], f"b (B, {d}, {s}, {s})",
         offset=(0, -0.16), va="top")
    turn = multimodal["x"] + 0.6
    line([(fusion["right"], fusion["y"]), (turn, fusion["y"]), (turn, multimodal["top"])],
         f"visual tokens\n({s * s}, B, {d})", at=1, offset=(0.12, 0), ha="left", va="center")
    line([(pooling["x"], fusion["bottom"]), (pooling["x"], pooling["top"])], "visual tokens", offset=(0.12, 0),
         ha="left", va="center")
    line([(pooling["left"], y_mid), (nce["right"], y_mid)], f"vis_emb\n(B, {d})")
    line([(caption["right"], y_txt), (embed["left"], y_txt)], f"(B, {length})")
    line([(embed["right"], y_txt), (unimodal["left"], y_txt)], f"(B, {length}, {d})")
    line([(unimodal["right"], y_txt), (multimodal["left"], y_txt)], f"(B, {length}, {d})")
    line([(unimodal["x"], unimodal["top"]), (nce["x"], nce["bottom"])], f"text_emb (B, {d})\nat END token",
         offset=(0.12, 0), ha="left", va="center")
    line([(multimodal["right"], y_txt), (ce["left"], y_txt)], f"logits\n(B, {length}, {vocab})")
    ax.text(18.1, y_mid, "L = L_cap + λ·L_con", ha="center", va="center", fontsize=10, color="#b83232",
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#b83232"))
    ax.set_title(title or f"RSICRC with {backbone_name}: d = {d}, s = {s}, caption length L = {length}, "
                          f"vocabulary V = {vocab}; B = image pairs per batch", fontsize=11)
    fig.tight_layout()
    return fig


def plot_training_log(log_csv: str | Path, title: str | None = None):
    """The curves of a training's ``log.csv`` (seaborn): caption loss, contrastive loss and total
    loss of the training steps (averaged over each logging window) and of the validations (end of
    each epoch), against the optimiser step, and the learning rate. Returns the figure."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    log = pd.read_csv(log_csv)
    panels = [("cap_loss", "caption loss $L_{cap}$"), ("con_loss", "contrastive loss $L_{con}$"),
              ("loss", r"total loss $L_{cap} + \lambda L_{con}$")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    colours = sns.color_palette("deep")
    for ax, (column, name) in zip(axes, panels):
        sns.lineplot(data=log[log.split == "train"], x="step", y=column, color=colours[0], lw=1, label="train", ax=ax)
        sns.lineplot(data=log[log.split == "val"], x="step", y=column, color=colours[3], marker="o", label="val", ax=ax)
        ax.set(title=name, xlabel="optimiser step", ylabel="", yscale="log")
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # ticks at 0.2, 0.5, 1, 2, 5, ...
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    sns.lineplot(data=log[log.split == "train"], x="step", y="lr", color="grey", ax=axes[3])
    axes[3].set(title="learning rate", xlabel="optimiser step", ylabel="")
    axes[3].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
