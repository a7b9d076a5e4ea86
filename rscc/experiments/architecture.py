"""Looking inside the model (notebook 02): shapes box by box, parameter counts, the faithful quirks,
and a caption with its cross-attention maps.

Shapes and counts are taken from the real modules built on PyTorch's ``meta`` device: tensors
there have a shape and no storage, so even the 351 M-parameter paper model is built and run in
a fraction of a second without allocating its weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rscc.config import ModelConfig, RunConfig, load_preset
from rscc.model.backbones import backbone_shape
from rscc.model.rsicrc import RSICRC, build_model, parameter_table, unused_parameter_count

PRESETS = ("paper-rn50", "paper-vit-b-32", "paper-vit-l-14", "resnet50-imagenet", "cpu-tiny")
# Size of the authors' LEVIR-CC vocabulary (rule "authors": words of all splits seen more than
# 5 times, plus the 4 specials). Presets leave vocab_size to the run; shapes and counts use this.
LEVIR_CC_VOCAB_SIZE = 468
QUIRKS = ("value_from_key", "transpose_hsa_output", "double_residual")
BLOCKS = ("backbone", "proj", "hsa", "fusion", "pooling", "decoder")


def model_config(config: ModelConfig | RunConfig | str, vocab_size: int = LEVIR_CC_VOCAB_SIZE) -> ModelConfig:
    """The model section of a preset name, a RunConfig or a ModelConfig; ``vocab_size`` fills an
    unset vocabulary size (presets leave it to the run)."""
    if isinstance(config, str):
        config = load_preset(config)
    if isinstance(config, RunConfig):
        config = config.model
    if config.vocab_size <= 0:
        config = dataclasses.replace(config, vocab_size=vocab_size)
    return config


def meta_model(config: ModelConfig | RunConfig | str, with_backbone: bool = True) -> RSICRC:
    """The model of ``config`` on the meta device (shapes only, no memory), in evaluation mode."""
    with torch.device("meta"):
        return build_model(model_config(config), load_pretrained=False, with_backbone=with_backbone).eval()


# ---------------------------------------------------------------------------- shapes
def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(n) for n in t.shape) + ")"


@torch.no_grad()
def shape_trace(config: ModelConfig | RunConfig | str, batch: int = 2, device: str = "meta"):
    """The tensors of one forward pass, box by box: DataFrame (stage, tensor, shape, dims).

    Runs the real modules (forward hooks record what they receive and return) on a batch of
    ``batch`` image pairs and captions of ``max_len`` tokens. ``dims`` names the axes: B pairs,
    C backbone channels, s feature-map side, d model width, L caption length, V vocabulary.
    On the default ``meta`` device nothing is computed, only shapes."""
    import pandas as pd

    config = model_config(config)
    with torch.device(device):
        model = build_model(config, load_pretrained=False).eval()
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()

    def add(stage, tensor, value, dims):
        rows.append((stage, tensor, _shape(value), dims))

    def hook(name, record):
        def run(module, inputs, output=None):  # output: None in a pre-hook
            if name not in seen:  # the siamese backbone runs twice; record its first call
                seen.add(name)
                record(inputs, output)
        return run

    layers = len(model.hsa.layers)
    records = {
        "backbone": lambda i, o: (add("backbone", "images A, B (each)", i[0], "(B, 3, H, W)"),
                                  add("backbone", "feature map (each image, shared weights)", o, "(B, C, s, s)")),
        "proj": lambda i, o: add("proj", "1x1 conv C -> d (each image)", o, "(B, d, s, s)"),
        "hsa.layers.0.image_block": lambda i, o: add("hsa", "tokens + positions, A and B stacked", i[0],
                                                     "(2B, s*s, d)"),
        "hsa": lambda i, o: add("hsa", "maps a, b (each)", o[0], "(B, d, s, s)" if not config.transpose_hsa_output
                                else "(B, d, s, s) transposed"),
        "fusion": lambda i, o: add("fusion", "visual tokens (sequence first)", o, "(s*s, B, d)"),
        "fusion.merge": lambda i, o: (add("fusion", "cat[a, b] + mask", i[0], "(B, 2d, s, s)"),
                                      add("fusion", "1x1 conv 2d -> d", o, "(B, d, s, s)")),
        "fusion.residual": lambda i, o: add("fusion", "residual block", o, "(B, d, s, s)"),
        "pooling": lambda i, o: add("pooling", "vis_emb (one learned query, LayerNorm)", o, "(B, d)"),
        "decoder.token_embedding": lambda i, o: (add("decoder", "caption ids", i[0], "(B, L)"),
                                                 add("decoder", "token embeddings (+ positions)", o, "(B, L, d)")),
        "decoder.lm_head": lambda i, o: add("decoder", "logits", o, "(B, L, V)"),
    }
    for k in range(layers):
        records[f"hsa.layers.{k}.image_block"] = _chain(
            records.get(f"hsa.layers.{k}.image_block"),
            lambda i, o, k=k: add("hsa", f"layer {k + 1}/{layers}: image block (width d) on A, B", o, "(2B, s*s, d)"))
        records[f"hsa.layers.{k}.pair_block"] = (
            lambda i, o, k=k: add("hsa", f"layer {k + 1}/{layers}: pair block (width 2d) on cat[a, b]", o,
                                  "(B, s*s, 2d)"))
    n_dec = len(model.decoder.unimodal_layers)
    for k in range(n_dec):
        records[f"decoder.unimodal_layers.{k}"] = (
            lambda i, o, k=k: add("decoder", f"unimodal layer {k + 1}/{n_dec} (causal self-attention)", o[0],
                                  "(B, L, d)"))
        records[f"decoder.multimodal_layers.{k}"] = (
            lambda i, o, k=k: (add("decoder", f"multimodal layer {k + 1}/{n_dec} (+ cross-attention)", o[0],
                                   "(B, L, d)"),
                               add("decoder", f"multimodal layer {k + 1}/{n_dec}: cross-attention weights", o[1],
                                   "(B, L, s*s)")))
    modules = dict(model.named_modules())
    # the cosine mask is computed inside the fusion box: recompute it from the box's inputs, first
    def mask(i, o):
        add("fusion", "cosine mask cos(a, b) over channels", F.cosine_similarity(i[0], i[1], dim=1), "(B, s, s)")

    handles = [modules["fusion"].register_forward_pre_hook(hook("fusion inputs", mask))]
    handles += [modules[name].register_forward_hook(hook(name, record))
                for name, record in records.items() if name in modules]
    try:
        shape = backbone_shape(config)
        images = torch.zeros(batch, 3, shape.image_size, shape.image_size, device=device)
        ids = torch.zeros(batch, config.max_len, dtype=torch.long, device=device)
        out = model(ids, None, img_a=images, img_b=images)
    finally:
        for h in handles:
            h.remove()
    # text_emb is read off the last unimodal layer (at END), not produced by a module of its own
    last_unimodal = max(i for i, r in enumerate(rows) if r[1].startswith("unimodal"))
    rows.insert(last_unimodal + 1, ("decoder", "text_emb (unimodal output at END)", _shape(out.text_emb), "(B, d)"))
    return pd.DataFrame(rows, columns=["stage", "tensor", "shape", "dims"])


def _chain(first, second):
    if first is None:
        return second
    return lambda i, o: (first(i, o), second(i, o))


# ---------------------------------------------------------------------------- parameters
def parameter_summary(presets: tuple[str, ...] | list[str] = PRESETS, vocab_size: int = LEVIR_CC_VOCAB_SIZE):
    """Parameters of each preset (rows): per block, total, trainable, and the value projections that
    faithful mode never uses. Counted on the meta device; tied embeddings count once."""
    import pandas as pd

    table = {}
    for name in presets:
        model = meta_model(model_config(name, vocab_size))
        rows = {block: (total, trainable) for block, total, trainable in parameter_table(model)}
        table[name] = {**{block: rows.get(block, (0, 0))[0] for block in BLOCKS},
                       "total": rows["total"][0], "trainable": rows["total"][1],
                       "unused (value proj.)": unused_parameter_count(model)}
    return pd.DataFrame.from_dict(table, orient="index")


# ---------------------------------------------------------------------------- faithful quirks
@torch.no_grad()
def quirk_effects(config: ModelConfig | RunConfig | str, batch: int = 2, seed: int = 0):
    """How much switching each faithful quirk off changes the outputs of the same weights.

    A random head of ``config`` (no backbone) encodes the same random backbone features with all
    quirks on and with one of them off. DataFrame indexed by quirk: the largest absolute
    difference of the visual tokens and of vis_emb, and the largest absolute visual token."""
    import pandas as pd

    config = model_config(config)
    shape = backbone_shape(config)
    torch.manual_seed(seed)
    faithful_config = dataclasses.replace(config, **{q: True for q in QUIRKS})
    faithful = build_model(faithful_config, load_pretrained=False, with_backbone=False).eval()
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, shape.out_channels, shape.feature_size, shape.feature_size, generator=g)
             for _ in range(2)]
    emb, toks = faithful.encode_features(*feats)
    rows = {}
    for quirk in QUIRKS:
        variant = build_model(dataclasses.replace(faithful_config, **{quirk: False}), load_pretrained=False,
                              with_backbone=False).eval()
        variant.load_state_dict(faithful.state_dict())  # same weights: only the computation differs
        emb_off, toks_off = variant.encode_features(*feats)
        rows[quirk] = {"max |Δ visual tokens|": (toks_off - toks).abs().max().item(),
                       "max |Δ vis_emb|": (emb_off - emb).abs().max().item(),
                       "max |visual token|": toks.abs().max().item()}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------------------- a caption and its attention
@dataclass
class CaptionAttention:
    """A generated caption with the cross-attention of every step, laid out as the image."""

    text: str  # the caption (authors' rule: the words between START and the last id)
    words: list[str]  # the id produced at each step, END included when reached
    attention: torch.Tensor  # (steps, s, s) [row, column] of the image; row j produced words[j]


@torch.no_grad()
def caption_attention(model: RSICRC, vocab, img_a: torch.Tensor, img_b: torch.Tensor) -> CaptionAttention:
    """Greedy caption of one pair (already transformed, (3, H, W) each) with the cross-attention of
    the last multimodal layer at each step (head-averaged)."""
    from rscc.generate import attention_grid, caption_text, greedy, id_to_word

    model.eval()
    device = next(model.parameters()).device
    _, vis_toks = model.encode_images(img_a[None].to(device), img_b[None].to(device))
    result = greedy(model, vis_toks)
    ids = result.sequences()[0]
    words = id_to_word(vocab)
    steps = result.cross_attention[0, :len(ids) - 1]  # (steps, s*s)
    grids = attention_grid(steps, model.config.transpose_hsa_output).cpu()
    return CaptionAttention(caption_text(ids, words), [words.get(i, "UNK") for i in ids[1:]], grids)


def demo_model(settings, root: str | Path, run: str = "03_joint_training", seed: int = 0):
    """(model, vocabulary, description) for the attention example of a study profile.

    The trained run ``settings.run_dir(run)`` when its best checkpoint exists; otherwise a
    randomly initialised cpu-tiny model (the profile's own size when it trains cpu-tiny) with
    the vocabulary of the dataset at ``root``."""
    from rscc.data.levircc import Vocabulary, load_pairs
    from rscc.device import resolve_device
    from rscc.errors import CheckpointError
    from rscc.runs import load_run

    device = resolve_device(settings.device)
    run_dir = settings.run_dir(run)
    try:
        model, _, vocab = load_run(run_dir, which="best", device=device)
        return model, vocab, f"trained run {run_dir.parent.name}/{run_dir.name} (best checkpoint)"
    except CheckpointError:
        pass
    config = load_preset("cpu-tiny", settings.overrides if settings.preset == "cpu-tiny" else None)
    vocab = Vocabulary.build(load_pairs(root), config.data.vocab_rule)
    config.model.vocab_size = len(vocab)
    torch.manual_seed(seed)
    model = build_model(config.model, load_pretrained=False).to(device).eval()
    return model, vocab, "cpu-tiny with random weights (untrained)"


def example_pair(root: str | Path):
    """(pair, image A, image B, source) of the first changed pair of ``../shared/data/levir-cc-mini``
    (three real LEVIR-CC pairs) when present, else of the dataset at ``root``."""
    from rscc.data.levircc import load_pair_images, load_pairs
    from rscc.paths import shared_dir

    mini = shared_dir() / "data" / "levir-cc-mini" if shared_dir() is not None else None
    source = Path(mini) if mini is not None and (mini / "LevirCCcaptions.json").is_file() else Path(root)
    pair = next(p for p in load_pairs(source) if p.changed)
    img_a, img_b = load_pair_images(pair, source)
    return pair, img_a, img_b, source
