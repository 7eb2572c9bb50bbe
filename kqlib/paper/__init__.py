"""One module per paper section, returning tidy frames: ParaRel, localization, consistency, query-KN mapping,
knowledge synapses, editing (one edit loop), path points, statistics. No plots, no book I/O."""
