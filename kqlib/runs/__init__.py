"""Running attributions: the content-keyed cache, many queries with progress (local or on Ray), query objects.

Imports from core and attribution only."""
