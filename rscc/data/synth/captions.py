"""The captions of a change: a grammar in LEVIR-CC's vocabulary, stock sentences that recur across
pairs, and the location of the change measured on the label maps."""
from __future__ import annotations

import numpy as np

from rscc.data.synth.scene import Change
from rscc.errors import DatasetError

# ----------------------------------------------------------------------------- captions
_LOCATION = {  # the longer "... of the scene" forms are the commonest in LEVIR-CC
    "top": ["at the top", "on the top side of the scene", "at the top of the scene", "in the upper part of the scene"],
    "bottom": ["at the bottom", "on the bottom side of the scene", "at the bottom of the scene",
               "in the lower part of the scene"],
    "left": ["on the left", "on the left side of the scene", "on the left side of the scene", "on the left side"],
    "right": ["on the right", "on the right side of the scene", "on the right side of the scene", "on the right side"],
    "top left": ["at the top left corner", "at the top left corner of the scene",
                 "at the top left corner of the scene", "in the upper left corner"],
    "top right": ["at the top right corner", "at the top right corner of the scene",
                  "at the top right corner of the scene", "in the upper right corner"],
    "bottom left": ["at the bottom left corner", "at the bottom left corner of the scene",
                    "at the bottom left corner of the scene", "in the lower-left corner"],
    "bottom right": ["at the bottom right corner", "at the bottom right corner of the scene",
                     "at the bottom right corner of the scene", "in the lower-right corner"],
    "center": ["in the center", "in the middle of the scene", "in the center of the scene"],
}
for _where, _forms in _LOCATION.items():
    if _where == "center":
        _forms += ["in the middle", "at the center of the image", "in the middle of the image"]
    elif " " in _where:
        _forms += [f"in the {_where} corner", f"at the {_where} of the scene", f"in the {_where} of the image"]
    else:
        _forms += [f"in the {_where} part of the image", f"on the {_where} of the image",
                   f"at the {_where} of the image"]
_GROUND_ON = {
    "bare": ["on the bareland", "on bareland", "in the desert", "in the open space"],
    "grass": ["on the grass", "on the meadow", "on the grassland"],
    "woods": ["in the woods", "in the forest"],
}
_GROUND_NOUN = {"bare": ["bareland", "desert", "open space", "bare land"], "grass": ["grass", "meadow", "grassland"],
                "woods": ["woods", "forest"]}
_ROAD_PHRASE = {
    "straight": ["a road", "a new road", "a straight road"],
    "curved": ["a curved road", "a winding road", "a road"],
    "t-shaped": ["a t-shaped road"],
    "cross": ["a crossroad", "two crossing roads", "two roads"],
}

