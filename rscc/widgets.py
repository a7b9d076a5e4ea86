"""The change explorer: text → pair search over a gallery, and a pair's captions and attention.

:class:`ChangeExplorer` joins the two halves of RSICRC on one trained run: the retrieval half
ranks the pairs of a gallery index (:mod:`rscc.index`) by the cosine between a sentence and
each pair, and the captioning half describes a chosen pair (greedy, as the authors decode, and
beam search) and shows where the decoder looked in the after image.

The logic is in plain methods (:meth:`~ChangeExplorer.search`, :meth:`~ChangeExplorer.show_pair`,
:meth:`~ChangeExplorer.results_figure`); :meth:`~ChangeExplorer.widget` only lays them out as
ipywidgets, so everything runs and is tested without a browser::

    explorer = ChangeExplorer(run_dir, gallery_index(run_dir, root), root)
    explorer.search("many houses are built along the road", k=8)   # [{rank, id, score, ...}]
    explorer.show_pair("test_000012.png")                          # captions, references, figure
    explorer.widget()                                              # the interactive version
"""
from __future__ import annotations

import html
import io
import shutil
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from rscc.errors import RsccError
from rscc.index import INDEX_FILE, Embedder, GalleryIndex, build_index, index_info, search_text


# ----------------------------------------------------------------------------- the gallery
def gallery_index(run_dir: str | Path, root: str | Path, split: str = "test", out: str | Path | None = None,
                  which: str = "best", device: str = "auto", progress: bool = False) -> Path:
    """The index of ``split`` of the dataset at ``root`` embedded by the run, in
    ``run_dir/index-<split>`` unless ``out`` says otherwise; returns its folder.

    An index already there is reused (only pairs missing from it are embedded); one made by
    another model (the run was trained again) is derived data of the old weights and is deleted
    and rebuilt."""
    out = Path(out) if out is not None else Path(run_dir) / f"index-{split}"
    embedder = Embedder.from_run(run_dir, which, device)
    if (out / INDEX_FILE).is_file() and index_info(out)["model"]["id"] != embedder.identity["id"]:
        shutil.rmtree(out)
    build_index(root, embedder, out, split=split, progress=progress)
    return out


