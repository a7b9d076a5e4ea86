"""Captioning metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and S*m, as LEVIR-CC tables report them.

Every number comes from pycocoevalcap's own scorer classes (``Bleu``, ``Meteor``, ``Rouge``,
``Cider``); nothing here re-implements a metric. Scores are ×100, as in the literature.

- **CIDEr-D.** pycocoevalcap 1.2's ``Cider`` *is* CIDEr-D: Gaussian length penalty with σ = 6,
  clipped n-gram counts (``min(hyp, ref)``), ×10, document frequencies taken from the
  references of the scored set. It is reported as ``CIDEr-D``. Because the document
  frequencies come from the scored set, the changed-only score is not a subset average.
- **BLEU** is corpus BLEU with the "closest" reference length; **ROUGE-L** uses β = 1.2.
- **METEOR** runs Meteor 1.5 in a Java subprocess (``java -jar meteor-1.5.jar … -norm``); it is
  optional (``meteor=False``) and the process is always closed when scoring ends.
- **S*m** = mean(BLEU-4, METEOR, ROUGE-L, CIDEr-D); it needs METEOR and is None without it.
- **SPICE** needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first use.
  It is reported only when it actually runs; otherwise the result says why it is unavailable.

Two reference protocols (each result names its own):

``tokens``
    Lower-case, punctuation removed, on both sides: what every LEVIR-CC paper reports. The
    normalisation (:func:`normalise_tokens`) reproduces the JSON ``tokens`` field — hyphenated
    words such as ``t-shaped`` stay one token — and leaves those tokens unchanged when they are
    given joined by spaces. It is done in Python rather than with pycocoevalcap's
    ``PTBTokenizer`` (a Java process): on the published CCExpert-7B test predictions both give
    the same scores to the second decimal (BLEU-4 65.48, CIDEr-D 143.28, the published figures).
``raw``
    The authors' code (METHOD §6.2): strings are scored verbatim (the scorers split on white space). With
    the JSON ``raw`` references (``" there is no difference ."``) the ``.`` is a reference
    token that a model's lower-case, punctuation-free caption never produces, which lowers
    BLEU, ROUGE-L and CIDEr-D even for a perfect caption.
"""
from __future__ import annotations

import contextlib
import subprocess
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from rscc.errors import RsccError
from rscc.text import NO_CHANGE_SENTENCES as NO_CHANGE_CAPTIONS  # noqa: F401  (re-exported)
from rscc.text import is_no_change, normalise_tokens  # noqa: F401  (re-exported)

PROTOCOLS = ("tokens", "raw")

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "S*m")

# What the "always no change" floor answers (METHOD §6.5).
NO_CHANGE_SENTENCE = "the scene is the same as before"

