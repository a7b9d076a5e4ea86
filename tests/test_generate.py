"""Generation: the cached, batched decoders give the authors' greedy loop's ids; beam search."""
from __future__ import annotations

import itertools
import json

import pytest
import torch

from rscc.config import ModelConfig
from rscc.generate import (
    END_ID,
    START_ID,
    beam_search,
    caption_text,
    greedy,
    greedy_reference,
    id_to_word,
)
from rscc.model.rsicrc import build_model

FEATURE_CHANNELS, FEATURE_SIZE = 24, 4  # tiny backbone features fed in place of a backbone


def small_model(seed: int, *, prenorm: bool = False, learnable_positions: bool = False, layers: int = 1,
                vocab_size: int = 24, max_len: int = 20, end_scale: float = 12.0):
    """A random head (no backbone) whose captions differ from pair to pair and often stop early:
    the END row of the tied embedding and the cross-attention outputs are scaled up, as in the
    conformance fixture."""
    torch.manual_seed(seed)
    config = ModelConfig(backbone="tiny", tiny_width=FEATURE_CHANNELS, tiny_patch=8, image_size=8 * FEATURE_SIZE,
                         d_model=32, num_heads=4, h_dim=16, a_dim=32, encoder_layers=1, decoder_layers=layers,
                         vocab_size=vocab_size, max_len=max_len, prenorm=prenorm,
                         learnable_positions=learnable_positions, dropout=0.1)
    model = build_model(config, load_pretrained=False, with_backbone=False)
    with torch.no_grad():
        model.decoder.lm_head.weight[END_ID] *= end_scale
        for layer in model.decoder.multimodal_layers:
            layer.cross_attention.out_proj.weight *= 10
    return model.eval()


def features(seed: int, pairs: int = 8):
    g = torch.Generator().manual_seed(seed)
    shape = (pairs, FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE)
    scale = torch.linspace(0.5, 3.0, pairs).view(-1, 1, 1, 1)
    return torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale


def visual_tokens(model, seed: int, pairs: int = 8):
    feat_a, feat_b = features(seed, pairs)
    with torch.no_grad():
        return model.encode_features(feat_a, feat_b)[1]


def sequence_log_prob(model, vis_toks, ids: list[int]) -> float:
    """log p(ids[1:] | START, image) from one full forward pass (no pad mask, as at inference)."""
    return sequence_log_probs(model, vis_toks, [ids])[0]


def sequence_log_probs(model, vis_toks, sequences: list[list[int]]) -> list[float]:
    """The same for many sequences of one pair (vis_toks (s*s, 1, d)) in one pass: right padding
    does not change the earlier positions of a causal decoder, so it needs no mask."""
    width = max(map(len, sequences))
    ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in sequences])
    with torch.no_grad():
        logits, _ = model.decode(ids[:, :-1], None, vis_toks.expand(-1, len(sequences), -1))
    picked = logits.double().log_softmax(dim=-1).gather(2, ids[:, 1:, None])[..., 0]  # (n, width - 1)
    valid = torch.arange(width - 1)[None, :] < torch.tensor([len(seq) - 1 for seq in sequences])[:, None]
    return (picked * valid).sum(dim=1).tolist()


VARIANTS = {
    "post-norm, sinusoidal": dict(),
    "pre-norm, learnable positions": dict(prenorm=True, learnable_positions=True),
    "post-norm, 2+2 layers": dict(layers=2),
    "pre-norm, 2+2 layers, sinusoidal": dict(prenorm=True, layers=2),
}


@pytest.mark.parametrize("variant, seed", [(v, 0) for v in VARIANTS] + [("post-norm, sinusoidal", 1)])
def test_cached_greedy_gives_the_reference_loops_ids(variant, seed):
    model = small_model(seed, **VARIANTS[variant])
    feat_a, feat_b = features(seed)
    expected = greedy_reference(model, feat_a=feat_a, feat_b=feat_b)
    with torch.no_grad():
        _, vis_toks = model.encode_features(feat_a, feat_b)
    assert greedy(model, vis_toks).sequences() == expected


def test_random_models_stop_at_different_steps():
    """The models above exercise a batch whose sequences end at different steps, some not at all."""
    model = small_model(0)
    lengths = {len(ids) for ids in greedy(model, visual_tokens(model, 0)).sequences()}
    assert len(lengths) >= 3
    assert model.config.max_len + 1 in lengths  # one ran every step without END


