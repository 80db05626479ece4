"""What a transfer strategy is: one class per strategy, DANN's pieces, optimizers, augmentation.

The strategies register themselves on import (``strategies.register``): importing the
package imports every module that defines one, so ``strategy_class`` finds them all.
"""

from autotransfer.transfer import adaptation, probe, strategies

__all__ = ["adaptation", "probe", "strategies"]
