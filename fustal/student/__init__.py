"""Stage 3: the TriDet student (model, label assignment, losses, decoding) and its module. The
names that configs instantiate (``_target_``) are importable from here."""

from fustal.student.model import TriDet
from fustal.student.module import StudentModule

__all__ = ["StudentModule", "TriDet"]