def test_cached_greedy_matches_the_conformance_fixture(shared):
    from safetensors.torch import load_file

    from rscc.model.convert import load_authors_head

    fixture = shared / "fixtures" / "rsicrc-reference"
    model = load_authors_head(fixture)
    inputs = load_file(str(fixture / "inputs.safetensors"))
    expected = json.loads((fixture / "expected.json").read_text())["greedy_token_ids"]
    with torch.no_grad():
        _, vis_toks = model.encode_features(inputs["feat_before"], inputs["feat_after"])
    assert greedy(model, vis_toks).sequences() == expected


def test_generated_pad_ids_are_kept_and_attended_to():
    """No pad mask at inference: a generated PAD is a word like any other (the conformance
    fixture's first pair shows it) and the loop goes on."""
    model = small_model(0)
    with torch.no_grad():
        model.decoder.lm_head.weight[0] *= 4  # make PAD likely
    feat_a, feat_b = features(0)
    expected = greedy_reference(model, feat_a=feat_a, feat_b=feat_b)
    inner_pads = sum(ids[1:-1].count(0) for ids in expected)
    with torch.no_grad():
        vis_toks = model.encode_features(feat_a, feat_b)[1]
    assert inner_pads > 0
    assert greedy(model, vis_toks).sequences() == expected


def test_greedy_cross_attention_rows_equal_the_full_prefix_pass():
    model = small_model(1)
    vis_toks = visual_tokens(model, 1, pairs=3)
    result = greedy(model, vis_toks)
    for i, ids in enumerate(result.sequences()):
        with torch.no_grad():
            _, weights = model.decode(torch.tensor([ids[:-1]]), None, vis_toks[:, i:i + 1])
        torch.testing.assert_close(result.cross_attention[i, :len(ids) - 1], weights[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(result.attention_mean()[i], weights[0].mean(dim=0), atol=1e-5, rtol=1e-4)


def test_greedy_log_probs_are_the_sequence_log_probabilities():
    model = small_model(2)
    vis_toks = visual_tokens(model, 2, pairs=4)
    result = greedy(model, vis_toks)
    for i, ids in enumerate(result.sequences()):
        assert result.log_probs[i].item() == pytest.approx(sequence_log_prob(model, vis_toks[:, i:i + 1], ids), abs=1e-4)


@pytest.mark.parametrize("variant", ["post-norm, sinusoidal", "pre-norm, 2+2 layers, sinusoidal"])
def test_beam_of_one_is_greedy(variant):
    model = small_model(4, **VARIANTS[variant])
    vis_toks = visual_tokens(model, 4)
    assert beam_search(model, vis_toks, beam=1).sequences() == greedy(model, vis_toks).sequences()


def test_beam_search_scores_are_the_returned_sequences_log_probabilities():
    model = small_model(5)
    vis_toks = visual_tokens(model, 5, pairs=4)
    result = beam_search(model, vis_toks, beam=3)
    for i, ids in enumerate(result.sequences()):
        assert result.log_probs[i].item() == pytest.approx(sequence_log_prob(model, vis_toks[:, i:i + 1], ids), abs=1e-4)


def test_beam_search_is_at_least_as_probable_as_greedy_on_random_models():
    model = small_model(6)
    vis_toks = visual_tokens(model, 6)
    beam, best = beam_search(model, vis_toks, beam=3), greedy(model, vis_toks)
    assert bool((beam.log_probs >= best.log_probs - 1e-5).all())
    assert bool((beam.log_probs > best.log_probs + 1e-3).any())  # and finds better ones on some pairs


def test_a_beam_as_wide_as_every_prefix_finds_the_most_probable_caption():
    """Vocabulary of 5 and 3 steps: 125 continuations at most, so a beam of 125 is exhaustive."""
    vocab_size, steps = 5, 3
    model = small_model(7, vocab_size=vocab_size, max_len=steps, end_scale=3.0)
    vis_toks = visual_tokens(model, 7, pairs=3)
    result = beam_search(model, vis_toks, beam=vocab_size ** steps, max_len=steps)
    for i in range(vis_toks.shape[1]):
        candidates = [[START_ID, *tail[:tail.index(END_ID) + 1]] if END_ID in tail else [START_ID, *tail]
                      for tail in map(list, itertools.product(range(vocab_size), repeat=steps))]
        best = max(sequence_log_probs(model, vis_toks[:, i:i + 1], candidates))
        assert result.log_probs[i].item() == pytest.approx(best, abs=1e-4)


def test_length_penalty_favours_longer_captions():
    model = small_model(8)
    vis_toks = visual_tokens(model, 8)
    plain = beam_search(model, vis_toks, beam=4, length_penalty=0.0)
    penalised = beam_search(model, vis_toks, beam=4, length_penalty=2.0)
    assert int(penalised.lengths.sum()) > int(plain.lengths.sum())


def test_caption_text_drops_start_and_the_last_id_even_without_end():
    from rscc.data.levircc import Vocabulary

    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, "a": 4, "road": 5})
    assert caption_text([1, 4, 5, 3], vocab) == "a road"
    assert caption_text([1, 4, 0, 5, 5], id_to_word(vocab)) == "a PAD road"  # the authors' rule


