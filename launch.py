#!/usr/bin/env python
"""Start the LoRA Dash web dashboard: `python launch.py --help` lists the flags."""

import os
import sys

from webui.serve import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
