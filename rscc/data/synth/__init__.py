"""Synthetic LEVIR-CC: bi-temporal aerial-looking scenes whose captions tell the truth.

A stand-in for the real dataset where it is absent (a user's clone, CI, quick experiments). It
writes the exact LEVIR-CC layout (METHOD §1.1)::

    ROOT/LevirCCcaptions.json
    ROOT/images/{train,val,test}/{A,B}/<split>_NNNNNN.png
    ROOT/synth.json            # generator parameters (marks a complete synthetic dataset)

How a pair is made
    1. A *scene* is a list of objects in a 256 x 256 world: roads (polylines with kerbs),
       houses (rotated rectangles with hip, gable or flat roofs, lawns, driveways, pools),
       tree crowns, parking lots, ponds, dirt tracks; the ground is a bareland/grass mix.
    2. The "after" scene is a copy of the "before" scene with one change applied (houses built
       or demolished, a road built or extended, trees cut or planted, a parking lot, a whole
       residential area). The change records what it did: how many houses, which road shape.
    3. Both scenes are drawn into label maps (PIL ImageDraw), coloured with numpy (palette,
       texture, shadows) under two different illuminations, with 1-2 px registration jitter
       and sensor noise, so that unchanged pairs are never pixel-identical.
    4. The location of the change (top, bottom left corner, centre ...) is *measured* on the
       difference of the two label maps, and the five captions are drawn from a grammar that
       uses LEVIR-CC's vocabulary, so a caption states only what the pixels show.
    5. A share of the captions of changed pairs (``stock_share``) are instead stock sentences,
       a few per change kind with a Zipf-like head, true of the change but without its location
       ("some roads and houses are built on bareland"): how often captions recur across pairs,
       and so how many false negatives a batch holds. The default, STOCK_SHARE, matches LEVIR-CC
       train's recurrence (:mod:`rscc.data.stats`); STOCK_SHARE_HIGH has most changed pairs
       share a handful of stock sentences. Captions are the last use of a pair's random numbers,
       so ``stock_share`` never changes an image.

Every pair uses its own ``numpy.random.Generator`` seeded with ``(seed, 1, index)``: the output
is the same bytes for the same seed, whatever the order or the number of workers.

The package, one job per module:

    scene     labels, the objects of a scene (Road, House, Scene), what a change did (Change), geometry
    layout    building blocks: roads through a region, houses along a road, trees, parking lots
    before    the "before" scene of each change kind, and the looks of unchanged pairs (a registry)
    changes   the change kinds: one registered function per kind, with its weight
    render    a scene drawn into label and shadow maps
    colour    label maps coloured: palette, texture, shadows, season, illumination, noise
    captions  the caption grammar, the stock sentences and their share, the measured location
    pair      one pair, made from its own random generator
    png       a fast PNG encoder
    writer    the dataset on disk: split plan, captions JSON, images, marker; reuse by parameters
"""
from rscc.data.synth.captions import STOCK_SHARE, STOCK_SHARE_HIGH, STOCK_ZIPF, captions_for, stock_sentences
from rscc.data.synth.changes import CHANGE_KINDS, ChangeKind, change_kind
from rscc.data.synth.pair import JITTER, MIN_CHANGED_FRACTION, SynthPair, make_pair
from rscc.data.synth.png import encode_png
from rscc.data.synth.scene import FRAME, WORLD, Change, House, Road, Scene
from rscc.data.synth.writer import (
    GENERATOR_VERSION,
    LEVIR_SPLIT_SIZES,
    MARKER_FILE,
    PlannedPair,
    default_root,
    ensure_synthetic,
    is_synthetic,
    make_synthetic,
    plan,
    split_sizes,
)

__all__ = [
    "CHANGE_KINDS", "FRAME", "GENERATOR_VERSION", "JITTER", "LEVIR_SPLIT_SIZES", "MARKER_FILE", "MIN_CHANGED_FRACTION",
    "STOCK_SHARE", "STOCK_SHARE_HIGH", "STOCK_ZIPF", "WORLD", "Change", "ChangeKind", "House", "PlannedPair", "Road",
    "Scene", "SynthPair", "captions_for", "change_kind", "default_root", "encode_png", "ensure_synthetic",
    "is_synthetic", "make_pair", "make_synthetic", "plan", "split_sizes", "stock_sentences",
]