def test_attention_grid_undoes_the_authors_transposed_token_order():
    from rscc.generate import attention_grid

    s, row, col = 4, 1, 3
    weights = torch.zeros(s * s)
    weights[col * s + row] = 1.0  # transposed maps: token n sits at column n // s, row n % s
    assert attention_grid(weights, transposed=True)[row, col] == 1.0
    assert attention_grid(weights, transposed=False)[col, row] == 1.0


# ---------------------------------------------------------------------------- rscc caption
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, make_tiny_run):
    """A run directory with a random tiny model (backbone included) and a small vocabulary."""
    from rscc.data.levircc import Vocabulary

    words = ["the", "road", "house", "is", "built", "no", "change"]
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{w: i + 4 for i, w in enumerate(words)}})
    return make_tiny_run(tmp_path_factory.mktemp("run"), vocab, end_boost=10)


def write_pair(folder, name, seed, size=(80, 60)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for side in ("A", "B"):
        (folder / side).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / side / name)


def test_caption_command_prints_the_caption_of_a_pair_and_saves_the_attention(tiny_run, tmp_path, capsys):
    from rscc.cli import main
    from rscc.data.images import open_rgb
    from rscc.generate import caption_pairs
    from rscc.runs import load_run

    write_pair(tmp_path, "p.png", 0)
    figure = tmp_path / "attention.png"
    status = main(["caption", str(tmp_path / "A" / "p.png"), str(tmp_path / "B" / "p.png"), "--run", str(tiny_run),
                   "--attention", str(figure), "--device", "cpu"])
    model, _, vocab = load_run(tiny_run)
    t = model.backbone.transform
    expected = caption_pairs(model, vocab, t(open_rgb(tmp_path / "A" / "p.png"))[None],
                             t(open_rgb(tmp_path / "B" / "p.png"))[None])
    assert status == 0
    assert capsys.readouterr().out.strip() == expected[0]
    assert figure.stat().st_size > 0


def test_caption_command_writes_one_json_line_per_pair_of_a_folder(tiny_run, tmp_path):
    from rscc.cli import main

    for k, name in enumerate(["x1.png", "x2.png", "x3.png"]):
        write_pair(tmp_path / "pairs", name, k)
    out = tmp_path / "captions.jsonl"
    status = main(["caption", "--pairs", str(tmp_path / "pairs"), "--run", str(tiny_run), "--out", str(out),
                   "--beam", "2", "--batch-size", "2", "--device", "cpu"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert status == 0
    assert [r["id"] for r in rows] == ["x1", "x2", "x3"]
    assert all(isinstance(r["caption"], str) for r in rows)


def test_caption_command_names_an_unpaired_file(tiny_run, tmp_path, capsys):
    from rscc.cli import main

    write_pair(tmp_path, "a.png", 0)
    (tmp_path / "B" / "a.png").rename(tmp_path / "B" / "b.png")
    status = main(["caption", "--pairs", str(tmp_path), "--run", str(tiny_run), "--device", "cpu"])
    assert status == 2
    assert "a.png" in capsys.readouterr().err


def test_load_run_without_a_checkpoint_is_a_checkpoint_error(tiny_run, tmp_path):
    from rscc.errors import CheckpointError
    from rscc.runs import load_run

    for name in ("config.yaml", "vocab.json"):
        (tmp_path / name).write_bytes((tiny_run / name).read_bytes())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(tmp_path)


def test_load_run_reads_the_top_level_weights_of_a_converted_run(tiny_run, tmp_path):
    from rscc.runs import load_run

    for name in ("config.yaml", "vocab.json"):
        (tmp_path / name).write_bytes((tiny_run / name).read_bytes())
    (tmp_path / "weights.safetensors").write_bytes((tiny_run / "best" / "weights.safetensors").read_bytes())
    converted, _, _ = load_run(tmp_path)
    trained, _, _ = load_run(tiny_run)
    assert torch.equal(converted.decoder.lm_head.weight, trained.decoder.lm_head.weight)
