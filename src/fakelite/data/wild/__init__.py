"""WildSynth: realistic media at native resolution — real sources, generator families, the shared
post-processing chain and the build (``fakelite data wild``)."""
