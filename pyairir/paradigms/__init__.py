"""Training paradigms that wrap any pyairir backbone: Privilege Learning and SIPL, LUPI, CPL.

    sipl = pyairir.paradigms.SIPL(pyairir.create_model("promptir"))
    loss = sipl.training_loss(degraded, clean)["loss"]
    images = sipl.restore(degraded, iterations=1)
"""

from pyairir.paradigms.cpl import CPL, load_vgg
from pyairir.paradigms.lupi import LUPI
from pyairir.paradigms.privilege import SIPL, AlphaSchedule, PrivilegeLearning
from pyairir.paradigms.statistics import PromptSelectionStatistics

__all__ = ["CPL", "LUPI", "SIPL", "AlphaSchedule", "PrivilegeLearning", "PromptSelectionStatistics", "load_vgg"]
