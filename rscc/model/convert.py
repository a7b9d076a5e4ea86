"""The authors' checkpoints → rscc (METHOD §8). The only module that knows the authors' names.

An authors' state dict (``pytorch_model.bin``) names the backbone ``encoder.encoder.net.<i>``
(``<i>`` indexes the children of the backbone's tower for ResNets; named children for ViTs) and
the head as in the table :data:`KEY_RULES`. :func:`authors_to_rscc` renames it; the inverse
:func:`rscc_to_authors` exists so that tests can write fixtures in the authors' format.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from rscc.config import ModelConfig, RunConfig, load_preset
from rscc.errors import CheckpointError, ConfigError, DatasetError
from rscc.model.backbones import CLIP_BACKBONES, TORCHVISION_BACKBONES, read_state_dict
from rscc.model.decoder import SinusoidalPositions
from rscc.model.rsicrc import RSICRC, TIED_KEY, build_model, load_state, save_weights
from rscc.paths import read_document

# (authors' key prefix, our key prefix); "{i}" stands for a layer number
KEY_RULES = [
    ("encoder.encoder.proj.", "proj."),
    ("encoder.encoder_trans.h_embedding.", "hsa.column_embedding."),  # indexed by column
    ("encoder.encoder_trans.w_embedding.", "hsa.row_embedding."),  # indexed by row
    *[(f"encoder.encoder_trans.selftrans.{{i}}.{n}.{a}", f"hsa.layers.{{i}}.{block}.{b}")
      for n, block in (("0", "image_block"), ("1", "pair_block"))
      for a, b in (("att.to_q.", "attention.query."), ("att.to_k.", "attention.key."),
                   ("att.to_v.", "attention.value."), ("att.to_out.0.", "attention.out."),
                   ("feedforward.net.", "feed_forward."), ("norm1.", "attention_norm."),
                   ("norm2.", "feed_forward_norm."))],
    ("encoder.Conv1.", "fusion.merge."),
    ("encoder.LN.left.", "fusion.residual.branch."),  # the authors' "LN" is the residual block
    ("encoder.att_pool_norm.", "pooling.norm."),
    ("encoder.att_pool.", "pooling.attention."),
    ("encoder.img_queries", "pooling.query"),
    ("decoder.tokens_embed.", "decoder.token_embedding."),
    ("decoder.lm_head.", "decoder.lm_head."),
    ("decoder.position_encoding.pos_emb.", "decoder.positions.embedding."),
    *[(f"decoder.{stack}.{{i}}.{a}", f"decoder.{ours}.{{i}}.{b}")
      for stack, ours in (("uni_decoder", "unimodal_layers"), ("cross_decoder", "multimodal_layers"))
      for a, b in (("self_attn.", "self_attention."), ("cross_attn.", "cross_attention."),
                   ("sa_norm.", "self_attention_norm."), ("mha_norm.", "cross_attention_norm."),
                   ("ff_norm.", "feed_forward_norm."), ("ff_linear1.", "feed_forward.0."),
                   ("ff_linear2.", "feed_forward.3."))],
]
AUTHORS_BACKBONE = "encoder.encoder.net."
AUTHORS_SINUSOID = "decoder.position_encoding.pe"


def _compile(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix).replace(re.escape("{i}"), r"(?P<i>\d+)"))


_FORWARD = [(_compile(a), b) for a, b in KEY_RULES]
_BACKWARD = [(_compile(b), a) for a, b in KEY_RULES]


def _rename(key: str, rules) -> str | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            return target.replace("{i}", m.groupdict().get("i") or "") + key[m.end():]
    return None


def _tower_children(config: ModelConfig) -> list[str]:
    """Names of the backbone tower's children in order (what the authors' ``net.<i>`` indexes)."""
    with torch.device("meta"):
        from rscc.model.backbones import build_backbone

        net = build_backbone(config, load_pretrained=False).net
    return [name for name, _ in net.named_children()]


def authors_to_rscc(state: dict[str, torch.Tensor], config: ModelConfig, source: str = "checkpoint"
                    ) -> dict[str, torch.Tensor]:
    """Rename an authors' state dict to our keys (backbone included when present)."""
    out: dict[str, torch.Tensor] = {}
    children = None
    for key, value in state.items():
        if key == AUTHORS_SINUSOID:  # a fixed table: check it, do not store it
            table = SinusoidalPositions(config.d_model, config.max_len).table.unsqueeze(0)  # (1, max_len, d)
            if tuple(value.shape) != tuple(table.shape):
                raise CheckpointError(f"{source}: shape mismatch for {key}: file {tuple(value.shape)}, model "
                                      f"{tuple(table.shape)} (d_model {config.d_model}, max_len {config.max_len})")
            if not torch.allclose(value.float(), table, atol=1e-5):
                raise CheckpointError(f"{source}: {key} is not the sinusoidal table (base 10000) of the model")
            continue
        if key.startswith(AUTHORS_BACKBONE):
            rest = key[len(AUTHORS_BACKBONE):]
            head, _, tail = rest.partition(".")
            if head.isdigit():  # ResNets: children of the tower by position
                if children is None:
                    children = _tower_children(config)
                if int(head) >= len(children):
                    raise CheckpointError(f"{source}: {key} indexes child {head} of a {config.backbone} "
                                          f"tower with {len(children)} children")
                head = children[int(head)]
            out[f"backbone.net.{head}.{tail}" if tail else f"backbone.net.{head}"] = value
            continue
        ours = _rename(key, _FORWARD)
        if ours is None:
            raise CheckpointError(f"{source}: unexpected key '{key}' (not a key of the authors' model)")
        out[ours] = value
    if config.tie_embeddings and "decoder.lm_head.weight" in out and TIED_KEY in out:
        if not torch.equal(out.pop(TIED_KEY), out["decoder.lm_head.weight"]):
            raise CheckpointError(f"{source}: tie_embeddings is true but decoder.tokens_embed.weight differs "
                                  "from decoder.lm_head.weight")
    return out