# Templates. {q} quantity, {N} noun (agrees with q), {are}/{appear}/{have}/{is} verbs that agree,
# {loc} location phrase, {on} "on the bareland" ..., {g} ground noun, {road} road phrase,
# {qt} "some"/"many" trees. Templates with {loc} are used only when the location was measured.
_TEMPLATES = {
    "houses": [
        "{q} {N} {are} built along the road {on}", "{q} {N} {appear} along the road {on}",
        "{q} new {N} {are} built beside the road", "{q} {N} {have} been built by the road {on}",
        "{q} {N} {are} constructed on the {g} near the road", "{q} {N} {are} built {on}",
        "{q} {N} {appear} {on} beside the road", "{q} {N} {are} built next to the road",
        "{q} {N} {are} built {loc}", "{q} {N} {appear} {loc}", "{q} {N} {are} constructed {on} {loc}",
        "{q} new {N} {appear} {loc}", "{q} {N} {are} built beside the road {loc}",
        "the {g} {loc} is replaced by {q} {N}", "{q} {N} {have} been constructed along the road {on}",
        "{q} new {N} {are} built along the road {loc}",
    ],
    "houses+both": ["{q} {N} {are} built on both sides of the road", "{q} {N} {appear} on both sides of the road {on}"],
    "houses+row": [
        "a row of {N} is built along the road {on}", "a row of {N} appears beside the road",
        "a row of {N} is built {loc}", "a row of neatly arranged {N} is built along the road",
        "{q} {N} {are} built on one side of the road {on}",
    ],
    "houses+trees": [
        "some trees are removed and {q} {N} {are} built", "{q} {N} {are} built {on}",
        "{q} {N} replace the trees {loc}", "some trees are cut down and {q} {N} {appear} beside the road",
    ],
    "residential": [
        "some roads and houses are built {on}", "a residential area with many houses and roads appears",
        "many houses and roads appear {on}", "the {g} is replaced by a residential area",
        "{road} with {q} {N} appears {on}", "{q} {N} are built along the new road",
        "{road} is built and {q} {N} are built along it", "some roads and houses are built {loc}",
        "{road} with {q} {N} appears {loc}", "a residential area appears {on} {loc}",
        "{q} {N} and a road are built {loc}", "some roads and houses replace the {g}",
        "a residential area with many houses and roads appears {on}", "{q} neatly arranged {N} appear along a new road",
    ],
    "road": [
        "{road} {is} built {on}", "{road} {appear} {on}", "a new road appears {on}",
        "a road is built across the {g}", "{road} {appear} {loc}", "{road} {is} built {loc}",
        "a new road is built {on} {loc}", "{road} {is} built {on} {loc}", "a road is built across the {g} {loc}",
    ],
    "road+trees": ["some trees are removed and {road} {is} built", "{road} {is} built through the {g}"],
    "extend": [
        "the road is extended {on}", "the original road extends {on}", "the road is extended {loc}",
        "the original road is extended {loc}", "the road extends {on} {loc}", "the road becomes longer",
        "the road {on} is extended", "the original road is extended across the {g}",
        "the end of the road is extended {on}",
    ],
    "trees_removed": [
        "{qt} trees are removed from the woods", "{qt} trees in the woods have been cut down",
        "{qt} trees disappear {on}",
        "some plants are removed and the {g} appears", "the vegetation is removed and the {g} appears",
        "{qt} trees are removed {loc}",
        "the trees {loc} are cut down", "{qt} trees disappear {loc}", "the vegetation {loc} is removed",
        "part of the woods is cleared and the {g} appears", "{qt} trees {on} are removed",
        "{qt} trees have been cut down {loc}",
    ],
    "houses_removed": [
        "{q} {N} {are} removed", "{q} {N} beside the road {are} demolished", "{q} {N} {disappear} beside the road",
        "{q} {N} {have} been removed", "{q} {N} beside the road {are} removed", "{q} {N} {are} removed {loc}",
        "{q} {N} {disappear} {loc}", "{q} {N} {have} been demolished {loc}",
        "{q} {N} along the road {are} removed and the {g} appears",
    ],
    "trees_grow": [
        "{qt} trees are planted {on}", "{qt} trees are planted along the edge of the {g}",
        "{qt} trees appear {on}", "{qt} trees are planted {on}", "more trees grow {on}",
        "the vegetation {on} becomes lusher", "{qt} trees are planted {loc}", "{qt} trees appear {loc}",
        "the vegetation {loc} becomes lusher", "more trees grow {on} {loc}",
    ],
    "parking": [
        "a large building with a parking lot is built {on}", "a large building with a parking lot appears {on}",
        "a building and a parking lot appear {on}", "a parking lot is built beside the road",
        "a parking lot and a large building are constructed", "the {g} is replaced by a building and a parking lot",
        "a parking lot is built {loc}", "a large building with a parking lot appears {loc}",
        "a building with a parking lot is built beside the road {loc}",
    ],
}
LOCATION_SHARE = 0.7  # of the captions of a pair whose change has a location (LEVIR-CC: about 0.27 of all)
_SINGULAR = {"houses": "house", "villas": "villa", "buildings": "building", "trees": "tree"}


def _quantity(rng, n: int) -> str:
    if n == 1:
        return "a"
    if n == 2:
        return "two"
    if n == 3:
        return "three"
    if n <= 6:
        return str(rng.choice(["several", "some"] + (["four"] if n == 4 else [])))
    return str(rng.choice(["many", "some"]))


