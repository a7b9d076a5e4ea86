"""Conformance check against a fixture of the authors' outputs (``rscc verify-reference``).

A fixture directory holds the authors' constructor arguments (``config.json``), their head's
weights under their key names (``head_state_dict.safetensors``), inputs (backbone features,
captions) and the outputs their code produced (``expected.safetensors``, ``expected.json``).
We load the weights through the converter, run our model in evaluation mode on the same
features and compare, element-wise as ``torch.allclose``: |got − expected| ≤ atol + 1e-5·|expected|.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rscc.errors import CheckpointError, RsccError
from rscc.losses import false_negative_mask, info_nce

RTOL = 1e-5
# the fixture README's tolerances: atol 1e-4 for the logits and the visual tokens (the reference's
# own float32 rounding of vis_toks is 2.1e-5 from the exact values), 1e-5 for the rest
ATOL = {"vis_emb": 1e-5, "text_emb": 1e-5, "vis_toks": 1e-4, "logits": 1e-4, "cross_attention": 1e-5,
        "cap_loss": 1e-5}
FIXTURE_FILES = ("config.json", "head_state_dict.safetensors", "inputs.safetensors", "expected.safetensors",
                 "expected.json")


@dataclass
class TensorCheck:
    name: str
    max_abs_error: float
    atol: float
    outside: int  # elements beyond atol + rtol·|expected|
    size: int
    ok: bool
    worst_excess: float  # max of |got − expected| − (atol + rtol·|expected|); ≤ 0 when ok


@dataclass
class VerificationReport:
    fixture: str
    tensors: list[TensorCheck]
    greedy: list[bool]  # one per pair: generated ids == expected ids
    contrastive: list[dict] | None  # rows of verify_contrastive, when available
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (all(t.ok for t in self.tensors) and all(self.greedy)
                and all(row.get("ok", False) for row in self.contrastive or []))

    def to_dict(self) -> dict:
        return {"fixture": self.fixture, "passed": self.passed, "tensors": [asdict(t) for t in self.tensors],
                "greedy": self.greedy, "contrastive": self.contrastive, "notes": self.notes}


def check_tensor(name: str, got: torch.Tensor, expected: torch.Tensor, atol: float) -> TensorCheck:
    got = got.detach().float().reshape(expected.shape)
    expected = expected.float()
    error = (got - expected).abs()
    excess = error - (atol + RTOL * expected.abs())
    outside = int((excess > 0).sum())
    return TensorCheck(name, float(error.max()) if error.numel() else 0.0, atol, outside, error.numel(), outside == 0,
                       float(excess.max()) if error.numel() else 0.0)


def verify_reference(fixture_dir: str | Path, atol: dict[str, float] | None = None) -> VerificationReport:
    """Run our model on a fixture and compare every output; ``atol`` overrides per output name."""
    fixture_dir = Path(fixture_dir)
    missing = [name for name in FIXTURE_FILES if not (fixture_dir / name).is_file()]
    if missing:
        raise CheckpointError(f"{fixture_dir}: not a conformance fixture, missing {', '.join(missing)}")
    tolerances = dict(ATOL, **(atol or {}))
    # One thread: fixtures are tiny (threads only add overhead) and the float32 reduction order,
    # hence the last bits of each output, no longer depends on the machine's core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _verify(fixture_dir, tolerances)
    finally:
        torch.set_num_threads(threads)


def _verify(fixture_dir: Path, tolerances: dict[str, float]) -> VerificationReport:
    from safetensors.torch import load_file

    from rscc.generate import greedy_reference
    from rscc.model.convert import load_authors_head

    model = load_authors_head(fixture_dir)
    inputs = load_file(str(fixture_dir / "inputs.safetensors"))
    expected = load_file(str(fixture_dir / "expected.safetensors"))
    cases = json.loads((fixture_dir / "expected.json").read_text())

    with torch.no_grad():
        out = model(inputs["input_ids"], inputs["pad_mask"].bool(), inputs["labels"],
                    feat_a=inputs["feat_before"], feat_b=inputs["feat_after"])
        greedy = greedy_reference(model, feat_a=inputs["feat_before"], feat_b=inputs["feat_after"])
    tensors = [check_tensor(name, getattr(out, name), expected[name], tolerances[name])
               for name in tolerances if name in expected]
    same = [list(got) == list(want) for got, want in zip(greedy, cases.get("greedy_token_ids", []))]
    if len(greedy) != len(cases.get("greedy_token_ids", [])):
        same.append(False)

    notes, contrastive = [], None
    if "contrastive" not in cases:
        notes.append("contrastive loss not checked: expected.json has no 'contrastive' cases")
    else:
        contrastive = verify_contrastive(fixture_dir)
    return VerificationReport(str(fixture_dir), tensors, same, contrastive, notes)


def format_report(report: VerificationReport) -> str:
    lines = [f"fixture {report.fixture}",
             f"{'output':<16} {'max |err|':>10} {'atol':>8} {'outside':>14}  result"]
    for t in report.tensors:
        verdict = "ok" if t.ok else f"FAIL (worst element {t.worst_excess:.1e} beyond its bound)"
        lines.append(f"{t.name:<16} {t.max_abs_error:>10.3e} {t.atol:>8.0e} {t.outside:>6}/{t.size:<7}  {verdict}")
    matched = sum(report.greedy)
    lines.append(f"{'greedy tokens':<16} {matched}/{len(report.greedy)} pairs identical"
                 f"{'' if all(report.greedy) else '  FAIL'}")
    if report.contrastive is not None:
        worst = max((row.get("abs_error", 0.0) for row in report.contrastive), default=0.0)
        good = sum(bool(row.get("ok")) for row in report.contrastive)
        lines.append(f"{'contrastive':<16} {worst:>10.3e} {'1e-05':>8} {good:>6}/{len(report.contrastive):<7}  "
                     f"{'ok' if good == len(report.contrastive) else 'FAIL'} (cases matching)")
    lines.extend(f"note: {n}" for n in report.notes)
    lines.append("PASS" if report.passed else "FAIL")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the contrastive loss
def verify_contrastive(fixture_dir: str | Path) -> list[dict]:
    """Recompute every ``contrastive`` case of the authors' conformance fixture.

    Reads ``expected.json`` (cases), ``expected.safetensors`` (``vis_emb``, ``text_emb``) and
    ``inputs.safetensors`` (``flags`` = labels, ``sentence_embeddings``) from ``fixture_dir``.
    The authors' code always applies FNE, so each case runs with ``fn_mode`` fne or fna (its
    ``fna`` flag) and tolerance 0. Returns one dict per case with temperature, theta, fna,
    expected/got loss, abs_error, expected/got positive pairs and ``ok`` (|error| <= 1e-5 +
    1e-5 |expected| and equal pair counts)."""
    from safetensors.torch import load_file

    fixture_dir = Path(fixture_dir)
    needed = [fixture_dir / name for name in ("expected.json", "expected.safetensors", "inputs.safetensors")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise RsccError(f"conformance fixture incomplete: missing {', '.join(missing)}")
    cases = json.loads(needed[0].read_text()).get("contrastive")
    if not cases:
        raise RsccError(f"{needed[0]}: no 'contrastive' list of cases")
    expected, inputs = load_file(str(needed[1])), load_file(str(needed[2]))
    vis_emb, text_emb = expected["vis_emb"], expected["text_emb"]
    labels, sentence_embeddings = inputs["flags"], inputs["sentence_embeddings"]
    results = []
    for case in cases:
        fn_mode = "fna" if case["fna"] else "fne"
        mask = false_negative_mask(sentence_embeddings, theta=case["threshold"], tolerance=0.0)
        with torch.no_grad():
            loss, pairs = info_nce(vis_emb, text_emb, labels, mask, case["temperature"], fn_mode)
        got, want = float(loss), float(case["loss"])
        error = abs(got - want)
        results.append(
            {
                "temperature": case["temperature"],
                "theta": case["threshold"],
                "fna": bool(case["fna"]),
                "expected_loss": want,
                "got_loss": got,
                "abs_error": error,
                "expected_pairs": int(case["num_positive_pairs"]),
                "got_pairs": pairs,
                "ok": error <= 1e-5 + 1e-5 * abs(want) and pairs == int(case["num_positive_pairs"]),
            }
        )
    return results
