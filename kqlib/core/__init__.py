"""Model access: the per-architecture table, the LM adapter and loading, hooks on named sites, attention access, threads.

Imports nothing from the layers above (attribution, runs, paper, book)."""
