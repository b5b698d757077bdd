"""Cell models the estimator does not share (foreign plants), and the profiles a user would
make of them in the lab: the fair test of estimation on cells it was not built on."""

from hil.foreign_cells.lab import LabCurves, slow_cycle, user_profile
from hil.foreign_cells.model import ForeignCells, ForeignCellSpec
from hil.foreign_cells.plants import DIFFUSION, FOREIGN_PLANTS, THREE_RC

__all__ = ["DIFFUSION", "FOREIGN_PLANTS", "THREE_RC", "ForeignCellSpec", "ForeignCells",
           "LabCurves", "slow_cycle", "user_profile"]