# Words that LEVIR-CC's annotators use interchangeably: a grammar sentence has each of these
# phrases replaced by a random member of its group, so that two pairs seldom get the same
# sentence by chance (recurrence should come from the stock sentences below, at a set rate).
_TREES = [
    ["many trees", "lots of trees", "a lot of trees", "a large number of trees", "plenty of trees"],
    ["some trees", "several trees", "a number of trees", "some of the trees"],
    ["the vegetation", "the plants", "the greenery", "the green vegetation"],
]
_SYNONYMS = {  # by change kind; "all" applies to every kind, first
    "all": [
        ["along the road", "beside the road", "by the road", "next to the road", "near the road",
         "alongside the road", "along the side of the road", "on the side of the road"],
        ["are built", "are constructed", "have been built", "have been constructed", "are erected", "are newly built"],
        ["is built", "is constructed", "has been built", "has been constructed", "is newly built"],
        ["a residential area", "a new residential area", "a large residential area", "a residential district",
         "a residential community"],
        ["is replaced by", "is covered by", "is turned into", "gives way to", "becomes"],
        ["appear", "emerge", "can be seen", "show up"],
        ["appears", "emerges", "can be seen", "shows up"],
        ["replace the", "take the place of the", "cover the", "are built on the"],
        ["neatly arranged", "well arranged", "orderly", "regularly arranged"],
    ],
    "trees_removed": _TREES + [["are removed", "are cut down", "have been removed", "have been cut down",
                                "are cleared", "are felled"]],
    "trees_grow": _TREES + [["are planted", "have been planted", "are newly planted", "grow up", "have grown"],
                            ["becomes lusher", "becomes denser", "grows thicker", "becomes greener"]],
    "extend": [["the road", "the original road", "the existing road", "the old road"],
               ["becomes longer", "gets longer", "is lengthened", "grows longer"]],
    "houses_removed": [["are removed", "are demolished", "have been removed", "have been demolished",
                        "are torn down", "are pulled down"]],
}
_ADJECTIVES = {"houses": ["", "", "small", "detached", "new"], "villas": ["", "", "small", "detached", "new"],
               "buildings": ["", "", "small", "large", "new"]}


def _vary(text: str, kind: str, rng) -> str:
    for group in _SYNONYMS["all"] + _SYNONYMS.get(kind, []):
        for phrase in group:
            if f" {phrase} " in f" {text} ":
                text = f" {text} ".replace(f" {phrase} ", f" {group[int(rng.integers(len(group)))]} ", 1).strip()
                break
    return text


