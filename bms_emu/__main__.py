"""`python -m bms_emu`: the same as the `bms-emu` console script."""

import sys

from bms_emu.main import main

sys.exit(main())
