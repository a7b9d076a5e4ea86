"""Looking inside the model (rscc.experiments.architecture) and the figures of notebook 02."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rscc.config import load_preset  # noqa: E402
from rscc.experiments import architecture  # noqa: E402
from rscc.experiments.profiles import SMOKE_MODEL


def shapes(trace) -> dict[str, str]:
    return dict(zip(trace["tensor"], trace["shape"]))


# ----------------------------------------------------------------------------- shape_trace
def test_shape_trace_of_cpu_tiny_gives_sequence_first_visual_tokens():
    trace = shapes(architecture.shape_trace("cpu-tiny", batch=2))
    assert trace["visual tokens (sequence first)"] == "(64, 2, 128)"  # (s*s, B, d), s = 128 / 16
    assert trace["vis_emb (one learned query, LayerNorm)"] == "(2, 128)"
    assert trace["text_emb (unimodal output at END)"] == "(2, 128)"


def test_shape_trace_of_cpu_tiny_projects_256_backbone_channels_to_d():
    trace = shapes(architecture.shape_trace("cpu-tiny"))
    assert trace["feature map (each image, shared weights)"] == "(2, 256, 8, 8)"
    assert trace["1x1 conv C -> d (each image)"] == "(2, 128, 8, 8)"


def test_shape_trace_of_paper_rn50_on_the_meta_device():
    trace = shapes(architecture.shape_trace("paper-rn50"))
    assert trace["images A, B (each)"] == "(2, 3, 224, 224)"
    assert trace["feature map (each image, shared weights)"] == "(2, 2048, 7, 7)"
    assert trace["layer 3/3: pair block (width 2d) on cat[a, b]"] == "(2, 49, 4096)"
    assert trace["cosine mask cos(a, b) over channels"] == "(2, 7, 7)"
    assert trace["multimodal layer 1/1: cross-attention weights"] == "(2, 41, 49)"
    assert trace["logits"] == "(2, 41, 468)"


def test_shape_trace_stacks_both_images_in_the_hsa_image_block():
    trace = shapes(architecture.shape_trace("cpu-tiny", batch=3))
    assert trace["layer 1/1: image block (width d) on A, B"] == "(6, 64, 128)"
    assert trace["layer 1/1: pair block (width 2d) on cat[a, b]"] == "(3, 64, 256)"


def test_shape_trace_has_one_image_and_one_pair_block_row_per_hsa_layer():
    trace = architecture.shape_trace("paper-vit-l-14")
    assert trace["tensor"].str.contains("image block").sum() == 3
    assert trace["tensor"].str.contains("pair block").sum() == 3
    assert shapes(trace)["visual tokens (sequence first)"] == "(256, 2, 2048)"


def test_shape_trace_lists_text_emb_right_after_the_unimodal_layers():
    tensors = list(architecture.shape_trace("cpu-tiny")["tensor"])
    assert tensors.index("text_emb (unimodal output at END)") == tensors.index(
        "unimodal layer 1/1 (causal self-attention)") + 1


# ----------------------------------------------------------------------------- parameters
def test_paper_rn50_has_350_815_072_parameters_of_which_37_748_736_unused_value_projections():
    row = architecture.parameter_summary(["paper-rn50"]).loc["paper-rn50"]
    assert row["total"] == 350_815_072
    assert row["unused (value proj.)"] == 37_748_736


def test_parameter_summary_blocks_add_up_to_the_total_for_every_preset():
    table = architecture.parameter_summary()
    assert list(table.index) == list(architecture.PRESETS)
    assert (table[list(architecture.BLOCKS)].sum(axis=1) == table["total"]).all()


def test_cpu_tiny_trains_everything_but_its_frozen_backbone():
    row = architecture.parameter_summary(["cpu-tiny"]).loc["cpu-tiny"]
    assert row["trainable"] == row["total"] - row["backbone"]


# ----------------------------------------------------------------------------- quirks
def test_switching_off_each_faithful_quirk_changes_the_visual_tokens():
    effects = architecture.quirk_effects("cpu-tiny")
    assert list(effects.index) == list(architecture.QUIRKS)
    assert (effects["max |Δ visual tokens|"] > 1e-3).all()


def test_quirk_effects_are_measured_against_the_faithful_model_even_from_a_non_faithful_config():
    config = load_preset("cpu-tiny").model
    config.double_residual = False
    assert architecture.quirk_effects(config).equals(architecture.quirk_effects("cpu-tiny"))


# ----------------------------------------------------------------------------- attention
def tiny_model(vocab_size: int = 12):
    from rscc.model.rsicrc import build_model

    config = load_preset("cpu-tiny", [*SMOKE_MODEL, f"model.vocab_size={vocab_size}", "model.max_len=10"])
    torch.manual_seed(0)
    return build_model(config.model, load_pretrained=False).eval()


def tiny_vocab(words: int = 8):
    from rscc.data.levircc import SPECIALS, Vocabulary

    return Vocabulary({**SPECIALS, **{f"w{i}": 4 + i for i in range(words)}})


def test_caption_attention_gives_one_normalised_map_per_generated_word():
    model, vocab = tiny_model(), tiny_vocab()
    images = torch.randn(2, 3, 64, 64)
    result = architecture.caption_attention(model, vocab, images[0], images[1])
    assert result.attention.shape == (len(result.words), 4, 4)  # s = 64 / 16
    torch.testing.assert_close(result.attention.sum(dim=(1, 2)), torch.ones(len(result.words)))


def test_demo_model_is_an_untrained_cpu_tiny_when_the_run_is_missing(tmp_path):
    from rscc.data.synth import ensure_synthetic
    from rscc.experiments.profiles import get_profile

    settings = get_profile("smoke", runs_dir=tmp_path / "runs")
    root = ensure_synthetic(tmp_path / "synthetic", 12, size=64, seed=0)
    model, vocab, source = architecture.demo_model(settings, root)
    assert "random" in source
    assert model.config.vocab_size == len(vocab)
    assert model.config.d_model == 32  # the smoke profile's size


def test_demo_model_loads_the_trained_run_when_its_best_checkpoint_exists(tmp_path):
    from rscc.experiments.profiles import get_profile
    from rscc.model.rsicrc import save_weights

    settings = get_profile("smoke", runs_dir=tmp_path / "runs")
    run_dir = settings.run_dir("03_joint_training")
    (run_dir / "best").mkdir(parents=True)
    trained, vocab = tiny_model(), tiny_vocab()
    config = load_preset("cpu-tiny")
    config.model = trained.config
    config.save(run_dir / "config.yaml")
    vocab.save(run_dir / "vocab.json")
    save_weights(trained, run_dir / "best" / "weights.safetensors")
    model, loaded_vocab, source = architecture.demo_model(settings, root=tmp_path / "unused")
    assert source.startswith("trained run")
    assert len(loaded_vocab) == len(vocab)
    torch.testing.assert_close(model.decoder.lm_head.weight, trained.decoder.lm_head.weight)


def test_example_pair_is_a_real_levir_cc_pair_when_shared_is_present(shared):
    pair, img_a, img_b, source = architecture.example_pair(root="unused")
    assert source.name == "levir-cc-mini"
    assert pair.filename == "train_000016.png"
    assert img_a.size == img_b.size == (256, 256)


# ----------------------------------------------------------------------------- figures
def test_plot_architecture_writes_the_shapes_of_the_configuration_on_its_arrows():
    fig = plot_architecture_of("paper-vit-l-14")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "visual tokens\n(256, B, 2048)" in texts
    assert "(B, 2048, 16, 16)" in texts
    assert any("1×1 conv 1024 → 2048" in t for t in texts)
    plt.close(fig)


def plot_architecture_of(preset: str) -> Figure:
    from rscc.plots import plot_architecture

    fig = plot_architecture(architecture.model_config(preset))
    assert isinstance(fig, Figure)
    return fig


@pytest.mark.parametrize("attention", [torch.rand(4, 4), torch.rand(5, 4, 4), torch.rand(5, 16)],
                         ids=["map", "maps per step", "token order per step"])
def test_plot_attention_accepts_a_map_maps_per_step_and_weights_in_token_order(attention):
    from rscc.plots import plot_attention

    image = torch.randint(0, 255, (40, 40, 3), dtype=torch.uint8).numpy()
    fig = plot_attention(image, image, attention, "a caption", words=["w"] * 5, transposed=True)
    assert isinstance(fig, Figure)
    plt.close(fig)


def test_plot_attention_rejects_a_map_that_is_not_square():
    from rscc.plots import plot_attention

    image = torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()
    with pytest.raises(ValueError, match="attention must be"):
        plot_attention(image, image, torch.rand(3, 4, 5), "caption")