# Stock sentences: the handful of sentences annotators write again and again ("some roads and
# houses are built on bareland" is the first caption of 112 of LEVIR-CC's 3,407 changed train
# pairs). Each is true of every change it is allowed for: (sentence, conditions) with conditions
# on the ground, the noun, the count (lo, hi) and the road shape. Listed by rank: a caption drawn
# from the stock takes the r-th applicable sentence with weight 1 / r ** STOCK_ZIPF.
_MANY, _SOME = (7, None), (4, None)
_STOCK: dict[str, list[tuple[str, dict]]] = {
    "residential": [
        ("some roads and houses are built on bareland", {"ground": "bare"}),
        ("a residential area with many houses and roads appears", {"count": _MANY}),
        ("some roads and houses are built on the grass", {"ground": "grass"}),
        ("many houses and roads are built", {"count": _MANY}),
        ("a residential area appears", {}),
        ("some houses and roads appear", {}),
        ("a new residential area is built on the bareland", {"ground": "bare"}),
        ("some villas and roads are built", {"noun": "villas"}),
    ],
    "houses": [
        ("some houses are built along the road", {"noun": "houses", "count": _SOME}),
        ("many houses are built along the road", {"noun": "houses", "count": _MANY}),
        ("two houses are built beside the road", {"noun": "houses", "count": (2, 2)}),
        ("a house is built beside the road", {"noun": "houses", "count": (1, 1)}),
        ("some new houses are built along the road", {"noun": "houses", "count": _SOME}),
        ("three houses are built along the road", {"noun": "houses", "count": (3, 3)}),
        ("some villas are built along the road", {"noun": "villas", "count": _SOME}),
        ("two villas are built beside the road", {"noun": "villas", "count": (2, 2)}),
        ("a villa is built beside the road", {"noun": "villas", "count": (1, 1)}),
        ("some buildings are built along the road", {"noun": "buildings", "count": _SOME}),
        ("a building is built beside the road", {"noun": "buildings", "count": (1, 1)}),
        ("two buildings are built beside the road", {"noun": "buildings", "count": (2, 2)}),
        ("several houses are built on the bareland", {"noun": "houses", "count": _SOME, "ground": "bare"}),
        ("some trees are cut down and houses are built", {"ground": "woods", "count": (2, None)}),
        ("houses are built beside the road", {"count": (2, None), "noun": "houses"}),
        ("new houses appear beside the road", {"count": (2, None), "noun": "houses"}),
    ],
    "road": [
        ("a road is built", {"shape": ("straight", "curved", "t-shaped")}),
        ("a new road appears", {"shape": ("straight", "curved", "t-shaped")}),
        ("a road is built on the bareland", {"ground": "bare", "shape": ("straight", "curved", "t-shaped")}),
        ("two roads are built", {"shape": ("cross",)}),
        ("a curved road is built", {"shape": ("curved",)}),
        ("a road is built across the grass", {"ground": "grass", "shape": ("straight", "curved", "t-shaped")}),
        ("a new road is built", {"shape": ("straight", "curved", "t-shaped")}),
    ],
    "extend": [
        ("the road is extended", {}), ("the original road is extended", {}), ("the road becomes longer", {}),
        ("the road extends", {}), ("the original road extends", {}),
    ],
    "trees_removed": [
        ("some trees are removed", {}), ("many trees are removed", {"count": (15, None)}),
        ("some trees are cut down", {}), ("the vegetation is removed", {}), ("some trees disappear", {}),
        ("trees are removed", {}),
    ],
    "trees_grow": [
        ("more trees appear", {}), ("some trees are planted", {}), ("the vegetation becomes lusher", {}),
        ("many trees are planted", {"count": (15, None)}), ("more trees grow", {}), ("trees are planted", {}),
    ],
    "houses_removed": [
        ("some houses are removed", {"noun": "houses", "count": _SOME}),
        ("a house is removed", {"noun": "houses", "count": (1, 1)}),
        ("two houses are removed", {"noun": "houses", "count": (2, 2)}),
        ("some buildings are removed", {"noun": "buildings", "count": _SOME}),
        ("a building is demolished", {"noun": "buildings", "count": (1, 1)}),
        ("the houses are removed", {"noun": "houses", "count": (2, None)}),
        ("some villas are removed", {"noun": "villas", "count": _SOME}),
        ("the buildings are demolished", {"noun": "buildings", "count": (2, None)}),
        ("houses disappear", {"noun": "houses", "count": (2, None)}),
        ("buildings disappear", {"noun": "buildings", "count": (2, None)}),
        ("a villa is removed", {"noun": "villas", "count": (1, 1)}),
        ("villas disappear", {"noun": "villas", "count": (2, None)}),
    ],
    "parking": [
        ("a parking lot is built", {}), ("a large building with a parking lot is built", {}),
        ("a building and a parking lot appear", {"count": (1, 1)}), ("a parking lot appears", {}),
        ("a parking lot and a building are built", {}),
    ],
}
# How readily each kind's pairs get stock sentences, relative to STOCK_SHARE: residential areas
# and houses along a road are LEVIR-CC's stock descriptions.
_STOCK_AFFINITY = {"residential": 2.5, "houses": 1.0, "road": 0.8, "extend": 0.8, "trees_removed": 0.6,
                   "trees_grow": 0.6, "houses_removed": 0.6, "parking": 0.8}
STOCK_ZIPF = 1.8
# LEVIR-CC's annotators differ: among changed train pairs, the k-th captions recur across pairs in
# 19.5, 31.1, 18.7, 46.5 and 17.2 % of them, so the stock share is weighted by caption position
# (these shares over their mean).
_POSITION_WEIGHT = (0.73, 1.17, 0.70, 1.75, 0.65)
STOCK_SHARE = 0.25  # the default: LEVIR-CC train's caption recurrence (see rscc.data.stats)
STOCK_SHARE_HIGH = 1.0  # most changed pairs share a handful of stock sentences


def _applies(change: Change, conditions: dict) -> bool:
    lo, hi = conditions.get("count", (0, None))
    return (conditions.get("ground", change.ground) == change.ground
            and conditions.get("noun", change.noun) == change.noun
            and change.count >= lo and (hi is None or change.count <= hi)
            and (change.road_shape or "straight") in conditions.get("shape", (change.road_shape or "straight",)))


def stock_sentences(change: Change) -> list[str]:
    """The stock sentences that are true of ``change``, by rank."""
    return [sentence for sentence, conditions in _STOCK[change.kind] if _applies(change, conditions)]


