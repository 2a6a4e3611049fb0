"""Response assessment: RECIST 1.1 (Eisenhauer 2009), iRECIST (Seymour 2017), best overall response,
and the dynamic-iRECIST reference labels every model is judged against.

Public API: :func:`assess` (a lesion-measurement DataFrame → :class:`Assessment`), :func:`write_assessment`,
:func:`read_assessment`, :func:`validate_measurements`; reference labels in
:mod:`evaluation.response.reference`.
"""

from evaluation.response.engine import (
    SUBJECT_COLUMNS,
    VISIT_COLUMNS,
    Assessment,
    assess,
    read_assessment,
    write_assessment,
)
from evaluation.response.table import validate_measurements

__all__ = [
    "SUBJECT_COLUMNS",
    "VISIT_COLUMNS",
    "Assessment",
    "assess",
    "read_assessment",
    "validate_measurements",
    "write_assessment",
]