def rscc_to_authors(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under the authors' key names (ResNet backbones by child index)."""
    out: dict[str, torch.Tensor] = {}
    children = None
    for key, value in state.items():
        if key.startswith("backbone.net."):
            rest = key[len("backbone.net."):]
            head, _, tail = rest.partition(".")
            if config.backbone == "RN50" or config.backbone in TORCHVISION_BACKBONES:
                children = children or _tower_children(config)
                head = str(children.index(head))
            out[AUTHORS_BACKBONE + head + ("." + tail if tail else "")] = value
            continue
        theirs = _rename(key, _BACKWARD)
        if theirs is None:
            raise KeyError(f"no authors' name for {key}")
        out[theirs] = value
    if "decoder.lm_head.weight" in state and config.tie_embeddings:
        out["decoder.tokens_embed.weight"] = state["decoder.lm_head.weight"].clone()
    if not config.learnable_positions:
        out[AUTHORS_SINUSOID] = SinusoidalPositions(config.d_model, config.max_len).table.unsqueeze(0)
    return out


# ---------------------------------------------------------------------- configuration
_MODEL_FIELDS = {  # authors' config.json key -> ModelConfig field
    "backbone": "backbone", "d_model": "d_model", "max_len": "max_len", "encoder_layers": "encoder_layers",
    "decoder_layers": "decoder_layers", "num_heads": "num_heads", "h_dim": "h_dim", "a_dim": "a_dim",
    "dropout": "dropout", "learnable": "learnable_positions", "fine_tune": "fine_tune",
    "tie_embeddings": "tie_embeddings", "prenorm": "prenorm", "vocab_size": "vocab_size",
}
_REQUIRED = ("backbone", "d_model", "max_len", "encoder_layers", "decoder_layers", "num_heads", "h_dim", "a_dim")


def model_config_from_authors(cfg: dict, vocab_size: int | None = None, source: str = "config.json") -> ModelConfig:
    """A ModelConfig (all faithful quirks on) from the authors' config.json contents."""
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ConfigError(f"{source}: missing field(s) {missing} of the authors' configuration")
    values = {ours: cfg[theirs] for theirs, ours in _MODEL_FIELDS.items() if theirs in cfg}
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    if values.get("backbone") not in CLIP_BACKBONES + TORCHVISION_BACKBONES:
        raise ConfigError(f"{source}: backbone '{values.get('backbone')}' is not one of the authors' "
                          f"{CLIP_BACKBONES + TORCHVISION_BACKBONES}")
    values["pretrained"] = "remoteclip" if values["backbone"] in CLIP_BACKBONES else "imagenet"
    return ModelConfig(**values, value_from_key=True, transpose_hsa_output=True, double_residual=True)


def run_config_from_authors(cfg: dict, vocab_size: int, source: str = "config.json") -> RunConfig:
    """The authors' configuration as a RunConfig: their model, loss and training (paper-rn50 defaults)."""
    run = load_preset("paper-rn50")
    run.preset, run.overrides = None, []
    run.model = model_config_from_authors(cfg, vocab_size, source)
    loss = run.loss
    if "s-transformers" in cfg:
        loss.sentence_model = cfg["s-transformers"]
    if "s-threshold" in cfg:
        loss.theta = float(cfg["s-threshold"])
    loss.theta_tolerance = 0.0
    loss.fn_mode = "fna" if cfg.get("fna", False) else "fne"
    run.data.max_len = run.model.max_len
    return run


# ---------------------------------------------------------------------- entry points
def read_authors_config(path: str | Path) -> dict:
    path = Path(path)
    cfg = read_document(path, ConfigError, missing="configuration file not found")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a JSON object of the authors' constructor arguments")
    return cfg


def read_authors_vocab(path: str | Path) -> dict[str, int]:
    """The authors' flat ``{word: id}`` vocabulary, checked as :meth:`Vocabulary.load` checks it."""
    from rscc.data.levircc import Vocabulary

    try:
        return Vocabulary.load(path).word_to_id
    except DatasetError as exc:
        raise ConfigError(str(exc)) from None


def convert_checkpoint(checkpoint: str | Path, config_json: str | Path, vocab_json: str | Path,
                       out_dir: str | Path) -> Path:
    """Write ``weights.safetensors``, ``config.yaml`` and ``vocab.json`` of a run directory."""
    cfg = read_authors_config(config_json)
    vocab = read_authors_vocab(vocab_json)
    run = run_config_from_authors(cfg, len(vocab), source=str(config_json))
    state = authors_to_rscc(read_state_dict(Path(checkpoint)), run.model, source=str(checkpoint))
    model = build_model(run.model, load_pretrained=False)
    load_state(model, state, source=str(checkpoint))  # checks every key and shape against the configuration
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / "weights.safetensors")
    run.save(out_dir / "config.yaml")
    shutil.copyfile(vocab_json, out_dir / "vocab.json")
    return out_dir


def load_authors_head(fixture_dir: str | Path) -> RSICRC:
    """The head (everything but the backbone) of a conformance fixture, in evaluation mode."""
    fixture_dir = Path(fixture_dir)
    cfg = read_authors_config(fixture_dir / "config.json")
    config = model_config_from_authors(cfg, source=str(fixture_dir / "config.json"))
    if config.vocab_size <= 0:
        raise ConfigError(f"{fixture_dir / 'config.json'}: needs 'vocab_size'")
    model = build_model(config, load_pretrained=False, with_backbone=False)
    path = fixture_dir / "head_state_dict.safetensors"
    state = authors_to_rscc(read_state_dict(path), config, source=str(path))
    load_state(model, state, source=str(path))
    return model.eval()
