"""Tumour response between time points (after inference and evaluation in the pipeline): registration
of a follow-up scan onto its baseline, lesion matching, RECIST 1.1 and volumetric categories, and
their report (``rrcunet compare``). See docs/response.md.
"""

from rrcunet.response.compare import RegistrationError, compare_scans
from rrcunet.response.recist import ResponseRules, recist_category, select_targets, volumetric_category

__all__ = ["RegistrationError", "ResponseRules", "compare_scans", "recist_category", "select_targets",
           "volumetric_category"]
