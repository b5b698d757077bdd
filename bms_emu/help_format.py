"""`--help` with each option's default, where there is one worth saying: argparse's own
formatter also says `(default: None)` for an option with no default, `(default: [])` for a
repeatable one, and `(default: True)`
for a flag that turns something off."""

from __future__ import annotations

import argparse


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, []) or action.nargs == 0 or "default" in help_text:
            return help_text
        return super()._get_help_string(action)
