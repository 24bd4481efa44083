"""Profiles: data sources and architectures (each profile's own code in a subfolder), and the plug-in registry."""
