"""Where a wrong tiny-world solution first goes wrong, as a fraction of its steps."""
from __future__ import annotations

from .edit import minimal_fix

STEP_FAMILIES = ("arith", "arith_ood")   # the families whose solutions are chains of steps


def first_error_positions(errors: list[dict]) -> list[float]:
    """For tiny-world answers: index of the first wrong step divided by the number of steps.

    Records of other families, and answers the Oracle rewrites whole (no step to point at),
    are left out."""
    positions = []
    for r in errors:
        if r.get("family") not in STEP_FAMILIES:
            continue
        fix = minimal_fix(r, r["response"])
        if fix.mode == "edit" and fix.wrong_steps_before and fix.steps_total:
            positions.append(min(fix.wrong_steps_before) / fix.steps_total)
    return positions
