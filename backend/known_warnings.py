"""Library warnings known to be harmless here, silenced one message at a time (never by level or logger).

transformers 5 names each `<Model>ImageProcessor` after its torchvision backend. Without torchvision
(this project does not install it) it falls back to the PIL class and says so once per class:
"`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for
backward compatibility. Install torchvision to use the default backend, …". diffusers touches
CLIPImageProcessor and SiglipImageProcessor whenever its pipeline modules load (for safety checkers and
image encoders LoRA Dash never uses), and the captioners run on the PIL processors, which do the same
preprocessing. So in the demo builder, the CLI and every job log the message only alarms. Every other
transformers message still shows.

Processes call `silence_known_warnings()` at their entry (backend/__main__.py, the worker's main);
importing this module changes nothing.
"""

from __future__ import annotations

import logging
import re

# The logger transformers' lazy-import fallback writes to, and the one message silenced there.
TRANSFORMERS_IMPORTS = "transformers.utils.import_utils"
TORCHVISION_FALLBACK = re.compile(
    r"^`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+ImageProcessorPil`")


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not TORCHVISION_FALLBACK.match(record.getMessage())


def silence_known_warnings() -> None:
    logger = logging.getLogger(TRANSFORMERS_IMPORTS)
    if not any(isinstance(f, _DropTorchvisionFallback) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())
