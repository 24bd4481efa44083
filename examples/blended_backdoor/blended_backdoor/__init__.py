"""The blended-image backdoor as an unlearn-audit plug-in (see attack.py and recipes/)."""