def captions_for(change: Change, rng, stock_share: float = STOCK_SHARE) -> list[list[str]]:
    """Five different captions (token lists) that state ``change`` truthfully.

    The k-th caption is, with probability ``stock_share`` times the kind's affinity times the
    position's weight (at most 1), one of the kind's unused stock sentences (Zipf-weighted by
    rank), else a sentence of the grammar."""
    if not 0.0 <= stock_share <= 1.0:
        raise DatasetError(f"synthetic captions: stock_share must lie in [0, 1] (got {stock_share})")
    kind = change.kind
    stock = stock_sentences(change)
    share = stock_share * _STOCK_AFFINITY[kind]
    templates = list(_TEMPLATES[kind])
    if kind == "houses":
        if change.both_sides and change.count >= 2:
            templates += _TEMPLATES["houses+both"]
        if not change.both_sides and change.count >= 3:
            templates += _TEMPLATES["houses+row"]
        if change.trees_removed >= 3:
            templates += _TEMPLATES["houses+trees"]
    if kind == "road" and change.ground == "woods":
        templates += _TEMPLATES["road+trees"]
    if change.count < 7:  # "many houses" only when there are many
        templates = [t for t in templates if "many" not in t.split()]
    plain = [t for t in templates if "{loc}" not in t]
    located = [t for t in templates if "{loc}" in t] if change.location else []
    sentences: list[str] = []
    for _ in range(200):
        if len(sentences) == 5:
            break
        unused = [s for s in stock if s not in sentences]
        if unused and rng.random() < min(1.0, share * _POSITION_WEIGHT[len(sentences)]):
            weights = np.array([1.0 / (stock.index(s) + 1) ** STOCK_ZIPF for s in unused])
            sentences.append(unused[int(rng.choice(len(unused), p=weights / weights.sum()))])
            continue
        pool = located if located and rng.random() < LOCATION_SHARE else plain
        template = pool[int(rng.integers(len(pool)))]
        n = change.count
        road_phrases = _ROAD_PHRASE.get(change.road_shape or "straight", ["a road"])
        if kind != "road":  # "{road} with many houses appears": keep the road singular
            road_phrases = [r for r in road_phrases if not r.startswith("two")] or ["a road"]
        road = str(rng.choice(road_phrases))
        if kind == "road":
            singular = not road.startswith("two")
        else:
            singular = n == 1 and "a row of" not in template
        noun = _SINGULAR[change.noun] if singular else change.noun
        if "new {N}" not in template and "neatly arranged {N}" not in template:
            adjective = _ADJECTIVES.get(change.noun, [""])[int(rng.integers(5))]
            noun = f"{adjective} {noun}".strip()
        text = template.format(
            q="a" if "a row of" in template else _quantity(rng, n),
            N=noun,
            are="is" if singular else "are",
            **{"is": "is" if singular else "are"},
            appear="appears" if singular else "appear",
            disappear="disappears" if singular else "disappear",
            have="has" if singular else "have",
            loc=str(rng.choice(_LOCATION[change.location])) if change.location else "",
            on=str(rng.choice(_GROUND_ON[change.ground])),
            g=str(rng.choice(_GROUND_NOUN[change.ground])),
            road=road,
            qt="many" if n >= 15 else "some",
        )
        text = _vary(" ".join(text.split()), kind, rng)
        if text not in sentences:
            sentences.append(text)
    return [s.split() for s in sentences]


def _measure_location(changed: np.ndarray) -> str | None:
    """Where the changed pixels lie: a corner, a side, the centre, or None (spread out)."""
    total = int(changed.sum())
    if total == 0:
        return None
    h, w = changed.shape
    top, left = changed[: h // 2], changed[:, : w // 2]
    f_top, f_left = top.sum() / total, left.sum() / total
    quads = {
        "top left": changed[: h // 2, : w // 2].sum() / total,
        "top right": changed[: h // 2, w // 2 :].sum() / total,
        "bottom left": changed[h // 2 :, : w // 2].sum() / total,
        "bottom right": changed[h // 2 :, w // 2 :].sum() / total,
    }
    corner = max(quads, key=quads.get)
    if quads[corner] >= 0.85:
        return corner
    for name, f in (("top", f_top), ("bottom", 1 - f_top), ("left", f_left), ("right", 1 - f_left)):
        if f >= 0.85:
            return name
    if changed[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].sum() / total >= 0.85:
        return "center"
    return None
