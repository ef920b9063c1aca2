"""SelectionAudit: selects with one evaluator, records others, never changes the search."""

import json

import pytest
import torch
from torch import nn

from explorler_optim import Explorer
from explorler_optim.audit import SelectionAudit


class Scorer:
    """A deterministic evaluate_many: minus the distance of each row to ``target``."""

    def __init__(self, target):
        self.target = target
        self.last_env_steps = 0

    def evaluate_many(self, params, candidates):
        self.last_env_steps = 7 * candidates[0].shape[0]
        total = 0
        for c in candidates:
            total = total + (c.double() - self.target).square().flatten(1).sum(1)
        return -total


def trained_explorer(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    explorer = Explorer(model.parameters(), seed=1)
    for k in range(6):
        with torch.no_grad():
            model.weight.add_(0.05 * (k + 1))
        explorer.record()
    return model, explorer


def test_the_audit_passes_the_selector_scores_through_and_records_the_others(tmp_path):
    model, explorer = trained_explorer()
    twin_model, twin = trained_explorer()
    audit = SelectionAudit(Scorer(0.3), {"truth": Scorer(-0.2)})
    result = explorer.explore(audit)
    plain = twin.explore(Scorer(0.3))
    assert torch.equal(result.scores, plain.scores) and result.best_index == plain.best_index
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin_model.parameters()))
    record = audit.add_result(result, global_step=123)
    rows = result.num_candidates + 1  # the incumbent is row 0
    assert len(record["selection"]) == len(record["truth"]) == rows
    assert record["selection"][1:] == pytest.approx(result.scores.tolist())
    assert record["selection_env_steps"] == 7 * rows and record["global_step"] == 123
    assert record["selected_row"] == (result.best_index + 1 if result.committed else None)
    path = tmp_path / "audit.jsonl"
    audit.write_jsonl(path)
    assert json.loads(path.read_text().splitlines()[0])["truth"] == record["truth"]


def test_bad_audits_are_clear_errors():
    with pytest.raises(TypeError, match="evaluate_many"):
        SelectionAudit(Scorer(0.0), {"truth": lambda: 1.0})
    with pytest.raises(ValueError, match="another name"):
        SelectionAudit(Scorer(0.0), {"selection": Scorer(0.0)})
    _, explorer = trained_explorer()
    audit = SelectionAudit(Scorer(0.0), {})
    with pytest.raises(RuntimeError, match="pass this audit to explore"):
        audit.add_result(explorer.explore(Scorer(0.0)))
