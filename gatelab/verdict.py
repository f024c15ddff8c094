"""The verdict on one claim of the paper, in one place for every reader: its text (what a table,
a sentence and the terminal show), its key (the summary run's metric ``claims.<key>``) and its
CSS class (how the report's HTML colours it). The dashboards decide verdicts
(``gatelab.dashboards.verdicts``); the sweep's ``--until-decided`` reads them; the report and
the summary run write them. This module imports nothing of gatelab.
"""

from __future__ import annotations

import enum


class Verdict(enum.StrEnum):
    """A claim's verdict; the value is its text (a column of the verdicts frame)."""

    REPRODUCED = "reproduced"
    """The paper's direction, significant at the corrected level."""
    NOT_REPRODUCED = "not reproduced"
    """Significant, the other way."""
    CONFOUNDED = "reproduced, but a control gains as much"
    """The gain is established, but a control lacking the paper's mechanism is not beaten."""
    INCONCLUSIVE = "inconclusive at this scale"
    """Neither direction established (or nothing to test: a sink claim without a sink)."""
    UNDECIDED = "undecided within the cap"
    """``--until-decided`` reached its last look without crossing the boundary."""

    @property
    def key(self) -> str:
        """A name without spaces: ``not_reproduced``; the summary run logs ``claims.<key>``."""
        return self.name.lower()

    @property
    def css_class(self) -> str:
        """The report's CSS class of the verdict: ``v-not-reproduced``."""
        return "v-" + self.key.replace("_", "-")

    @property
    def open(self) -> bool:
        """Not decided either way: more seeds could still settle it."""
        return self in (Verdict.INCONCLUSIVE, Verdict.UNDECIDED)