def prepare(sentence: str, protocol: str) -> str:
    """A sentence as the scorers see it under `protocol` ("tokens" or "raw")."""
    if protocol == "tokens":
        return normalise_tokens(sentence)
    if protocol == "raw":
        # verbatim, as the authors' code scores it (ROUGE-L splits on " ", so even the leading
        # space of a JSON `raw` string counts); only line breaks would break METEOR's protocol
        return sentence.replace("\n", " ").replace("\r", " ")
    raise RsccError(f"unknown reference protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


class MeteorProcess:
    """pycocoevalcap's ``Meteor`` scorer (a Java subprocess) that is closed when leaving ``with``.

    pycocoevalcap only stops the process in ``__del__``; here it is stopped explicitly, also
    when scoring fails, and a missing or broken Java gives an error that says what to do.
    """

    def __init__(self) -> None:
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            self._meteor = Meteor()
        except FileNotFoundError as exc:
            raise RsccError("METEOR needs Java (`java` was not found on PATH); "
                            "install Java 8+ or score without METEOR (meteor=False, --no-meteor)") from exc

    def compute_score(self, gts: dict, res: dict) -> float:
        try:
            score, _ = self._meteor.compute_score(gts, res)
        except (ValueError, BrokenPipeError) as exc:  # the jar died or answered nonsense
            process = self._meteor.meteor_p
            process.kill()
            process.wait()
            message = process.stderr.read().decode(errors="replace").strip()[-500:]
            self.close()
            raise RsccError(f"the METEOR Java process failed: {message or exc}; "
                            "score without METEOR (meteor=False, --no-meteor)") from exc
        return score

    def close(self) -> None:
        """Stop the Java process (idempotent)."""
        process = self._meteor.meteor_p
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            with contextlib.suppress(OSError):  # stdin may hold unflushed bytes for a dead process
                stream.close()
        if self._meteor.lock.locked():  # left held by a failed compute_score: __del__ would hang
            self._meteor.lock.release()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here (None when its jars are all present)."""
    import pycocoevalcap

    spice_dir = Path(pycocoevalcap.__path__[0]) / "spice"
    needed = [spice_dir / "spice-1.0.jar", spice_dir / "lib" / "stanford-corenlp-3.6.0.jar",
              spice_dir / "lib" / "stanford-corenlp-3.6.0-models.jar"]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        return (f"{', '.join(missing)} missing from {spice_dir} (pycocoevalcap downloads the "
                "Stanford CoreNLP jars on first use; this needs the network)")
    return None


def _spice_score(gts: dict, res: dict) -> float:
    from pycocoevalcap.spice.spice import Spice

    # SPICE's JSON wants string ids, and sorts them
    score, _ = Spice().compute_score({str(k): v for k, v in gts.items()}, {str(k): v for k, v in res.items()})
    return float(score)


def _corpus_scores(gts: dict, res: dict, meteor: MeteorProcess | None) -> dict:
    """×100 scores of one set of {id: [hypothesis]} against {id: [references]}."""
    if not gts:
        return {**{name: None for name in METRICS}, "n": 0}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n + 1}": 100 * float(bleu[n]) for n in range(4)}
    scores["METEOR"] = 100 * meteor.compute_score(gts, res) if meteor is not None else None
    scores["ROUGE-L"] = 100 * float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr-D"] = 100 * float(Cider().compute_score(gts, res)[0])
    parts = [scores[name] for name in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")]
    scores["S*m"] = None if None in parts else sum(parts) / 4
    scores["n"] = len(gts)
    return scores


def _check_inputs(predictions: Mapping, references: Mapping, changed: Mapping | None) -> None:
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise RsccError(f"predictions and references must have the same ids: {len(missing)} ids lack a "
                        f"prediction (e.g. {missing[:3]}), {len(extra)} predictions lack references "
                        f"(e.g. {extra[:3]})")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise RsccError(f"references of id {key!r} must be a non-empty list of strings, got {refs!r}")
        if not isinstance(predictions[key], str):
            raise RsccError(f"prediction of id {key!r} must be a string, got {predictions[key]!r}")
    if changed is not None:
        lacking = [k for k in references if k not in changed]
        if lacking:
            raise RsccError(f"the change flags lack {len(lacking)} ids (e.g. {lacking[:3]})")


def score_captions(predictions: Mapping[Hashable, str], references: Mapping[Hashable, list[str]],
                   protocol: str = "tokens", changed: Mapping[Hashable, bool] | None = None,
                   meteor: bool | MeteorProcess = True, spice: bool = True) -> dict:
    """Score one caption per id against its references; ×100.

    Returns ``{"protocol": …, "all": {"BLEU-1": …, …, "CIDEr-D": …, "S*m": …, "n": …},
    "changed": {…} (only when `changed` is given), "spice": "unavailable: <why>"}``. METEOR and
    S*m are None with ``meteor=False``; ``meteor`` may also be a running :class:`MeteorProcess`,
    reused (and left open) to score several sets with one Java start-up. When SPICE runs, "SPICE"
    is added to each score set and "spice" says "computed".
    """
    if protocol not in PROTOCOLS:
        raise RsccError(f"unknown reference protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    _check_inputs(predictions, references, changed)
    gts = {k: [prepare(r, protocol) for r in refs] for k, refs in references.items()}
    res = {k: [prepare(predictions[k], protocol)] for k in references}
    subsets = {"all": list(gts)}
    if changed is not None:
        subsets["changed"] = [k for k in gts if changed[k]]

    result: dict = {"protocol": protocol}
    owned = meteor is True
    scorer = MeteorProcess() if owned else (meteor or None)
    try:
        for name, keys in subsets.items():
            result[name] = _corpus_scores({k: gts[k] for k in keys}, {k: res[k] for k in keys}, scorer)
    finally:
        if owned:
            scorer.close()

    reason = spice_unavailable_reason() if spice else "not requested (spice=False)"
    if reason is None:
        try:
            for name, keys in subsets.items():
                result[name]["SPICE"] = (100 * _spice_score({k: gts[k] for k in keys}, {k: res[k] for k in keys})
                                         if keys else None)
            result["spice"] = "computed"
        except (subprocess.CalledProcessError, OSError) as exc:
            for name in subsets:
                result[name].pop("SPICE", None)
            reason = f"the SPICE Java process failed ({exc})"
    if reason is not None:
        result["spice"] = f"unavailable: {reason}"
    return result


def most_frequent_caption(captions: Iterable[str]) -> str:
    """The most frequent caption in `tokens` form; ties go to the alphabetically first one."""
    counts = Counter(normalise_tokens(c) for c in captions)
    if not counts:
        raise RsccError("no caption to choose the fixed sentence from")
    return min(counts, key=lambda c: (-counts[c], c))


def floor_predictions(references: Mapping[Hashable, list[str]], changed: Mapping[Hashable, bool],
                      fixed_sentence: str | None = None, train_changed_first_captions: Iterable[str] | None = None,
                      no_change_sentence: str = NO_CHANGE_SENTENCE) -> dict[str, dict[Hashable, str]]:
    """The two floors of METHOD §6.5: how much of a score change detection alone earns.

    - ``"always_no_change"``: every pair gets `no_change_sentence`.
    - ``"change_flag_and_fixed_sentence"``: a perfect change flag; changed pairs get one fixed
      sentence, no-change pairs `no_change_sentence`. The fixed sentence is the most frequent
      first caption among changed training pairs when `train_changed_first_captions` is given,
      else `fixed_sentence`.

    Score both with :func:`score_captions`.
    """
    if train_changed_first_captions is not None:
        fixed_sentence = most_frequent_caption(train_changed_first_captions)
    if fixed_sentence is None:
        raise RsccError("floor_predictions needs `fixed_sentence` or `train_changed_first_captions`")
    lacking = [k for k in references if k not in changed]
    if lacking:
        raise RsccError(f"the change flags lack {len(lacking)} ids (e.g. {lacking[:3]})")
    return {
        "always_no_change": {k: no_change_sentence for k in references},
        "change_flag_and_fixed_sentence": {k: fixed_sentence if changed[k] else no_change_sentence
                                           for k in references},
    }


def format_table(result: dict) -> str:
    """A compact text table of a :func:`score_captions` result."""
    subsets = [name for name in ("all", "changed") if name in result]
    extra = ["SPICE"] if any("SPICE" in result[s] for s in subsets) else []
    columns = list(METRICS) + extra
    header = f"{'pairs':<8}{'n':>6}  " + " ".join(f"{c:>7}" for c in columns)
    lines = [f"protocol: {result['protocol']}", header]
    for name in subsets:
        row = result[name]
        cells = " ".join(f"{'—':>7}" if row.get(c) is None else f"{row[c]:7.2f}" for c in columns)
        lines.append(f"{name:<8}{row['n']:>6}  {cells}")
    if not extra:
        lines.append(f"SPICE: {result['spice']}")
    return "\n".join(lines)


__all__ = ["PROTOCOLS", "METRICS", "NO_CHANGE_CAPTIONS", "NO_CHANGE_SENTENCE", "normalise_tokens", "prepare",
           "is_no_change", "score_captions", "floor_predictions", "most_frequent_caption", "format_table",
           "MeteorProcess", "spice_unavailable_reason"]
