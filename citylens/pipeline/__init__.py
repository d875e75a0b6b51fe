"""The study as a Ray job: thin stages over the pure core, orchestrated by :mod:`.run`."""