# ----------------------------------------------------------------------------- thumbnails
def pair_thumbnail(path_a: str | Path, path_b: str | Path, height: int = 112):
    """Before | after side by side, each scaled to ``height`` pixels, as one PIL image."""
    from PIL import Image

    from rscc.data.images import open_rgb

    sides = []
    for path in (path_a, path_b):
        image = open_rgb(path)
        width = max(1, round(image.width * height / image.height))
        sides.append(image.resize((width, height), Image.Resampling.BILINEAR))
    gap = max(2, height // 24)
    canvas = Image.new("RGB", (sides[0].width + gap + sides[1].width, height), "white")
    canvas.paste(sides[0], (0, 0))
    canvas.paste(sides[1], (sides[0].width + gap, 0))
    return canvas


def png_bytes(image) -> bytes:
    """A PIL image or a matplotlib figure as PNG bytes (what ``ipywidgets.Image`` shows)."""
    buffer = io.BytesIO()
    if hasattr(image, "savefig"):
        image.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    else:
        image.save(buffer, format="png")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the explorer
@dataclass
class PairDetail:
    """What the explorer shows for one pair."""

    id: str
    path_a: str
    path_b: str
    greedy: str  # the authors' greedy caption
    beam: str  # beam-search caption (``ChangeExplorer.beam`` hypotheses)
    references: list[str]  # the pair's captions in the dataset (empty without a dataset root)
    words: list[str]  # the word each greedy step produced (END included when reached)
    attention: torch.Tensor  # (steps, s, s) cross-attention of each greedy step, [row, column] of B
    figure: Any = field(default=None, repr=False)  # matplotlib figure: A, B, attention over B, per word


class ChangeExplorer:
    """Search a gallery with a sentence and look at any pair's captions and attention.

    ``run_dir``: a trained (or converted) run; ``index_dir``: a gallery index built by that run
    (:func:`gallery_index`, ``rscc index``); ``root``: the LEVIR-CC-layout dataset the gallery
    came from, for the reference captions (None: no references). ``beam``: the beam size of
    the second caption."""

    def __init__(self, run_dir: str | Path, index_dir: str | Path, root: str | Path | None = None,
                 which: str = "best", device: str = "auto", beam: int = 3):
        self.run_dir, self.root, self.beam = Path(run_dir), root, beam
        self.index = GalleryIndex.load(index_dir)
        self.embedder = Embedder.from_run(run_dir, which, device)
        if self.embedder.identity["id"] != self.index.model["id"]:
            raise RsccError(f"{self.index.where}: built by model {self.index.model['id'][:12]} "
                            f"({self.index.model.get('run_dir', '?')}), not by the {which} checkpoint of "
                            f"{run_dir}; rebuild it with gallery_index() or `rscc index`")
        self.pairs = {}
        if root is not None:
            from rscc.data.levircc import load_pairs

            self.pairs = {p.filename: p for p in load_pairs(root)}
        self._row = {pair_id: i for i, pair_id in enumerate(self.index.ids)}
        self.controls: SimpleNamespace | None = None  # the widgets, once widget() has built them

    def __repr__(self) -> str:
        return (f"ChangeExplorer(run {self.run_dir}, gallery of {len(self.index)} pairs, "
                f"{'references from ' + str(self.root) if self.root is not None else 'no references'})")

    # ------------------------------------------------------------------ logic
    def search(self, query: str, k: int = 8) -> list[dict[str, Any]]:
        """The ``k`` gallery pairs closest to ``query``, best first:
        ``[{rank, id, score, changed, reference, path_a, path_b}]`` (``changed`` and
        ``reference``, the first caption, are None without a dataset root)."""
        results = search_text(self.index, query, run_dir=self.embedder, k=k)
        for result in results:
            pair = self.pairs.get(result["id"])
            result["changed"] = pair.changed if pair is not None else None
            result["reference"] = pair.sentences[0] if pair is not None else None
        return results

    def show_pair(self, pair_id: str, figure: bool = True) -> PairDetail:
        """The greedy and beam captions of a gallery pair, its references and the cross-attention
        of the greedy caption over the after image (with its figure unless ``figure=False``)."""
        from rscc.data.images import open_rgb
        from rscc.generate import attention_grid, beam_search, caption_text, greedy, id_to_word

        if pair_id not in self._row:
            raise RsccError(f"{self.index.where}: no pair with id {pair_id!r} in the gallery")
        row = self._row[pair_id]
        path_a, path_b = self.index.paths_a[row], self.index.paths_b[row]
        img_a, img_b = open_rgb(path_a), open_rgb(path_b)
        model, vocab = self.embedder.model, self.embedder.vocab
        device = self.embedder.device
        with torch.inference_mode():
            transform = self.embedder.transform
            _, vis_toks = model.encode_images(transform(img_a)[None].to(device), transform(img_b)[None].to(device))
            first = greedy(model, vis_toks)
            best = beam_search(model, vis_toks, beam=self.beam)
        words = id_to_word(vocab)
        ids = first.sequences()[0]
        attention = attention_grid(first.cross_attention[0, :len(ids) - 1].float().cpu(),
                                   model.config.transpose_hsa_output)  # (steps, s, s)
        pair = self.pairs.get(pair_id)
        detail = PairDetail(pair_id, path_a, path_b, greedy=caption_text(ids, words),
                            beam=caption_text(best.sequences()[0], words),
                            references=list(pair.sentences) if pair is not None else [],
                            words=[words.get(i, "UNK") for i in ids[1:]], attention=attention)
        if figure:
            from rscc.plots import plot_attention

            detail.figure = plot_attention(img_a, img_b, attention, f"{pair_id} · greedy: {detail.greedy}",
                                           words=detail.words)
        return detail

    def results_figure(self, results: list[dict[str, Any]], columns: int = 4, query: str | None = None,
                       height: int = 112):
        """A grid of the results' before | after thumbnails titled with rank, score and id, and
        the first reference caption below each. Returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        rows = max(1, -(-len(results) // columns))
        fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.45 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, result in zip(axes.ravel(), results):
            ax.imshow(pair_thumbnail(result["path_a"], result["path_b"], height))
            ax.set_title(f"#{result['rank']}  {result['score']:.3f}  {result['id']}", fontsize=8)
            if result.get("reference"):
                ax.text(0.5, -0.04, textwrap.fill(result["reference"], 42), transform=ax.transAxes,
                        ha="center", va="top", fontsize=7)
        if query:
            fig.suptitle(f"“{query}”: top {len(results)} pairs (A | B), cosine score", fontsize=10)
        fig.tight_layout()
        return fig

    # ------------------------------------------------------------------ the widget
    def widget(self, query: str = "", k: int = 8, columns: int = 4):
        """The interactive explorer: a query box and a search button, a grid of result cards
        (thumbnail, score, a button that shows the pair), the pair's captions and attention
        figure, and a message area. ``query``: searched at once when not empty. Returns the
        ipywidgets box; its parts are in ``self.controls``."""
        import ipywidgets as w

        c = SimpleNamespace()
        c.query = w.Text(value=query, placeholder="describe a change, e.g. new houses along a road",
                         description="query", continuous_update=False, layout=w.Layout(width="60%"))
        c.k = w.BoundedIntText(value=min(k, len(self.index)), min=1, max=len(self.index), description="k",
                               layout=w.Layout(width="140px"))
        c.search = w.Button(description="search", button_style="primary", icon="search")
        c.status = w.HTML()
        c.grid = w.GridBox(layout=w.Layout(grid_template_columns=f"repeat({columns}, 260px)", grid_gap="6px"))
        c.detail_text = w.HTML()
        c.detail_figure = w.Image(format="png", layout=w.Layout(max_width="900px"))
        c.messages = w.Output()  # errors of the callbacks land here
        c.search.on_click(lambda _: self._search_clicked())
        c.query.observe(lambda _: self._search_clicked(), names="value")
        self.controls = c
        if query:
            self._search_clicked()
        return w.VBox([w.HBox([c.query, c.k, c.search]), c.status, c.grid,
                       w.HTML("<h4>selected pair</h4>"), c.detail_text, c.detail_figure, c.messages])

    def _search_clicked(self) -> None:
        c = self.controls
        with c.messages, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _clear(c.messages)
            try:
                results = self.search(c.query.value, c.k.value)
            except RsccError as exc:
                c.status.value = f"<b>error:</b> {html.escape(str(exc))}"
                c.grid.children = ()
                return
            c.grid.children = [self._card(r) for r in results]
            notes = "".join(f"<br><i>{html.escape(str(m.message))}</i>" for m in caught)
            c.status.value = f"{len(results)} pairs for “{html.escape(c.query.value)}”{notes}"

    def _card(self, result: dict[str, Any]):
        import ipywidgets as w

        thumbnail = w.Image(value=png_bytes(pair_thumbnail(result["path_a"], result["path_b"])), format="png",
                            layout=w.Layout(width="250px"))
        label = w.HTML(f"<b>#{result['rank']}</b> {result['score']:.3f} <code>{html.escape(result['id'])}</code>")
        show = w.Button(description="captions & attention", layout=w.Layout(width="250px"))
        show.on_click(lambda _, pair_id=result["id"]: self._show_clicked(pair_id))
        return w.VBox([thumbnail, label, show])

    def _show_clicked(self, pair_id: str) -> None:
        import matplotlib.pyplot as plt

        c = self.controls
        with c.messages:
            _clear(c.messages)
            detail = self.show_pair(pair_id)
            c.detail_text.value = detail_html(detail)
            c.detail_figure.value = png_bytes(detail.figure)
            plt.close(detail.figure)


def _clear(output) -> None:
    if output.outputs:  # (outside a kernel nothing is ever captured: nothing to clear)
        output.clear_output()


def detail_html(detail: PairDetail) -> str:
    """A pair's captions and references as a small HTML table."""
    rows = [("greedy", detail.greedy), ("beam", detail.beam)]
    rows += [(f"reference {i + 1}", ref) for i, ref in enumerate(detail.references)]
    body = "".join(f"<tr><th style='text-align:left'>{name}</th><td style='text-align:left'>"
                   f"{html.escape(text) or '<i>(empty)</i>'}</td></tr>" for name, text in rows)
    return f"<b>{html.escape(detail.id)}</b><table>{body}</table>"
