"""What the runners use of the dashboards, and all of it: ``gatelab sweep --until-decided``
reads the claims, the sweep's runs as one frame, the sequential design and which claims it
leaves open; the sweep's planner reads the recorded runs through the same frame. A module of
``gatelab.runners`` imports this module and no other of the dashboards (``tests/test_layout.py``
holds it to that), so the rest of the dashboards can change without the runners noticing.
"""

from __future__ import annotations

from gatelab.dashboards.stats.sequential import PROCEDURE, Design, design_for
from gatelab.dashboards.store.frame import load_frame
from gatelab.dashboards.verdicts.claims import Claim, load_claims
from gatelab.dashboards.verdicts.procedure import open_claims, testable

__all__ = ["PROCEDURE", "Claim", "Design", "design_for", "load_claims", "load_frame",
           "open_claims", "testable"]
