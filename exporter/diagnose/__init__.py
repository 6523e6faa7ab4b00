"""The localizer: turns recent probe outcomes and node facts into verdicts naming the likely cause.

:class:`Localizer` is a scheduler result sink with a bounded window per target; :func:`rules.evaluate` is the
rule table (documented in docs/diagnosis.md); :class:`DiagnosisMetrics` exports ``netpath_diagnosis``;
:func:`render_report` is the human report of ``netpath-exporter diagnose``.
"""

from .causes import CAUSES, Cause
from .localizer import Diagnosis, Localizer
from .metrics import DiagnosisMetrics
from .picture import FactsView, Picture, Verdict
from .report import render_report
from .rules import evaluate

__all__ = [
    "CAUSES",
    "Cause",
    "Diagnosis",
    "DiagnosisMetrics",
    "FactsView",
    "Localizer",
    "Picture",
    "Verdict",
    "evaluate",
    "render_report",
]
